"""Service definition files: YAML in, validated ``Service`` values out.

``parse_definition`` is pure (text in, value or ``DefinitionError`` out).
``DefinitionDir`` reads a directory and keeps, per file, the last good
definition in force while the file is broken: a bad file is reported, never
rewritten, never deleted, and never stops the others.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from typing import Any

import yaml

from .. import constants
from ..errors import DefinitionError, ImageReferenceError, RunLineError
from ..fsutil import write_atomically
from ..images.reference import Reference
from .runline import RunLine, parse_run_line

log = logging.getLogger(__name__)

FIELDS = ("name", "bash", "repo", "tag", "node", "digest", "health_timeout")
REQUIRED = ("name", "bash", "repo")
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
TAG_RE = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)


@dataclass(frozen=True)
class Service:
    """One validated service definition."""

    name: str
    bash: str
    repo: str
    tag: str
    node: str
    run: RunLine
    path: str
    digest: str | None = None
    health_timeout: float | None = None

    @property
    def image_ref(self) -> str:
        """What docker runs: ``repo@digest`` once pinned, else ``repo:tag``."""
        reference = Reference.parse(self.repo)
        if self.digest:
            return reference.with_digest(self.digest)
        return reference.with_tag(self.tag)

    def matches(self, node_name: str) -> bool:
        """The ``node`` regexp is *searched* in the node name; empty matches all."""
        return re.search(self.node, node_name) is not None


def _lines_of(node: yaml.MappingNode) -> dict[str, int]:
    lines: dict[str, int] = {}
    for key, _value in node.value:
        if isinstance(key, yaml.ScalarNode):
            lines.setdefault(str(key.value), key.start_mark.line + 1)
    return lines


def _duplicate_key(node: yaml.MappingNode) -> tuple[str, int] | None:
    seen: set[str] = set()
    for key, _value in node.value:
        if isinstance(key, yaml.ScalarNode):
            if key.value in seen:
                return key.value, key.start_mark.line + 1
            seen.add(key.value)
    return None


def _load_mapping(text: str, path: str) -> tuple[dict[str, Any], dict[str, int]]:
    """YAML text → (mapping, line of each key); DefinitionError otherwise."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            raise DefinitionError(path, "the file is empty; expected a mapping with name, bash, repo")
        if not isinstance(node, yaml.MappingNode):
            raise DefinitionError(
                path,
                "expected a mapping (name: ..., bash: ..., repo: ...), found a "
                + {"ScalarNode": "single value", "SequenceNode": "list"}.get(
                    type(node).__name__, "value"
                ),
                node.start_mark.line + 1,
            )
        duplicate = _duplicate_key(node)
        if duplicate:
            raise DefinitionError(path, f"field {duplicate[0]!r} appears twice", duplicate[1])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark and "<stream end>" in (exc.problem or ""):
            mark = exc.context_mark  # "found the end" says less than where it began
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and exc.problem:
            problem += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise DefinitionError(path, f"not valid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise DefinitionError(path, f"not valid YAML: {exc}") from None
    except RecursionError:
        raise DefinitionError(path, "not valid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, _lines_of(node)


def _text(data: dict[str, Any], field: str, path: str, line: int | None) -> str:
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        kind = "a number with a decimal point" if isinstance(value, float) else type(value).__name__
        hint = f' (YAML reads it as {kind}; quote it: {field}: "{value}")' if isinstance(
            value, (float, bool)
        ) else ""
        raise DefinitionError(path, f"field {field!r} must be a string{hint}", line)
    return str(value)


def parse_definition(text: str, path: str) -> Service:
    """Validate one definition file's text; ``path`` is used for the name and messages."""
    data, lines = _load_mapping(text, path)
    for key in data:
        if key not in FIELDS:
            raise DefinitionError(
                path, f"unknown field {key!r}; the fields are {', '.join(FIELDS)}", lines.get(str(key))
            )
    for field in REQUIRED:
        if data.get(field) in (None, ""):
            raise DefinitionError(path, f"missing field {field!r}", lines.get(field))
    field = _Fields(data, lines, path)
    name = field.name()
    repo, reference = field.repo()
    tag, node, digest = field.tag(reference), field.node(), field.digest()
    health_timeout = field.health_timeout()
    bash = field.text("bash")
    try:
        run = parse_run_line(bash, repo=repo, name=name)
    except RunLineError as exc:
        raise DefinitionError(path, f"bash: {exc}", lines.get("bash")) from None
    return Service(name=name, bash=bash, repo=repo, tag=tag, node=node, run=run, path=path,
                   digest=digest, health_timeout=health_timeout)


@dataclass(frozen=True)
class _Fields:
    """The fields of one parsed file, each checked on its own with its line."""

    data: dict
    lines: dict
    path: str

    def fail(self, field: str, message: str) -> DefinitionError:
        return DefinitionError(self.path, message, self.lines.get(field))

    def text(self, field: str) -> str:
        return _text(self.data, field, self.path, self.lines.get(field))

    def name(self) -> str:
        name = self.text("name")
        stem = os.path.splitext(os.path.basename(self.path))[0]
        if not NAME_RE.match(name):
            raise self.fail("name", f"name {name!r} is not a valid container name "
                                    "(letters, digits, '_', '.', '-')")
        if name.endswith(constants.PREVIOUS_SUFFIX):
            raise self.fail("name", f"name {name!r} must not end in {constants.PREVIOUS_SUFFIX!r}")
        if name != stem:
            raise self.fail("name", f"name {name!r} does not match the file name; rename the "
                                    f"file to {name}.yml or set name: {stem}")
        return name

    def repo(self) -> tuple[str, Reference]:
        repo = self.text("repo")
        try:
            reference = Reference.parse(repo)
        except ImageReferenceError as exc:
            raise self.fail("repo", f"repo: {exc}") from None
        if reference.tag or reference.digest:
            raise self.fail("repo", f"repo {repo!r} carries a tag or digest; put the bare "
                                    "repository in repo: and the tag in tag:")
        return repo, reference

    def tag(self, reference: Reference) -> str:
        if self.data.get("tag") is None:
            return constants.DEFAULT_TAG
        tag = self.text("tag")
        try:
            if not TAG_RE.match(tag):
                raise ImageReferenceError(tag, "letters, digits, '_', '.' and '-'")
            reference.with_tag(tag)
        except ImageReferenceError:
            raise self.fail("tag", f"tag {tag!r} is not a valid image tag "
                                   "(letters, digits, '_', '.', '-'; at most 128)") from None
        return tag

    def node(self) -> str:
        if self.data.get("node") is None:
            return ""
        node = self.text("node")
        try:
            re.compile(node)
        except re.error as exc:
            raise self.fail("node", f"node {node!r} is not a valid regular expression: {exc}"
                            ) from None
        return node

    def digest(self) -> str | None:
        digest = self.data.get("digest")
        if digest is not None and (not isinstance(digest, str) or not DIGEST_RE.match(digest)):
            raise self.fail("digest", "digest must look like sha256:<64 hex digits>")
        return digest

    def health_timeout(self) -> float | None:
        value = self.data.get("health_timeout")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail("health_timeout", "health_timeout must be a number of seconds")
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not 0 <= value <= constants.MAX_HEALTH_TIMEOUT:
            raise self.fail("health_timeout", "health_timeout must be between 0 and "
                                              f"{constants.MAX_HEALTH_TIMEOUT:.0f} seconds")
        return value


def read_definition(path: str) -> Service:
    """Read and validate one file; unreadable or undecodable files are DefinitionErrors."""
    return parse_definition(read_text(path), path)


def read_text(path: str) -> str:
    """A definition file's text: a regular file, of bounded size, in UTF-8."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise DefinitionError(path, "not a regular file (a pipe, a device, a directory?)")
        if st.st_size > constants.MAX_DEFINITION_BYTES:
            raise DefinitionError(path, f"the file has {st.st_size} bytes; a definition has at "
                                  f"most {constants.MAX_DEFINITION_BYTES}")
        with open(path, "rb") as handle:
            raw = handle.read(constants.MAX_DEFINITION_BYTES + 1)
    except OSError as exc:
        raise DefinitionError(path, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError(path, f"not UTF-8 text (byte {exc.start})") from None


def is_definition_file(filename: str) -> bool:
    base = os.path.basename(filename)
    return base.endswith(constants.DEFINITION_SUFFIXES) and not base.startswith(".")


@dataclass(frozen=True)
class Scan:
    """The services in force, and the problems found, after reading a directory."""

    services: dict[str, Service]
    errors: tuple[DefinitionError, ...]
    # Names whose file is broken with no good definition to fall back on:
    # their containers are left alone, never removed for want of a definition.
    broken: frozenset[str] = frozenset()
    # False when the directory itself could not be read: then nothing at all
    # may be removed, since the absence of a file proves nothing.
    complete: bool = True
    # Seconds after which a file that just vanished counts as deleted (scan again then).
    recheck_in: float | None = None


@dataclass
class _Entry:
    stat_key: tuple[int, int, int, int]
    result: Service | DefinitionError


class DefinitionDir:
    """A definitions directory, re-read on each ``scan()`` (files unchanged since
    the last scan are not parsed again).

    While a file is broken, the last good definition read from it stays in
    force. A deleted file removes its service.
    """

    def __init__(self, path: str):
        self.path = path
        self._cache: dict[str, _Entry] = {}
        self._last_good: dict[str, Service] = {}
        self._missing_since: dict[str, float] = {}
        self._lock = threading.Lock()  # the loop and the API both scan

    def _read(self, filename: str) -> Service | DefinitionError:
        full = os.path.join(self.path, filename)
        try:
            st = os.stat(full)
        except OSError as exc:
            return DefinitionError(full, f"cannot read the file: {exc.strerror or exc}")
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._cache.get(filename)
        if cached and cached.stat_key == key:
            return cached.result
        try:
            result: Service | DefinitionError = read_definition(full)
        except DefinitionError as exc:
            result = exc
        except Exception as exc:  # bad input must never stop a pass
            log.exception("unexpected error reading %s", full)
            result = DefinitionError(full, f"cannot be read: {type(exc).__name__}: {exc}")
        self._cache[filename] = _Entry(key, result)
        return result

    def scan(self) -> Scan:
        with self._lock:
            return self._scan()

    def _scan(self) -> Scan:
        try:
            names = sorted(f for f in os.listdir(self.path) if is_definition_file(f))
        except OSError as exc:
            error = DefinitionError(self.path, f"cannot list the directory: {exc.strerror or exc}")
            # Keep everything in force: a vanished or unreadable directory is
            # a fault to report, not an order to remove every service.
            return Scan(dict(self._last_good_by_name()), (error,), complete=False)
        services: dict[str, Service] = {}
        errors: list[DefinitionError] = []
        broken: set[str] = set()
        present = set(names)
        now = time.monotonic()
        in_grace: list[Service] = []
        for filename in list(self._last_good):
            if filename in present:
                self._missing_since.pop(filename, None)
                continue
            # An editor that saves by renaming leaves a moment without the file:
            # a service is gone only once its file has stayed away a while.
            since = self._missing_since.setdefault(filename, now)
            if now - since < constants.DELETE_GRACE:
                in_grace.append(self._last_good[filename])
            else:
                del self._last_good[filename]
                self._missing_since.pop(filename, None)
        for filename in list(self._cache):
            if filename not in present:
                del self._cache[filename]
        for filename in names:
            result = self._read(filename)
            if isinstance(result, DefinitionError):
                errors.append(result)
                result = self._last_good.get(filename)  # type: ignore[assignment]
                if result is None:
                    broken.add(os.path.splitext(filename)[0])
                    continue
            else:
                self._last_good[filename] = result
            if result.name in services:
                other = services[result.name]
                errors.append(
                    DefinitionError(
                        os.path.join(self.path, filename),
                        f"service {result.name!r} is also defined in {other.path}; "
                        f"keeping {os.path.basename(other.path)}",
                    )
                )
                continue
            services[result.name] = result
        for service in in_grace:
            services.setdefault(service.name, service)
        return Scan(services, tuple(errors), frozenset(broken),
                    recheck_in=constants.DELETE_GRACE if in_grace else None)

    def _last_good_by_name(self) -> dict[str, Service]:
        return {service.name: service for service in self._last_good.values()}


def definition_fields(service: Service) -> dict[str, Any]:
    """The fields a user wrote (defaults filled in), in the order of FIELDS."""
    fields: dict[str, Any] = {"name": service.name, "bash": service.bash, "repo": service.repo,
                              "tag": service.tag, "node": service.node}
    if service.digest:
        fields["digest"] = service.digest
    if service.health_timeout is not None:
        fields["health_timeout"] = service.health_timeout
    return fields


def render_definition(fields: dict[str, Any]) -> str:
    """YAML text of a definition, fields in their usual order."""
    ordered = {key: fields[key] for key in FIELDS if fields.get(key) not in (None, "")}
    if "node" in fields and fields["node"] == "":
        ordered["node"] = ""
    return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=1 << 16)


def definition_path(directory: str, name: str) -> str:
    """The file of service ``name``: an existing ``.yaml`` one, else ``name.yml``."""
    yaml_path = os.path.join(directory, name + ".yaml")
    if os.path.exists(yaml_path) and not os.path.exists(os.path.join(directory, name + ".yml")):
        return yaml_path
    return os.path.join(directory, name + ".yml")


def write_definition(directory: str, fields: dict[str, Any]) -> Service:
    """Validate ``fields`` exactly as a file is validated, then write the file
    atomically. Nothing is written when they are invalid."""
    name = fields.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise DefinitionError(os.path.join(directory, f"{name}.yml"),
                              f"name {name!r} is not a valid service name")
    path = definition_path(directory, name)
    text = render_definition(fields)
    if len(text.encode()) > constants.MAX_DEFINITION_BYTES:
        raise DefinitionError(path, f"the definition is over {constants.MAX_DEFINITION_BYTES} "
                                    "bytes, the most a file may hold")
    service = parse_definition(text, path)
    write_atomically(path, text, mode=_private_mode(path))
    return service


def _private_mode(path: str) -> int:
    """0600 for a new file; an existing file keeps its owner's and group's bits,
    never others' (a run line carries secrets and is run as root)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode) & 0o770
    except FileNotFoundError:
        return 0o600


def remove_definition(directory: str, name: str) -> list[str]:
    """Delete every file defining ``name``; returns the paths removed."""
    removed = []
    for suffix in constants.DEFINITION_SUFFIXES:
        path = os.path.join(directory, name + suffix)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed
