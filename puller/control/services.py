"""The definition endpoints: list, get, put (one or the original's bulk), delete,
tag, rollback, history. Each handler gets the ``Api`` (not imported here: it
imports this module) and the request."""

from __future__ import annotations

from typing import Any

from .. import constants
from .routing import ApiProblem, Request, route

Api = Any  # puller.control.api.Api

def _definition_body(request: Request, name: str | None) -> dict[str, Any]:
    """A definition from a YAML or JSON body (JSON is YAML too)."""
    import yaml

    try:
        data = yaml.safe_load(request.body.decode("utf-8")) if request.body else None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ApiProblem(400, f"the body is neither YAML nor JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiProblem(400, "the body must be one definition: a mapping with name, bash, repo")
    return _with_name(data, name)


def _yaml_body(request: Request) -> Any:
    """The body as YAML (JSON is YAML too), like a single PUT takes it."""
    import yaml

    try:
        return yaml.safe_load(request.body.decode("utf-8")) if request.body else None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ApiProblem(400, f"the body is neither YAML nor JSON: {exc}") from None


def _with_name(data: dict[str, Any], name: str | None) -> dict[str, Any]:
    if name is not None:
        if data.get("name") not in (None, name):
            raise ApiProblem(400, f"the body's name {data.get('name')!r} is not {name!r}, "
                                  "the service in the path")
        data = {**data, "name": name}
    return data


def _write(api: Api, fields: dict[str, Any], source: str) -> dict[str, Any]:
    from ..errors import DefinitionError
    from ..node.definitions import FIELDS, definition_fields
    from ..node.writer import write_definition

    name = fields.get("name")
    unknown = sorted(str(key) for key in fields if key not in FIELDS)
    if unknown:
        raise ApiProblem(400, f"unknown field(s) {', '.join(unknown)}; the fields are "
                              f"{', '.join(FIELDS)}")
    try:
        with api.write_lock:
            api.node.history.expect(str(name), source)
            service = write_definition(api.node.directory, fields)
    except DefinitionError as exc:
        raise ApiProblem(400, str(exc)) from None
    except OSError as exc:
        raise ApiProblem(500, f"cannot write the definition: {exc}") from None
    api.node.wake()
    return {"service": definition_fields(service), "path": service.path,
            "runs_here": service.matches(api.node.node)}


def _write_all(api: Api, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write every definition or none (a failure half-way puts the others back)."""
    from ..errors import DefinitionError
    from ..node.definitions import definition_fields
    from ..node.writer import write_definitions

    try:
        for item in items:
            api.node.history.expect(str(item.get("name")), "api")
        services = write_definitions(api.node.directory, items)
    except DefinitionError as exc:
        raise ApiProblem(400, f"nothing written: {exc}") from None
    except OSError as exc:
        raise ApiProblem(500, f"nothing written: cannot write the definitions: {exc}") from None
    api.node.wake()
    return [{"service": definition_fields(s), "path": s.path, "runs_here": s.matches(api.node.node)}
            for s in services]


def _current(api: Api, name: str):
    service = api.node.scan().services.get(name)
    if service is None:
        raise ApiProblem(404, f"no service {name!r} is defined")
    return service


@route("GET", "/v1/services")
def list_services(api: Api, request: Request) -> tuple[int, Any]:
    from ..node.definitions import definition_fields

    scan = api.node.scan()
    node = api.node.node
    return 200, {"node": node,
                 "services": [{**definition_fields(s), "runs_here": s.matches(node)}
                              for _, s in sorted(scan.services.items())],
                 "errors": [str(error) for error in scan.errors]}


@route("GET", "/v1/services/{name}")
def get_service(api: Api, request: Request) -> tuple[int, Any]:
    from ..node.definitions import definition_fields

    service = _current(api, request.params["name"])
    return 200, {"service": definition_fields(service), "path": service.path,
                 "runs_here": service.matches(api.node.node)}


@route("PUT", "/v1/services/{name}", max_body=constants.MAX_DEFINITION_BYTES)
def put_service(api: Api, request: Request) -> tuple[int, Any]:
    from ..node.definitions import FIELDS

    name = request.params["name"]
    fields = _definition_body(request, name)
    if all(key in FIELDS for key in fields):  # unknown fields: _write names them all
        _check_body(request.body, name)
    return 200, _write(api, fields, "api")


def _check_body(body: bytes, name: str) -> None:
    """The body checked as the file it becomes, so that a problem is told at the
    body's own line, not at a line of the file the daemon would write."""
    from ..errors import DefinitionError
    from ..node.definitions import parse_definition

    try:
        parse_definition(body.decode("utf-8"), f"{name}.yml", default_name=name)
    except DefinitionError as exc:
        where = f"line {exc.line} of the body" if exc.line else "the body"
        raise ApiProblem(400, f"{where}: {exc.reason}; nothing was written") from None


@route("PUT", "/v1/services")
def put_services(api: Api, request: Request) -> tuple[int, Any]:
    """The original's bulk PUT: a list of definitions, all valid or none written."""
    from ..errors import DefinitionError
    from ..node.definitions import FIELDS, parse_definition, render_definition

    data = _yaml_body(request)
    if isinstance(data, dict) and isinstance(data.get("services"), list):
        data = data["services"]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ApiProblem(400, "expected a list of definitions (YAML or JSON)")
    with api.write_lock:
        for item in data:  # validate all before writing any
            unknown = sorted(str(key) for key in item if key not in FIELDS)
            path = f"{item.get('name')}.yml"
            try:
                if unknown:
                    raise DefinitionError(path, f"unknown field(s) {', '.join(unknown)}")
                text = render_definition(item)
                if len(text.encode()) > constants.MAX_DEFINITION_BYTES:
                    raise ApiProblem(413, f"nothing written: {path}: a definition must be at "
                                          f"most {constants.MAX_DEFINITION_BYTES} bytes, as "
                                          "for a file")
                parse_definition(text, path)
            except DefinitionError as exc:
                raise ApiProblem(400, f"nothing written: {exc}") from None
        return 200, {"written": _write_all(api, data)}


@route("DELETE", "/v1/services/{name}")
def delete_service(api: Api, request: Request) -> tuple[int, Any]:
    from ..node.writer import remove_definition

    name = request.params["name"]
    with api.write_lock:
        removed = remove_definition(api.node.directory, name)
    if not removed:
        raise ApiProblem(404, f"no service {name!r} is defined")
    api.node.wake()
    return 200, {"removed": name, "paths": removed}


@route("POST", "/v1/services/{name}/tag")
def set_tag(api: Api, request: Request) -> tuple[int, Any]:
    from ..node.definitions import definition_fields
    from ..node.history import fixed, without_pin

    body = request.json()
    tag = body.get("tag") if isinstance(body, dict) else None
    if not isinstance(tag, str) or not tag:
        raise ApiProblem(400, 'expected {"tag": "<tag>"}')
    with api.write_lock:  # read, modify, write: no PUT in between is lost
        # a fixed tag replaces track: (a tracked service stops following its range)
        fields = fixed(without_pin(definition_fields(_current(api, request.params["name"]))), tag)
        return 200, _write(api, fields, "tag")


@route("POST", "/v1/services/{name}/rollback")
def rollback(api: Api, request: Request) -> tuple[int, Any]:
    from ..node.definitions import definition_fields
    from ..node.history import NoRollback, rollback_fields

    name = request.params["name"]
    body = request.json() if request.body else {}
    to = body.get("to") if isinstance(body, dict) else None
    if to is not None and (not isinstance(to, str) or not to):
        raise ApiProblem(400, 'expected {"to": "<tag>|sha256:<digest>"} or no body')
    _check_target(to)
    with api.write_lock:  # read, modify, write: no PUT in between is lost
        current = definition_fields(_current(api, name))
        try:
            fields = rollback_fields(api.node.history.revisions(name), current, to)
        except NoRollback as exc:
            raise ApiProblem(409, str(exc)) from None
        if to and not fields.get("digest"):  # a tag that never ran here: the registry must have it
            _check_tag_exists(api, fields["repo"], to)
        return 200, _write(api, fields, "rollback")


def _check_target(to: str | None) -> None:
    """A ``to`` that is neither a tag nor a digest is refused as the argument it is."""
    from ..node.definitions import DIGEST_RE, TAG_RE

    if to is None:
        return
    if to.startswith("sha256:"):
        if not DIGEST_RE.match(to):
            raise ApiProblem(400, f"rollback to {to!r}: not a digest; a digest is sha256: and "
                                  "64 hex digits (`puller history NAME` lists those that ran)")
    elif not TAG_RE.match(to):
        raise ApiProblem(400, f"rollback to {to!r}: neither a tag (letters, digits, '_', '.', "
                              "'-') nor a digest (sha256:...)")


def _check_tag_exists(api: Api, repo: str, tag: str) -> None:
    """Refuse a rollback to a tag the registry does not have (a manifest HEAD);
    a registry that cannot tell (no HEAD support, credentials only docker holds)
    leaves it to the pull."""
    from ..errors import PullerError
    from ..images.reference import Reference
    from ..images.registry import AuthenticationError, RegistryError, Unsupported

    ref = Reference.parse(repo).with_tag(tag)
    try:
        api.node.freshness.head(ref)
    except (Unsupported, AuthenticationError):
        return
    except RegistryError as exc:
        if exc.status == 404:
            raise ApiProblem(409, f"cannot roll back to {tag}: {ref} is not in the registry; "
                                  "nothing changed (`puller history NAME` lists the revisions "
                                  "that ran here)") from None
        raise ApiProblem(502, f"cannot check that {ref} exists: {exc}; nothing changed") from None
    except PullerError as exc:
        raise ApiProblem(502, f"cannot check that {ref} exists: {exc}; nothing changed") from None


@route("GET", "/v1/services/{name}/history")
def history(api: Api, request: Request) -> tuple[int, Any]:
    name = request.params["name"]
    revisions = api.node.history.revisions(name)
    if not revisions and name not in api.node.scan().services:
        raise ApiProblem(404, f"no service {name!r} is defined or remembered")
    return 200, {"service": name, "node": api.node.node, "revisions": revisions}
