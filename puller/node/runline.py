"""The ``bash:`` line of a service: a ``docker run`` command, read without a shell.

``parse_run_line`` splits the line into words as a POSIX shell would, refuses
what only a shell could give a meaning to (operators, expansions, comments),
and reads the options the way docker's own parser (pflag, with interspersed
arguments off) does, so that the image and the container's command are found
exactly where docker would find them. Legacy single-dash long flags
(``-restart=always``) are rewritten to their ``--`` form; the user's
``--name`` equal to the service name is dropped, since puller adds its own;
everything else reaches docker untouched and in order. Pure: no I/O.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import RunLineError
from ..images.reference import Reference
from .runoptions import apply_policy, check_image, split_options, strip_docker_run

_OPERATOR_CHARS = ";&|<>()"
_OPERATOR_MEANING = {
    ";": "it ends a command",
    "&": "it runs a command in the background",
    "&&": "it runs a second command if the first succeeds",
    "||": "it runs a second command if the first fails",
    "|": "it pipes one command into another",
    "(": "it starts a subshell",
    ")": "it ends a subshell",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_START = frozenset(string.ascii_letters + "_")
_NAME_CHARS = _NAME_START | frozenset(string.digits)
_SPECIAL_PARAMETERS = "0123456789@*#?$!-"
_TILDE_PREFIX = re.compile(r"~[^\s/:]*")
_OPERATOR = re.compile(r"[;&|<>]+|[()]")


@dataclass(frozen=True)
class RunLine:
    """A ``docker run`` line, split and checked."""

    options: tuple[str, ...]
    """The user's options after ``run``: legacy flags rewritten, the user's own --name removed."""
    image: str
    """The image token as the user wrote it."""
    args: tuple[str, ...]
    """The command and its arguments after the image, untouched."""

    def command(self, image_ref: str, extra_options: Sequence[str] = ()) -> list[str]:
        """argv after ``docker``: ``['run', *extra_options, *options, image_ref, *args]``."""
        return ["run", *extra_options, *self.options, image_ref, *self.args]

    def canonical(self) -> tuple[str, ...]:
        """``('run', *options, <repository name>, *args)``: stable input for the drift hash."""
        return ("run", *self.options, Reference.parse(self.image).name, *self.args)


def parse_run_line(line: str, *, repo: str, name: str) -> RunLine:
    """Read the ``bash:`` line of service ``name`` whose image is ``repo``.

    Raises RunLineError, naming the offending token, for a line puller will
    not run.
    """
    words = split_words(line)
    rest = strip_docker_run(words)
    options, image, args = split_options(rest)
    if image is None:
        raise RunLineError(
            f"the line has no image: write `docker run [OPTIONS] {repo} [COMMAND] [ARG...]`",
            None,
        )
    check_image(image, repo)
    return RunLine(tuple(apply_policy(options, name)), image, tuple(args))


# --- words ---------------------------------------------------------------------------


def split_words(line: str) -> list[str]:
    """Split ``line`` into words like a POSIX shell, without running one.

    Shell syntax that would change the meaning of the line is refused with a
    RunLineError naming the token and its column: operators, expansions,
    comments and open quotes. One pass, linear in the length of the line.
    """
    if "\0" in line:
        raise RunLineError(
            f"the line contains a NUL character (`\\0`, {_where(line, line.index(chr(0)))}), "
            "which no command line can carry: remove it",
            "\\0",
        )
    return _ShellScan(line).run()


class _ShellScan:
    """One pass over the raw line, quote-aware, as a POSIX shell's tokenizer reads it.

    No step slices, strips or copies what came before: each character is
    appended once and each word joined once, so the scan is linear in the
    length of the line (a 1 MB line once took 28 s).
    """

    def __init__(self, line: str):
        self.line = line
        # where the trailing blanks begin: a line break from there on ends nothing
        self.blank_tail = len(line.rstrip(" \t\n"))
        self.words: list[str] = []
        self.chars: list[str] = []  # the current word, as the shell passes it on
        self.in_word = False  # a word has begun (perhaps empty: '')
        self.quote: str | None = None
        self.quote_at = 0
        self._new_word()

    def _new_word(self) -> None:
        """End the word begun (if any); forget its unquoted text, kept to recognise NAME=~."""
        if self.in_word:
            self.words.append("".join(self.chars))
        self.chars, self.in_word = [], False
        self.word_start = True
        self.head_empty = True  # nothing before the word's first '=' yet
        self.head_is_name = False  # the text before the first '=' is a NAME so far
        self.assigned: bool | None = None  # None: no '=' yet; else: was it NAME=?
        self.value_last: str | None = None  # last character after NAME=, None if none

    def _grow(self, c: str) -> None:
        """Record the unquoted ``c`` (``\\0`` for quoted or escaped text) of the word."""
        self.word_start, self.in_word = False, True
        if self.assigned is not None:
            self.value_last = c
        elif c == "=":
            self.assigned = self.head_is_name
        else:
            self.head_is_name = (c in _NAME_START if self.head_empty
                                 else self.head_is_name and c in _NAME_CHARS)
            self.head_empty = False

    def _after_assignment(self) -> bool:
        """True if a shell would expand a ``~`` here (``NAME=~``, ``NAME=a:~``)."""
        return bool(self.assigned) and self.value_last in (None, ":")

    def run(self) -> list[str]:
        """Scan the whole line; return its words."""
        i = 0
        while i < len(self.line):
            if self.quote == "'":
                i = self._single(i)
            elif self.quote == '"':
                i = self._double(i)
            else:
                i = self._unquoted(i)
        if self.quote is not None:
            kind = "single" if self.quote == "'" else "double"
            raise RunLineError(
                f"the {kind} quote (`{self.quote}`, {_where(self.line, self.quote_at)}) "
                "is never closed: close it",
                self.quote,
            )
        self._new_word()
        return self.words

    def _single(self, i: int) -> int:
        """Inside single quotes everything is literal, up to the closing quote."""
        if self.line[i] == "'":
            self.quote = None
        else:
            self.chars.append(self.line[i])
        return i + 1

    def _double(self, i: int) -> int:
        """Inside double quotes ``$`` and backticks expand; a backslash escapes few characters."""
        c, nxt = self.line[i], self.line[i + 1 : i + 2]
        if c == "\\" and nxt in ("$", "`", '"', "\\"):
            self.chars.append(nxt)
            return i + 2
        if c == "\\" and nxt == "\n":
            return i + 2  # a line continuation, even in double quotes
        if c == "`" or (c == "$" and _is_expansion(self.line, i, quoted=True)):
            _refuse_expansion(self.line, i)
        if c == '"':
            self.quote = None
        else:
            self.chars.append(c)  # a backslash before another character stays
        return i + 1

    def _unquoted(self, i: int) -> int:
        """Outside quotes: blanks, quotes, escapes, and everything a shell would act on."""
        line, c = self.line, self.line[i]
        if c == "\\":
            return self._escape(i)
        if c in " \t" or (c == "\n" and i >= self.blank_tail):
            self._new_word()
            return i + 1
        if c == "\n":
            raise RunLineError(
                f"no shell runs the line, and a line break (`\\n`, {_where(line, i)}) would "
                "end the command there: join the lines, or end each but the last with a backslash",
                "\\n",
            )
        if c in "'\"":
            self.quote, self.quote_at = c, i
            self._grow("\0")
            return i + 1
        if c == "`" or (c == "$" and _is_expansion(line, i, quoted=False)):
            _refuse_expansion(line, i)
        elif c in _OPERATOR_CHARS:
            _refuse_operator(line, i)
        elif c == "#" and self.word_start:
            _refuse_comment(line, i)
        elif c == "~" and (self.word_start or self._after_assignment()):
            _refuse_tilde(line, i)
        self._grow(c)
        self.chars.append(c)
        return i + 1

    def _escape(self, i: int) -> int:
        """An unquoted backslash: escapes the next character, or continues the line."""
        nxt = self.line[i + 1 : i + 2]
        if not nxt:
            raise RunLineError(
                f"the line ends with a backslash (`\\`, {_where(self.line, i)}): remove it", "\\"
            )
        if nxt != "\n":  # backslash-newline is a line continuation: both go
            self._grow("\0")
            self.chars.append(nxt)
        return i + 2


def _refuse_comment(line: str, i: int) -> None:
    """Raise for the ``#`` starting a word at ``i``."""
    token = line[i:].split(None, 1)[0]
    raise RunLineError(
        f"no shell runs the line, so `{token}` ({_where(line, i)}) would not start a "
        "comment: remove the comment, or quote the '#' to pass it literally",
        token,
    )


