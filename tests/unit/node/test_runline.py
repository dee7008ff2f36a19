"""The ``bash:`` line: split like a shell, read like ``docker run``, refused when unsafe."""

from __future__ import annotations

import gc
import shlex
import shutil
import subprocess
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from puller.errors import RunLineError
from puller.node.runflags import FLAGS, SHORT
from puller.node.runline import RunLine, parse_run_line, split_words

SHA = "sha256:" + "ab" * 32

# id, line, repo, name, options, image, args
ACCEPTED = [
    pytest.param(
        "docker run -p=66:55 -restart=always cassandra /bin/sh",
        "cassandra", "cassa",
        ("-p=66:55", "--restart=always"), "cassandra", ("/bin/sh",),
        id="seed",
    ),
    pytest.param(
        "docker container run -d redis:7 redis-server --appendonly yes",
        "redis", "cache",
        ("-d",), "redis:7", ("redis-server", "--appendonly", "yes"),
        id="container-run",
    ),
    pytest.param(
        "/usr/bin/docker run nginx", "nginx", "web", (), "nginx", (), id="docker-path",
    ),
    pytest.param(
        "docker run -p 80:80 -v /a:/b:ro -e X=1 --env Y=2 --restart unless-stopped nginx",
        "nginx", "web",
        ("-p", "80:80", "-v", "/a:/b:ro", "-e", "X=1", "--env", "Y=2", "--restart", "unless-stopped"),
        "nginx", (),
        id="nginx",
    ),
    pytest.param("docker run -it nginx sh", "nginx", "web", ("-it",), "nginx", ("sh",), id="it"),
    pytest.param("docker run -dit nginx", "nginx", "web", ("-dit",), "nginx", (), id="dit"),
    pytest.param(
        "docker run -itp 80:80 nginx", "nginx", "web", ("-itp", "80:80"), "nginx", (), id="itp-separate",
    ),
    pytest.param("docker run -itp80:80 nginx", "nginx", "web", ("-itp80:80",), "nginx", (), id="itp-inline"),
    pytest.param("docker run -p80:80 nginx", "nginx", "web", ("-p80:80",), "nginx", (), id="short-inline"),
    pytest.param("docker run -i=false -t nginx", "nginx", "web", ("-i=false", "-t"), "nginx", (), id="short-bool-equals"),
    pytest.param(
        "docker run --name web -p 80:80 nginx", "nginx", "web", ("-p", "80:80"), "nginx", (), id="name-equal-removed",
    ),
    pytest.param("docker run --name=web nginx", "nginx", "web", (), "nginx", (), id="name-equals-removed"),
    pytest.param("docker run -name web nginx", "nginx", "web", (), "nginx", (), id="legacy-name-removed"),
    pytest.param(
        "docker run -name=web -d -link db:db -volumes-from data nginx", "nginx", "web",
        ("-d", "--link", "db:db", "--volumes-from", "data"), "nginx", (),
        id="legacy-rewrites",
    ),
    pytest.param(
        "docker run -rm=false nginx", "nginx", "web", ("--rm=false",), "nginx", (), id="rm-false",
    ),
    pytest.param(
        "docker run -ip 10.0.0.5 -pid=host nginx", "nginx", "web",
        ("--ip", "10.0.0.5", "--pid=host"), "nginx", (),
        id="legacy-wins-over-chain",
    ),
    pytest.param(
        'docker run busybox sh -c "echo a; echo b"', "busybox", "b",
        (), "busybox", ("sh", "-c", "echo a; echo b"),
        id="double-quoted-one-arg",
    ),
    pytest.param(
        "docker run busybox echo '$HOME' '`id`' 'a;b|c>d'", "busybox", "b",
        (), "busybox", ("echo", "$HOME", "`id`", "a;b|c>d"),
        id="single-quotes-literal",
    ),
    pytest.param(
        r'docker run busybox echo \$HOME "\$X" "\`id\`" \; a\ b "q\"r" "s\\t" "u\v"', "busybox", "b",
        (), "busybox", ("echo", "$HOME", "$X", "`id`", ";", "a b", 'q"r', "s\\t", "u\\v"),
        id="backslash-escapes",
    ),
    pytest.param(
        "docker run busybox echo $ a$ \"$\" x$/ '' \"\"", "busybox", "b",
        (), "busybox", ("echo", "$", "a$", "$", "x$/", "", ""),
        id="literal-dollar-and-empty",
    ),
    pytest.param(
        "docker run busybox echo a#b x~ /a~b 'c#' \"~\"", "busybox", "b",
        (), "busybox", ("echo", "a#b", "x~", "/a~b", "c#", "~"),
        id="hash-and-tilde-mid-word",
    ),
    pytest.param(
        "docker run \\\n  -p 80:80 \\\n  -e A=b\\\nc \\\n  nginx\n", "nginx", "web",
        ("-p", "80:80", "-e", "A=bc"), "nginx", (),
        id="line-continuations",
    ),
    pytest.param(
        "docker run busybox echo 'a\\\nb' \"c\\\nd\"", "busybox", "b",
        (), "busybox", ("echo", "a\\\nb", "cd"),
        id="continuation-in-quotes",
    ),
    pytest.param(
        "docker run --health-cmd 'curl -f http://localhost/ || exit 1' nginx", "nginx", "web",
        ("--health-cmd", "curl -f http://localhost/ || exit 1"), "nginx", (),
        id="health-cmd-quoted",
    ),
    pytest.param(
        "docker run --name --rm nginx", "nginx", "--rm", (), "nginx", (), id="value-flag-takes-dash-word",
    ),
    pytest.param(
        "docker run -e -d nginx", "nginx", "web", ("-e", "-d"), "nginx", (), id="short-value-takes-dash-word",
    ),
    pytest.param(
        "docker run -d -- nginx --rm -a", "nginx", "web", ("-d",), "nginx", ("--rm", "-a"), id="double-dash",
    ),
    pytest.param(
        "docker run nginx -d --rm", "nginx", "web", (), "nginx", ("-d", "--rm"), id="args-after-image-untouched",
    ),
    pytest.param(
        f"docker run docker.io/library/nginx:1.25@{SHA}", "nginx", "web",
        (), f"docker.io/library/nginx:1.25@{SHA}", (),
        id="image-tag-digest",
    ),
    pytest.param(
        "docker run --net=host --net-alias a --dns-opt x --kernel-memory 4m nginx", "nginx", "web",
        ("--net=host", "--net-alias", "a", "--dns-opt", "x", "--kernel-memory", "4m"), "nginx", (),
        id="hidden-aliases",
    ),
    pytest.param(
        "docker run -l app=web --label=tier=front nginx", "nginx", "web",
        ("-l", "app=web", "--label=tier=front"), "nginx", (),
        id="labels",
    ),
    pytest.param(
        "docker run 127.0.0.1:5000/web:v2", "127.0.0.1:5000/web", "web", (), "127.0.0.1:5000/web:v2", (),
        id="private-registry",
    ),
]


