"""The words after ``docker``: ``run``, its options as docker's pflag reads them, the image.

Options are read with interspersed arguments off, as docker does, so the image
and the container's command are found exactly where docker would find them;
the flag table is ``runflags``. Legacy single-dash long flags
(``-restart=always``) are rewritten to their ``--`` form; ``--rm``,
``--attach``, a foreign ``--name`` and ``io.puller.*`` labels are refused.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import LABEL_PREFIX
from ..errors import ImageReferenceError, RunLineError
from ..images.reference import Reference
from .runflags import FLAGS, SHORT, Flag

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # what Go's ParseBool accepts
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})



def strip_docker_run(words: list[str]) -> list[str]:
    """Return the words after ``docker run`` / ``docker container run``."""
    if not words:
        raise RunLineError("the line is empty: write `docker run [OPTIONS] IMAGE [COMMAND]`", None)
    program = words[0]
    if program != "docker" and not program.endswith("/docker"):
        raise RunLineError(
            f"the line must be a `docker run` command, and starts with `{program}`: "
            "write `docker run [OPTIONS] IMAGE [COMMAND]`",
            program,
        )
    sub = words[1:3]
    if sub[:1] == ["run"]:
        return words[2:]
    if sub == ["container", "run"]:
        return words[3:]
    if sub and sub[0].startswith("-"):
        raise RunLineError(
            f"docker's global options (`{sub[0]}` before `run`) are not supported: puller "
            "talks to the local engine with its own settings; remove them",
            sub[0],
        )
    found = " ".join(words[:3] if sub[:1] == ["container"] else words[:2])
    raise RunLineError(
        f"the line must be a `docker run` (or `docker container run`) command, not `{found}`",
        found,
    )


@dataclass(frozen=True)
class _Option:
    """One flag occurrence: its flag, its value (None for a bare boolean), as spelled."""

    flag: Flag
    value: str | None
    spelling: str


@dataclass(frozen=True)
class _Group:
    """One option word (and its separate value, if any): as written, as passed on, as read."""

    written: tuple[str, ...]
    tokens: tuple[str, ...]
    options: tuple[_Option, ...]


def split_options(words: list[str]) -> tuple[list[_Group], str | None, list[str]]:
    """Split the words after ``run`` into options, image and args, as pflag does."""
    groups: list[_Group] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        word = _rewrite_legacy(word)
        if word.startswith("--"):
            group, i = _parse_long(words, i, word)
        else:
            group, i = _parse_short(words, i, word)
        groups.append(group)
    if i >= len(words):
        return groups, None, []
    return groups, words[i], words[i + 1 :]


def _rewrite_legacy(word: str) -> str:
    """``-restart=always`` → ``--restart=always``: a single-dash long flag of the old CLI."""
    if word.startswith("--"):
        return word
    name = word[1:].split("=", 1)[0]
    if len(name) > 1 and name in FLAGS:
        return "-" + word
    return word


def _parse_long(words: list[str], i: int, word: str) -> tuple[_Group, int]:
    """Parse ``--flag``, ``--flag=value`` or ``--flag value`` at ``words[i]``."""
    name, equals, value = word[2:].partition("=")
    if not name or name[0] in "-=":
        raise RunLineError(f"bad flag syntax: `{word}`", word)
    flag = FLAGS.get(name)
    if flag is None:
        raise RunLineError(_unknown(f"--{name}", words[i]), words[i])
    tokens = [word]
    if not equals and flag.takes_value:
        if i + 1 >= len(words):
            raise RunLineError(_no_value(words[i], words[i]), words[i])
        value = words[i + 1]
        tokens.append(value)
    elif not equals:
        value = None
    option = _Option(flag, value, words[i].split("=", 1)[0])
    _check_bool(option)
    return _Group(tuple(words[i : i + len(tokens)]), tuple(tokens), (option,)), i + len(tokens)


def _parse_short(words: list[str], i: int, word: str) -> tuple[_Group, int]:
    """Parse a shorthand chain: ``-d``, ``-dit``, ``-p80:80``, ``-p=80:80``, ``-itp 80:80``."""
    tokens = [word]
    options: list[_Option] = []
    body = word[1:]
    j = 0
    while j < len(body):
        flag = SHORT.get(body[j])
        if flag is None:
            raise RunLineError(_unknown(f"-{body[j]}", word), word)
        spelling = f"-{body[j]}"
        if body.startswith("=", j + 1):
            options.append(_Option(flag, body[j + 2 :], spelling))
            break
        if flag.takes_value:
            rest = body[j + 1 :]  # once: the chain ends here
            if rest:
                value = rest
            elif i + 1 < len(words):
                value = words[i + 1]
                tokens.append(value)
            else:
                raise RunLineError(_no_value(spelling, word), word)
            options.append(_Option(flag, value, spelling))
            break
        options.append(_Option(flag, None, spelling))
        j += 1
    for option in options:
        _check_bool(option)
    return _Group(tuple(tokens), tuple(tokens), tuple(options)), i + len(tokens)


def _no_value(flag: str, word: str) -> str:
    """The message for a flag that needs a value at the end of the line."""
    where = "" if flag == word else f" in `{word}`"
    return f"the flag `{flag}`{where} needs a value, and the line ends before it"


def _unknown(flag: str, word: str) -> str:
    """The message for an unknown flag."""
    where = "" if flag == word else f" in `{word}`"
    return (
        f"unknown flag `{flag}`{where}: `docker run` has no such option "
        "(see `docker run --help`)"
    )


def _check_bool(option: _Option) -> None:
    """Refuse a boolean flag given a value Go's ParseBool would not accept."""
    if option.flag.takes_value or option.value is None:
        return
    if option.value not in _TRUE | _FALSE:
        raise RunLineError(
            f"`{option.spelling}={option.value}`: a boolean flag takes true or false",
            f"{option.spelling}={option.value}",
        )