def _refuse_tilde(line: str, i: int) -> None:
    """Raise for the ``~`` at ``i``, which a shell would expand."""
    token = _token_at(_TILDE_PREFIX, line, i)
    raise RunLineError(
        f"no shell runs the line, so `{token}` ({_where(line, i)}) would not be "
        "expanded to a home directory: use an absolute path",
        token,
    )


def _is_expansion(line: str, i: int, *, quoted: bool) -> bool:
    """True if the ``$`` at ``i`` starts something a shell would expand or translate.

    ``$NAME``, ``${...}``, ``$(...)``, ``$[...]`` and ``$?``-style parameters
    expand, in double quotes too; unquoted, bash also translates ``$'...'``
    and ``$"..."``. Any other ``$`` is literal.
    """
    j = i + 1
    while line.startswith("\\\n", j):
        j += 2  # a shell removes line continuations first: `$\<newline>@` is `$@`
    nxt = line[j : j + 1]
    if not nxt:
        return False
    if nxt in "{([" or nxt in _SPECIAL_PARAMETERS or _NAME.match(nxt):
        return True
    return not quoted and nxt in "'\""


def _refuse_expansion(line: str, i: int) -> None:
    """Raise for the expansion (``$...`` or backtick) starting at ``i``."""
    token = _expansion_token(line, i)
    raise RunLineError(
        f"no shell runs the line, so `{token}` ({_where(line, i)}) would not be expanded: "
        "write the value itself, or single-quote it to pass it literally; to expand it "
        "in the container, wrap the command in sh -c '...'",
        token,
    )


