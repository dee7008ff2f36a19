"""Service definition files: YAML in, validated ``Service`` values out.

``parse_definition`` is pure (text in, value or ``DefinitionError`` out).
Writing and removing files is ``writer``'s. Reading a whole directory is
``directory.DefinitionDir``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

import re2
import yaml

from .. import constants
from ..errors import DefinitionError, ImageReferenceError, RunLineError
from ..images.reference import Reference
from ..images.versions import valid_range
from .rolloutspec import RolloutSpec, fixed_host_ports, parse_rollout
from .runline import RunLine, parse_run_line

log = logging.getLogger(__name__)

FIELDS = ("name", "bash", "repo", "tag", "track", "node", "digest", "health_timeout", "notify",
          "update", "rollout")
REQUIRED = ("name", "bash", "repo")
NAME_RE = re.compile(constants.SERVICE_NAME_PATTERN)
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
DEFINITION_MODE = 0o600  # a run line may carry secrets: files puller creates are private
TAG_RE = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # refused patterns are reported as DefinitionErrors instead


@functools.lru_cache(maxsize=256)
def node_pattern(pattern: str) -> Any:
    """The ``node:`` pattern compiled by RE2, whose search is linear in the node
    name (Python's ``re`` backtracks: ``^(.+)+z`` took seconds on 26 characters).

    Raises ``re2.error`` for a pattern RE2 cannot run (backreferences,
    lookaround), ``UnicodeError`` for one that is not valid text.
    """
    return re2.compile(pattern, _RE2_OPTIONS)


def _why(exc: Exception) -> str:
    """An error's message as text (RE2's is bytes)."""
    reason = exc.args[0] if isinstance(exc, re2.error) and exc.args else None
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(exc)


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
    notify: tuple[str, ...] = ()  # this service's own notification URLs (Apprise)
    track: str | None = None  # a semver range: ``tag`` is the newest matching tag, "" until known
    update: str = constants.UPDATE_POLICIES[0]  # auto | notify | manual: see node.policy
    rollout: RolloutSpec | None = None  # how a change travels through the fleet
    # set when a rollout pinned the release's digest (see node.policy): the image the
    # file asks for, recorded on the container as if unpinned; and whether the release
    # is one the rollout's first node ran, its update policy applied there
    asked_ref: str | None = None
    follows_release: bool = False

    @functools.cached_property
    def image_ref(self) -> str:
        """What docker runs: ``repo@digest`` once pinned, else ``repo:tag`` (the
        bare repository while ``track:`` has not been resolved to a tag). Computed once:
        a pass asks it of every service many times."""
        reference = Reference.parse(self.repo)
        if self.digest:
            return reference.with_digest(self.digest)
        if not self.tag:
            return reference.familiar_name
        return reference.with_tag(self.tag)

    def matches(self, node_name: str) -> bool:
        """The ``node`` regexp is *searched* in the node name; empty matches all."""
        return node_pattern(self.node).search(node_name) is not None


def _lines_of(node: yaml.MappingNode) -> dict[str, int]:
    lines: dict[str, int] = {}
    for key, _value in node.value:
        if isinstance(key, yaml.ScalarNode):
            lines.setdefault(str(key.value), key.start_mark.line + 1)
    return lines


def _sources_of(node: yaml.MappingNode, text: str) -> dict[str, str]:
    """Each plain scalar value as the file spells it (``1.10``, not the float 1.1)."""
    sources: dict[str, str] = {}
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and isinstance(value, yaml.ScalarNode):
            span = text[value.start_mark.index:value.end_mark.index].strip()
            sources.setdefault(str(key.value), span or str(value.value))
    return sources


def _duplicate_key(node: yaml.MappingNode) -> tuple[str, int] | None:
    seen: set[str] = set()
    for key, _value in node.value:
        if isinstance(key, yaml.ScalarNode):
            if key.value in seen:
                return key.value, key.start_mark.line + 1
            seen.add(key.value)
    return None


def _load_mapping(text: str, path: str
                  ) -> tuple[dict[str, Any], dict[str, int], dict[str, str]]:
    """YAML text → (mapping, line of each key, source text of each scalar value);
    DefinitionError otherwise."""
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
    return data, _lines_of(node), _sources_of(node, text)


def _text(data: dict[str, Any], field: str, path: str, line: int | None,
          source: str | None = None) -> str:
    """Field ``field`` as text; a value YAML read as another type is refused with
    a hint that quotes the source text (``source``), not the value it became."""
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        kind = "a number with a decimal point" if isinstance(value, float) else type(value).__name__
        spelled = source if source is not None else str(value)
        hint = f' (YAML reads it as {kind}; quote it: {field}: "{spelled}")' if isinstance(
            value, (float, bool)
        ) else ""
        raise DefinitionError(path, f"field {field!r} must be a string{hint}", line)
    return str(value)


def parse_definition(text: str, path: str, default_name: str | None = None) -> Service:
    """Validate one definition file's text; ``path`` is used for the name and messages.
    ``default_name`` is the name of a text without ``name:`` (else it is missing)."""
    data, lines, sources = _load_mapping(text, path)
    if default_name is not None and data.get("name") is None:
        data["name"] = default_name
    for key in data:
        if key not in FIELDS:
            raise DefinitionError(
                path, f"unknown field {key!r}; the fields are {', '.join(FIELDS)}", lines.get(str(key))
            )
    for field in REQUIRED:
        if data.get(field) in (None, ""):
            raise DefinitionError(path, f"missing field {field!r}", lines.get(field))
    field = _Fields(data, lines, path, sources)
    name = field.name()
    repo, reference = field.repo()
    tag, node, digest = field.tag(reference), field.node(), field.digest()
    health_timeout, notify, track = field.health_timeout(), field.notify(), field.track()
    tag = "" if track else tag  # the tracker picks it
    update = field.update()
    bash = field.text("bash")
    try:
        run = parse_run_line(bash, repo=repo, name=name)
    except RunLineError as exc:
        raise DefinitionError(path, f"bash: {exc}", lines.get("bash")) from None
    disagreement = _image_disagrees(run.image, tag, digest, data.get("tag") is not None, track)
    if disagreement:
        raise DefinitionError(path, f"bash: {disagreement}", lines.get("bash"))
    return Service(name=name, bash=bash, repo=repo, tag=tag, node=node, run=run, path=path,
                   digest=digest, health_timeout=health_timeout, notify=notify, track=track,
                   update=update, rollout=field.rollout(run))


def _image_disagrees(token: str, tag: str, digest: str | None, tag_written: bool,
                     track: str | None = None) -> str | None:
    """Why the run line's image token contradicts ``tag:``/``digest:``/``track:`` (None if
    it does not): puller runs the definition's tag or digest, so a token naming another
    would lie."""
    image = Reference.parse(token)
    if track and (image.tag or image.digest):
        return (f"the image `{token}` names a {'tag' if image.tag else 'digest'}, but "
                f"track: {track} picks the tag; write the image without one")
    if image.digest and image.digest != digest:
        return (f"the image `{token}` names digest {image.digest[:19]}…, but digest: is "
                f"{digest[:19] + '…' if digest else 'not set'}; write the image without a digest "
                "(puller runs the digest: field) or make them agree")
    if image.tag and not digest and image.tag != tag and (tag_written or image.tag != "latest"):
        return (f"the image `{token}` names tag {image.tag}, but tag: is {tag}; write the image "
                "without a tag (puller runs the tag: field) or make them agree")
    return None


@dataclass(frozen=True)
class _Fields:
    """The fields of one parsed file, each checked on its own with its line."""

    data: dict
    lines: dict
    path: str
    sources: dict

    def fail(self, field: str, message: str) -> DefinitionError:
        return DefinitionError(self.path, message, self.lines.get(field))

    def text(self, field: str) -> str:
        return _text(self.data, field, self.path, self.lines.get(field), self.sources.get(field))

    def name(self) -> str:
        name = self.text("name")
        stem = os.path.splitext(os.path.basename(self.path))[0]
        if not NAME_RE.match(name):
            raise self.fail("name", f"name {name!r} is not a valid container name "
                                    "(letters, digits, '_', '.', '-')")
        for suffix in (constants.PREVIOUS_SUFFIX, constants.NEXT_SUFFIX):  # puller's own names
            if name.endswith(suffix):
                raise self.fail("name", f"name {name!r} must not end in {suffix!r}")
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

    def track(self) -> str | None:
        """A semver range (``^1.2``); a number YAML read (``track: 1.10``) as spelled."""
        value = self.data.get("track")
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = self.sources.get("track", str(value))
        if self.data.get("tag") is not None:
            raise self.fail("track", f"tag: (line {self.lines.get('tag')}) and track: (line "
                                     f"{self.lines.get('track')}) both choose the tag; keep "
                                     "tag: for a fixed tag or track: for the newest tag in a "
                                     "semver range")
        if self.data.get("digest") is not None:
            raise self.fail("track", "digest: pins one image and track: follows a range; keep "
                                     "one (a rollback replaces track: by the tag and digest)")
        if not isinstance(value, str) or valid_range(value) is None:
            raise self.fail("track", f"track {value!r} is not a semver range; write one like "
                                     "^1.2, ~1.2, 1.x, '>=1.2 <2' or 1.2.3")
        return value.strip()

    def node(self) -> str:
        if self.data.get("node") is None:
            return ""
        node = self.text("node")
        try:
            node_pattern(node)
        except (re2.error, UnicodeError) as exc:
            raise self.fail("node", f"node {node!r} is not a valid regular expression for RE2, "
                                    "which runs node patterns in linear time (no backreferences, "
                                    f"no lookaround): {_why(exc)}") from None
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

    def notify(self) -> tuple[str, ...]:
        urls = self.data.get("notify")
        if urls is None:
            return ()
        if not isinstance(urls, list) or not all(isinstance(u, str) and u.strip() for u in urls):
            raise self.fail("notify", "notify must be a list of notification URLs, e.g. "
                                      "notify: [\"json://host/path\"]")
        return tuple(url.strip() for url in urls)

    def rollout(self, run: RunLine) -> RolloutSpec | None:
        spec = parse_rollout(self.data.get("rollout"), lambda why: self.fail("rollout", why))
        fixed = fixed_host_ports(run.options) if spec and spec.order == "start-first" else []
        if fixed:
            raise self.fail("rollout", f"rollout: order start-first runs the new container "
                                       f"beside the old one, and `{fixed[0]}` in the run line "
                                       "binds a fixed host port that both would need; use "
                                       "order: stop-first, or let docker pick the host port "
                                       "(-p 80) behind a proxy")
        return spec

    def update(self) -> str:
        value = self.data.get("update")
        if value is None:
            return constants.UPDATE_POLICIES[0]
        if value not in constants.UPDATE_POLICIES:
            raise self.fail("update", f"update must be one of {', '.join(constants.UPDATE_POLICIES)}"
                                      f" (auto deploys a new image, notify tells of it, manual "
                                      f"waits for `puller approve`); found {value!r}")
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


def definition_fields(service: Service) -> dict[str, Any]:
    """The fields a user wrote (defaults filled in), in the order of FIELDS."""
    fields: dict[str, Any] = {"name": service.name, "bash": service.bash, "repo": service.repo}
    if service.tag:  # a tracked service's tag once resolved (its history records it)
        fields["tag"] = service.tag
    if service.track:
        fields["track"] = service.track
    fields["node"] = service.node
    if service.digest:
        fields["digest"] = service.digest
    if service.health_timeout is not None:
        fields["health_timeout"] = service.health_timeout
    if service.notify:
        fields["notify"] = list(service.notify)
    if service.rollout is not None:
        fields["rollout"] = service.rollout.to_fields()
    if service.update != constants.UPDATE_POLICIES[0]:
        fields["update"] = service.update
    return fields


def render_definition(fields: dict[str, Any]) -> str:
    """YAML text of a definition, fields in their usual order."""
    ordered = {key: fields[key] for key in FIELDS if fields.get(key) not in (None, "")}
    if "node" in fields and fields["node"] == "":
        ordered["node"] = ""
    return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=1 << 16)


def definition_files(directory: str, name: str) -> list[str]:
    """The files that exist for service ``name`` (``.yml``, ``.yaml``)."""
    return [path for path in (os.path.join(directory, name + suffix)
                              for suffix in constants.DEFINITION_SUFFIXES)
            if os.path.lexists(path)]


class TwoFiles(DefinitionError):
    """``name.yml`` and ``name.yaml`` side by side: neither is taken."""

    def __init__(self, paths: list[str]):
        paths = sorted(paths, key=lambda path: (path.endswith(".yaml"), path))  # .yml first
        self.paths = paths
        names = " and ".join(os.path.basename(p) for p in paths)
        super().__init__(paths[0], f"the service is defined twice, in {names}; nothing is "
                                   "synced or changed for it until one of them goes")


def definition_path(directory: str, name: str) -> str:
    """The file of service ``name``: an existing ``.yaml`` one, else ``name.yml``.
    Raises ``TwoFiles`` when both exist."""
    found = definition_files(directory, name)
    if len(found) > 1:
        raise TwoFiles(found)
    return found[0] if found else os.path.join(directory, name + ".yml")