def _is_true(option: _Option) -> bool:
    """The value of a boolean flag occurrence."""
    return option.value is None or option.value in _TRUE


# --- what puller will not run --------------------------------------------------------


def apply_policy(groups: list[_Group], name: str) -> list[str]:
    """Refuse the options puller cannot honour; return the options to keep, in order."""
    kept: list[str] = []
    for group in groups:
        drop = False
        shown = " ".join(group.written)  # once per group: a chain may hold many options
        for option in group.options:
            drop = _check_option(option, shown, name) or drop
        if not drop:
            kept.extend(group.tokens)
    return kept


def _check_option(option: _Option, shown: str, name: str) -> bool:
    """Raise for an option puller refuses (``shown`` as written); return True to drop it."""
    long = option.flag.long
    if long == "rm" and _is_true(option):
        raise RunLineError(
            f"`{shown}` is not allowed: puller owns the container's life and keeps it "
            "running (a removed container is replaced); remove --rm",
            shown,
        )
    if long == "attach":
        raise RunLineError(
            f"`{shown}` is not allowed: puller runs the container detached (--detach), "
            "which conflicts with --attach; remove it and read the output with docker logs",
            shown,
        )
    if long == "detach" and not _is_true(option):
        raise RunLineError(
            f"`{shown}` is not allowed: puller runs the container detached; remove it", shown
        )
    if long == "help" and _is_true(option):
        raise RunLineError(
            f"`{shown}` is not allowed: docker would print its help instead of running "
            "the container; remove it",
            shown,
        )
    if long == "label" and option.value is not None and option.value.startswith(LABEL_PREFIX):
        raise RunLineError(
            f"`{shown}` is not allowed: labels {LABEL_PREFIX}* belong to puller, which "
            "uses them to find its containers; use another label key",
            shown,
        )
    if long == "name":
        if option.value != name:
            raise RunLineError(
                f"`{shown}` is not allowed: the container is named after the service, "
                f"{name!r}; remove --name (puller adds it) or set it to {name!r}",
                shown,
            )
        return True
    return False


def check_image(image: str, repo: str) -> None:
    """Refuse an image token that is invalid or does not name the service's repo."""
    try:
        wanted = Reference.parse(repo)
    except ImageReferenceError as error:
        raise RunLineError(
            f"the service's repo `{repo}` is not a valid image reference: {error.reason}", repo
        ) from None
    try:
        given = Reference.parse(image)
    except ImageReferenceError as error:
        raise RunLineError(
            f"the image `{image}` is not a valid image reference ({error.reason}); after the "
            f"options, write the repo `{repo}`",
            image,
        ) from None
    if not given.same_repository(wanted):
        raise RunLineError(
            f"the image `{image}` is not the service's repo `{repo}`: write `{repo}` (puller "
            "runs it at the tag or digest of the definition)",
            image,
        )