@pytest.mark.parametrize("line, repo, name, options, image, args", ACCEPTED)
def test_accepted(line, repo, name, options, image, args):
    run = parse_run_line(line, repo=repo, name=name)
    assert run == RunLine(options, image, args)


# id, line, repo, name, the token the message must name, a fragment of the reason
REFUSED = [
    pytest.param("docker run nginx; ls", "nginx", "web", ";", "sh -c", id="semicolon"),
    pytest.param("docker run nginx & ", "nginx", "web", "&", "background", id="ampersand"),
    pytest.param("docker run nginx && echo ok", "nginx", "web", "&&", "succeeds", id="and"),
    pytest.param("docker run nginx || true", "nginx", "web", "||", "fails", id="or"),
    pytest.param("docker run nginx | tee x", "nginx", "web", "|", "pipes", id="pipe"),
    pytest.param("docker run nginx < in", "nginx", "web", "<", "redirects", id="input"),
    pytest.param("docker run nginx > out", "nginx", "web", ">", "redirects", id="output"),
    pytest.param("docker run nginx >> out", "nginx", "web", ">>", "redirects", id="append"),
    pytest.param("docker run nginx 2>&1", "nginx", "web", ">&", "redirects", id="dup"),
    pytest.param("(docker run nginx)", "nginx", "web", "(", "subshell", id="subshell"),
    pytest.param("docker run nginx\nls", "nginx", "web", "\\n", "line break", id="newline"),
    pytest.param("docker run -e A=$HOME nginx", "nginx", "web", "$HOME", "expanded", id="var"),
    pytest.param("docker run -e A=${HOME:-x} nginx", "nginx", "web", "${HOME:-x}", "expanded", id="braces"),
    pytest.param("docker run nginx $(id -u)", "nginx", "web", "$(id -u)", "expanded", id="command-subst"),
    pytest.param("docker run nginx $((1+2))", "nginx", "web", "$((1+2))", "expanded", id="arithmetic"),
    pytest.param("docker run nginx $1", "nginx", "web", "$1", "expanded", id="positional"),
    pytest.param("docker run nginx $'a'", "nginx", "web", "$'", "expanded", id="ansi-c-quote"),
    pytest.param("docker run nginx `id`", "nginx", "web", "`id`", "expanded", id="backticks"),
    pytest.param('docker run nginx "$HOME"', "nginx", "web", "$HOME", "expanded", id="var-in-double-quotes"),
    pytest.param('docker run nginx "a `id` b"', "nginx", "web", "`id`", "expanded", id="backticks-in-double-quotes"),
    pytest.param('docker run nginx "\\\\$X"', "nginx", "web", "$X", "expanded", id="escaped-backslash-then-var"),
    pytest.param("docker run -v ~/data:/data nginx", "nginx", "web", "~", "absolute path", id="tilde"),
    pytest.param("docker run -v ~me/data:/data nginx", "nginx", "web", "~me", "absolute path", id="tilde-user"),
    pytest.param("docker run -e HOME=~ nginx", "nginx", "web", "~", "absolute path", id="tilde-assignment"),
    pytest.param("docker run -e PATH=/bin:~/bin nginx", "nginx", "web", "~", "absolute path", id="tilde-assignment-colon"),
    pytest.param("docker run nginx # the web", "nginx", "web", "#", "comment", id="comment"),
    pytest.param("docker run nginx 'abc", "nginx", "web", "'", "never closed", id="open-single-quote"),
    pytest.param('docker run nginx "abc', "nginx", "web", '"', "never closed", id="open-double-quote"),
    pytest.param("docker run nginx abc\\", "nginx", "web", "\\", "backslash", id="trailing-backslash"),
    pytest.param("docker run nginx a\0b", "nginx", "web", "\\0", "NUL", id="nul"),
    pytest.param("docker -H tcp://x run nginx", "nginx", "web", "-H", "global options", id="global-option"),
    pytest.param("docker --debug run nginx", "nginx", "web", "--debug", "global options", id="global-flag"),
    pytest.param("podman run nginx", "nginx", "web", "podman", "docker run", id="not-docker"),
    pytest.param("sudo docker run nginx", "nginx", "web", "sudo", "docker run", id="sudo"),
    pytest.param("A=1 docker run nginx", "nginx", "web", "A=1", "docker run", id="env-prefix"),
    pytest.param("docker create nginx", "nginx", "web", "docker create", "docker run", id="create"),
    pytest.param("docker container create nginx", "nginx", "web", "docker container create", "docker run", id="container-create"),
    pytest.param("docker", "nginx", "web", "docker", "docker run", id="docker-alone"),
    pytest.param("", "nginx", "web", None, "empty", id="empty"),
    pytest.param("docker run --rm nginx", "nginx", "web", "--rm", "remove --rm", id="rm"),
    pytest.param("docker run --rm=true nginx", "nginx", "web", "--rm=true", "remove --rm", id="rm-true"),
    pytest.param("docker run -rm nginx", "nginx", "web", "-rm", "remove --rm", id="legacy-rm"),
    pytest.param("docker run -a stdout nginx", "nginx", "web", "-a stdout", "--attach", id="attach-short"),
    pytest.param("docker run --attach=stderr nginx", "nginx", "web", "--attach=stderr", "--attach", id="attach-long"),
    pytest.param("docker run -ia stdin nginx", "nginx", "web", "-ia stdin", "--attach", id="attach-in-chain"),
    pytest.param("docker run --detach=false nginx", "nginx", "web", "--detach=false", "detached", id="detach-false"),
    pytest.param("docker run --help nginx", "nginx", "web", "--help", "help", id="help"),
    pytest.param("docker run -l io.puller.node=x nginx", "nginx", "web", "-l io.puller.node=x", "belong to puller", id="puller-label"),
    pytest.param("docker run --name other nginx", "nginx", "web", "--name other", "'web'", id="name-different"),
    pytest.param("docker run --name=other nginx", "nginx", "web", "--name=other", "'web'", id="name-equals-different"),
    pytest.param("docker run -name=other nginx", "nginx", "web", "-name=other", "'web'", id="legacy-name-different"),
    pytest.param("docker run --frobnicate nginx", "nginx", "web", "--frobnicate", "unknown flag", id="unknown-long"),
    pytest.param("docker run -Z nginx", "nginx", "web", "-Z", "unknown flag", id="unknown-short"),
    pytest.param("docker run -itZ nginx", "nginx", "web", "-itZ", "unknown flag `-Z`", id="unknown-in-chain"),
    pytest.param("docker run ---rm nginx", "nginx", "web", "---rm", "bad flag syntax", id="three-dashes"),
    pytest.param("docker run --rm=maybe nginx", "nginx", "web", "--rm=maybe", "true or false", id="bad-bool"),
    pytest.param("docker run --restart", "nginx", "web", "--restart", "needs a value", id="value-missing-long"),
    pytest.param("docker run -itp", "nginx", "web", "-itp", "needs a value", id="value-missing-chain"),
    pytest.param("docker run -d", "nginx", "web", None, "no image", id="no-image"),
    pytest.param("docker run", "nginx", "web", None, "no image", id="nothing"),
    pytest.param("docker run redis", "nginx", "web", "redis", "not the service's repo", id="other-image"),
    pytest.param("docker run user/nginx", "nginx", "web", "user/nginx", "not the service's repo", id="other-namespace"),
    pytest.param("docker run NGINX", "nginx", "web", "NGINX", "lowercase", id="invalid-image"),
    pytest.param("docker run - x", "nginx", "web", "-", "not a valid image", id="dash-image"),
    pytest.param("docker run nginx", "Bad Repo", "web", "Bad Repo", "is not a valid image reference", id="invalid-repo"),
]


