"""The ``docker run`` flag table against the help of the docker clients on this machine."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from puller.node import runflags
from puller.node.runflags import FLAGS, SHORT, Flag, parse_help

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE_DAEMON = "tcp://127.0.0.1:1"

# Recorded from `docker run --help` of Docker 28.2.2 (cut), wrapped lines included.
RECORDED_HELP = """
Usage:  docker run [OPTIONS] IMAGE [COMMAND] [ARG...]

Create and run a new container from an image

Aliases:
  docker container run, docker run

Options:
      --add-host list                    Add a custom host-to-IP mapping
                                         (host:ip)
  -a, --attach list                      Attach to STDIN, STDOUT or STDERR
      --cgroupns string                  Cgroup namespace to use
                                         (host|private)
                                         '':        Use the cgroup
                                                    default-cgroupns-mode
  -d, --detach                           Run container in background and
                                         print container ID
      --gpus gpu-request                 GPU devices to add to the
      --health-start-interval duration   Time between running the check
      --help                             Print usage
  -h, --hostname string                  Container host name
      --oom-score-adj int                Tune host's OOM preferences
                                         (-1000 to 1000)
      --pids-limit int                   Tune container pids limit (set
                                         -1 for unlimited)
  -P, --publish-all                      Publish all exposed ports to
      --rm                               Automatically remove the
      --sig-proxy                        Proxy received signals to the
                                         process (default true)
      --sysctl map                       Sysctl options (default map[])
      --use-api-socket                   Bind mount Docker API socket and
"""


def test_parse_help_reads_flag_lines_only():
    assert parse_help(RECORDED_HELP) == {
        "add-host": Flag("add-host", None, True),
        "attach": Flag("attach", "a", True),
        "cgroupns": Flag("cgroupns", None, True),
        "detach": Flag("detach", "d", False),
        "gpus": Flag("gpus", None, True),
        "health-start-interval": Flag("health-start-interval", None, True),
        "help": Flag("help", None, False),
        "hostname": Flag("hostname", "h", True),
        "oom-score-adj": Flag("oom-score-adj", None, True),
        "pids-limit": Flag("pids-limit", None, True),
        "publish-all": Flag("publish-all", "P", False),
        "rm": Flag("rm", None, False),
        "sig-proxy": Flag("sig-proxy", None, False),
        "sysctl": Flag("sysctl", None, True),
        "use-api-socket": Flag("use-api-socket", None, False),
    }


def test_parse_help_ignores_other_sections():
    text = "Options:\n  -q, --quiet   Quiet\n\nGlobal Options:\n  -D, --debug   Debug\n"
    assert parse_help(text) == {"quiet": Flag("quiet", "q", False)}


def test_table_is_consistent():
    assert all(name == flag.long for name, flag in FLAGS.items())
    assert all(short == flag.short and FLAGS[flag.long] is flag for short, flag in SHORT.items())
    assert sorted(SHORT) == sorted(f.short for f in FLAGS.values() if f.short)
    for hidden in ("net", "net-alias", "dns-opt", "link-local-ip", "kernel-memory", "cpu-count",
                   "cpu-percent", "io-maxbandwidth", "io-maxiops"):
        assert FLAGS[hidden].takes_value, hidden
    for boolean in ("sig-proxy", "interactive", "tty", "detach", "init", "privileged", "read-only",
                    "no-healthcheck", "oom-kill-disable", "disable-content-trust", "help", "quiet",
                    "use-api-socket", "rm", "publish-all"):
        assert not FLAGS[boolean].takes_value, boolean


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_runflags", ROOT / "scripts" / "gen_runflags.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_module_is_what_the_generator_writes():
    gen = _load_generator()
    source = Path(runflags.__file__).read_text()
    assert gen.render_module(source, dict(FLAGS)) == source


def test_generator_merges_and_reports_conflicts():
    gen = _load_generator()
    merged, conflicts = gen.merge({
        "table": {"rm": Flag("rm", None, False)},
        "help": {"rm": Flag("rm", None, False), "tty": Flag("tty", "t", False)},
    })
    assert merged == {"rm": Flag("rm", None, False), "tty": Flag("tty", "t", False)}
    assert conflicts == []
    _, conflicts = gen.merge({"table": {"rm": Flag("rm", None, False)}, "help": {"rm": Flag("rm", None, True)}})
    assert len(conflicts) == 1 and "rm" in conflicts[0]


# --- against the real clients -----------------------------------------------------------


def _clients() -> list[str]:
    """Every distinct docker client: the one on PATH and the two usual installs."""
    found: dict[str, str] = {}
    for candidate in (shutil.which("docker"), "/usr/bin/docker", "/usr/local/bin/docker"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            found.setdefault(os.path.realpath(candidate), candidate)
    return sorted(found.values())


def _client_params():
    clients = _clients()
    if not clients:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no docker client installed"))]
    return [pytest.param(client, id=client) for client in clients]


def _run(client: str, *args: str, reach_daemon: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if not reach_daemon:  # a client hides the flags its daemon does not support
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_HOST"] = UNREACHABLE_DAEMON
    return subprocess.run([client, "run", *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("reach_daemon", [True, False], ids=["daemon", "no-daemon"])
@pytest.mark.parametrize("client", _client_params())
def test_every_flag_in_the_help_is_in_the_table(client, reach_daemon):
    done = _run(client, "--help", reach_daemon=reach_daemon)
    assert done.returncode == 0, done.stderr
    listed = parse_help(done.stdout)
    assert len(listed) > 50, "the help of `docker run` was not understood"
    missing = sorted(set(listed) - set(FLAGS))
    assert not missing, f"{client} knows flags the table lacks; run scripts/gen_runflags.py"
    different = {name: (flag, FLAGS[name]) for name, flag in listed.items() if FLAGS[name] != flag}
    assert not different, f"{client} disagrees on shorthand or arity (client, table)"


@pytest.mark.parametrize("client", _client_params())
def test_hidden_flags_parse_with_the_tabled_arity(client):
    """Flags no help lists are checked by parsing: `--FLAG --help`."""
    done = _run(client, "--help", reach_daemon=False)
    hidden = sorted(set(FLAGS) - set(parse_help(done.stdout)))
    known = []
    for name in hidden:
        # A flag taking a value swallows --help and then misses the image;
        # a boolean lets --help print the usage; an unknown one is refused.
        probe = _run(client, f"--{name}", "--help", reach_daemon=False)
        output = probe.stdout + probe.stderr
        if "unknown flag" in output:
            continue  # this client predates the flag: the union table still knows it
        known.append(name)
        takes_value = probe.returncode != 0
        assert takes_value == FLAGS[name].takes_value, (client, name, output[:200])
    assert {"net", "net-alias", "dns-opt"} <= set(known)