def _expansion_token(line: str, i: int) -> str:
    """The text of the expansion starting at ``i``, for the message."""
    if line[i] == "`":
        end = line.find("`", i + 1)
        return line[i : end + 1] if end != -1 else line[i:]
    nxt = line[i + 1 : i + 2]
    if nxt == "{":
        end = line.find("}", i)
        return line[i : end + 1] if end != -1 else line[i:]
    if nxt == "(":
        depth = 0
        for j in range(i + 1, len(line)):
            depth += {"(": 1, ")": -1}.get(line[j], 0)
            if depth == 0:
                return line[i : j + 1]
        return line[i:]
    match = _NAME.match(line, i + 1)
    if match:
        return line[i : match.end()]
    return line[i : i + 2]


def _refuse_operator(line: str, i: int) -> None:
    """Raise for the shell operator starting at ``i``."""
    token = _token_at(_OPERATOR, line, i)
    meaning = _OPERATOR_MEANING.get(token, "it redirects input or output")
    raise RunLineError(
        f"no shell runs the line, so `{token}` ({_where(line, i)}) would not mean what you "
        f"meant ({meaning} in a shell): wrap the command in sh -c '...', or quote the "
        "character to pass it literally",
        token,
    )


def _token_at(pattern: re.Pattern[str], line: str, i: int) -> str:
    """The text ``pattern`` matches at ``i``, or the single character there."""
    match = pattern.match(line, i)
    return match.group(0) if match else line[i]


def _where(line: str, i: int) -> str:
    """``column N`` (1-based), or ``line L, column N`` for a line with breaks."""
    line_start = line.rfind("\n", 0, i) + 1
    column = i - line_start + 1
    if "\n" not in line.rstrip("\n"):
        return f"column {column}"
    return f"line {line.count(chr(10), 0, i) + 1}, column {column}"