@pytest.mark.parametrize("line, repo, name, token, fragment", REFUSED)
def test_refused(line, repo, name, token, fragment):
    with pytest.raises(RunLineError) as caught:
        parse_run_line(line, repo=repo, name=name)
    message = str(caught.value)
    assert caught.value.token == token
    if token:
        assert f"`{token}`" in message
    assert fragment in message


def test_legacy_unknown_flag_reads_as_pflag_would():
    # -lxc-conf was removed from docker; today's pflag reads -l "xc-conf=x".
    run = parse_run_line("docker run -lxc-conf=x nginx", repo="nginx", name="web")
    assert run.options == ("-lxc-conf=x",)


def test_shell_refusals_name_the_column():
    with pytest.raises(RunLineError, match=r"`;` \(column 17\)"):
        parse_run_line("docker run nginx; ls", repo="nginx", name="web")
    with pytest.raises(RunLineError, match=r"`\$X` \(line 2, column 6\)"):
        parse_run_line("docker run \\\n  -e $X nginx", repo="nginx", name="web")


def test_operator_message_says_why():
    with pytest.raises(RunLineError) as caught:
        parse_run_line("docker run nginx; ls", repo="nginx", name="web")
    assert "no shell runs the line, so `;`" in str(caught.value)
    assert "would not mean what you meant" in str(caught.value)
    assert "wrap the command in sh -c '...'" in str(caught.value)


def test_command_and_canonical():
    run = parse_run_line(
        "docker run -p=66:55 -restart=always --name cassa cassandra:3 /bin/sh -c 'a; b'",
        repo="cassandra",
        name="cassa",
    )
    assert run.command("cassandra@" + SHA, ["--name", "cassa", "--detach"]) == [
        "run", "--name", "cassa", "--detach", "-p=66:55", "--restart=always",
        "cassandra@" + SHA, "/bin/sh", "-c", "a; b",
    ]
    assert run.command("cassandra:latest") == [
        "run", "-p=66:55", "--restart=always", "cassandra:latest", "/bin/sh", "-c", "a; b",
    ]
    assert run.canonical() == (
        "run", "-p=66:55", "--restart=always", "docker.io/library/cassandra", "/bin/sh", "-c", "a; b",
    )
    # The tag written in the line does not change the hash input: the definition's tag rules.
    other = parse_run_line(
        "docker run -p=66:55 -restart=always docker.io/library/cassandra /bin/sh -c 'a; b'",
        repo="cassandra",
        name="cassa",
    )
    assert other.canonical() == run.canonical()


# --- properties ------------------------------------------------------------------------

_PROPERTY = settings(max_examples=200, deadline=None, database=None)


# Characters that mean something to a shell, so generated text reaches every branch.
_SHELLISH = "ab -=:/.~#'\"\\\n\t\r$`;&|<>(){}*?[]!%@+,\0"


@_PROPERTY
@given(st.one_of(st.text(max_size=60), st.text(_SHELLISH, max_size=40)))
def test_arbitrary_text_gives_a_run_line_or_a_run_line_error(text):
    for line in (text, "docker run " + text, "docker run -d " + text + " nginx"):
        try:
            run = parse_run_line(line, repo="nginx", name="web")
        except RunLineError as error:
            assert str(error)
        else:
            assert isinstance(run, RunLine)
            assert run.canonical()[0] == "run"


_SH = shutil.which("sh")
# No glob or brace characters: a shell expands those, and puller passes them on as written.
_WORDISH = "ab -=:/.~#'\"\\\n\t\r$`;&|<>()!%@+"


_any_char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")
_fragment = st.one_of(
    st.text("ab-=:/.%@+!#~$", min_size=1, max_size=4),  # unquoted
    st.sampled_from([" ", "\t", "  ", "\\\n"]),  # blanks and continuations
    st.builds("\\{}".format, _any_char),  # a backslash escape
    st.builds("'{}'".format, st.text(_any_char.filter(lambda c: c != "'"), max_size=5)),
    st.builds(
        '"{}"'.format,
        st.lists(
            st.one_of(
                _any_char.filter(lambda c: c not in '"\\$`'),
                st.builds("\\{}".format, st.sampled_from('$`"\\\nab')),
            ),
            max_size=5,
        ).map("".join),
    ),
)


@pytest.mark.parametrize("line", ["$\\\n@", "a $\\\nHOME", '"$\\\nHOME"', "$\\\n\\\n(x)"])
def test_an_expansion_split_by_a_line_continuation_is_still_refused(line):
    # found by the property below: a shell joins the lines first, then expands
    with pytest.raises(RunLineError, match="expand|substitut|parameter"):
        split_words(line)


@pytest.mark.skipif(_SH is None, reason="no sh on PATH to compare the word splitting with")
@settings(max_examples=100, deadline=None, database=None)
@given(st.one_of(st.text(_WORDISH, max_size=30), st.lists(_fragment, max_size=8).map("".join)))
def test_words_are_those_sh_would_pass(text):
    """Whatever split_words accepts, a POSIX shell splits into the same words."""
    try:
        words = split_words(text)
    except RunLineError:
        return
    # Safe to hand to sh: split_words refused every operator and expansion.
    done = subprocess.run(
        [_SH, "-c", "set -f; printf '%s\\0' X " + text], capture_output=True, timeout=10, check=True
    )
    assert done.stdout.split(b"\0")[1:-1] == [word.encode() for word in words]


_REFUSED_FLAGS = {"name", "rm", "attach", "help", "detach", "label"}
_BOOL_FLAGS = sorted(f.long for f in FLAGS.values() if not f.takes_value and f.long not in _REFUSED_FLAGS)
_VALUE_FLAGS = sorted(f.long for f in FLAGS.values() if f.takes_value and f.long not in _REFUSED_FLAGS)
_BOOL_SHORTS = sorted(s for s, f in SHORT.items() if not f.takes_value)  # d, i, t, q, P
_VALUE_SHORTS = sorted(s for s, f in SHORT.items() if f.takes_value and f.long not in _REFUSED_FLAGS)
_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12)


@st.composite
def _option(draw) -> list[str]:
    """One option, in one of the spellings docker accepts, as argv words."""
    kind = draw(st.sampled_from(["bool", "bool=", "long", "long=", "chain", "short", "short=", "label"]))
    if kind == "bool":
        return [f"--{draw(st.sampled_from(_BOOL_FLAGS + ['detach']))}"]
    if kind == "bool=":
        value = draw(st.sampled_from(["true", "false", "1", "0", "True", "F"]))
        return [f"--{draw(st.sampled_from(_BOOL_FLAGS))}={value}"]
    if kind in ("long", "long="):
        flag, value = draw(st.sampled_from(_VALUE_FLAGS)), draw(_values)
        return [f"--{flag}={value}"] if kind == "long=" else [f"--{flag}", value]
    if kind == "label":
        value = draw(_values.filter(lambda v: not v.startswith("io.puller.")))
        return ["-l", value]
    short, value = draw(st.sampled_from(_VALUE_SHORTS)), draw(_values)
    if kind == "short=":
        return [f"-{short}={value}"]
    chain = "".join(draw(st.lists(st.sampled_from(_BOOL_SHORTS), max_size=3)))
    if kind == "short":
        return [f"-{chain}{short}", value]
    if value.startswith("="):  # -p=x means the value x, not =x
        return [f"-{chain}"] if chain else ["-d"]
    return [f"-{chain}{short}{value}"] if value else [f"-{chain}{short}", value]


def _is_legacy_spelling(word: str) -> bool:
    name = word[1:].split("=", 1)[0]
    return not word.startswith("--") and len(name) > 1 and name in FLAGS


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.lists(_option(), max_size=6),
    st.sampled_from(["nginx", "nginx:1.25", "docker.io/library/nginx", f"nginx@{SHA}"]),
    st.lists(_values, max_size=4),
)
def test_round_trip(options, image, args):
    opts = [word for option in options for word in option]
    # A word spelling a long name with one dash is read as a legacy flag (-ip is --ip).
    assume(not any(_is_legacy_spelling(option[0]) for option in options))
    line = shlex.join(["docker", "run", *opts, image, *args])
    run = parse_run_line(line, repo="nginx", name="web")
    assert run == RunLine(tuple(opts), image, tuple(args))


# A long line must cost time in proportion to its length: the scan once sliced,
# stripped or copied what came before at every character (a 1 MB line took
# 28 s). Each shape below was quadratic in its own way; n is where that showed.
_LONG_LINES = {
    "long-word": (20_000, lambda n: "docker run busybox echo a'b'\\c" + "d" * n),
    "tildes-in-a-word": (10_000, lambda n: "docker run busybox echo A=b" + "~" * n),
    "trailing-line-breaks": (2_000, lambda n: "docker run busybox echo" + "\n" * n),
    "continuations-after-dollar": (
        10_000, lambda n: "docker run busybox echo $" + "\\\n" * (n // 2) + "1"),
    "flag-chain": (20_000, lambda n: "docker run -" + "d" * n + " busybox"),
}


def _cpu_seconds(line: str, runs: int) -> float:
    """The least CPU time of ``runs`` parses of ``line`` (fewer once one is slow)."""
    best = float("inf")
    for _ in range(runs):
        gc.disable()
        start = time.process_time()
        try:
            parse_run_line(line, repo="busybox", name="x")
        except RunLineError:
            pass
        finally:
            elapsed = time.process_time() - start
            gc.enable()
        best = min(best, elapsed)
        if elapsed > 1.0:
            break
    return best


@pytest.mark.parametrize("shape", _LONG_LINES)
def test_a_long_line_is_scanned_in_linear_time(shape):
    # 16x the text takes about 16x the time when linear, up to 256x when
    # quadratic. Python-level step counts cannot see what was quadratic (C-level
    # slices, strips and concatenations), so this compares CPU times; they are
    # noisy on a busy machine, so the bound sits far from 16 and a pass in any
    # of three tries is enough. (Measured: 10x to 26x now, 54x to 370x before.)
    n, make = _LONG_LINES[shape]
    ratios = []
    for _ in range(3):
        ratios.append(_cpu_seconds(make(16 * n), 2) / max(_cpu_seconds(make(n), 5), 1e-6))
        if ratios[-1] < 40:
            return
    pytest.fail(f"16x the line took {min(ratios):.0f}x the time (tries: {ratios})")
