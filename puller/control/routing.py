"""The API's requests, error answers and route table (filled by the endpoint modules)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from .. import constants


class ApiProblem(Exception):
    """An error answer: status and message."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: bytes
    headers: Any
    query: str = ""

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ApiProblem(400, f"the body is not valid JSON: {exc}") from None


Handler = Callable[[Any, Request], tuple[int, Any]]  # (the Api, the request)


@dataclass(frozen=True)
class Route:
    method: str
    regex: re.Pattern
    handler: Handler
    access: str  # "public", "hook" (the API key or the hook key) or "key"
    max_body: int  # bytes


ROUTES: list[Route] = []


def route(method: str, pattern: str, access: str = "key",
          max_body: int = constants.API_MAX_BODY):
    """Register a handler for ``method`` and a path pattern with ``{name}`` parts."""
    regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, regex, handler, access, max_body))
        return handler

    return register


def find(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route of a request and its path parameters; ApiProblem 404 or 405."""
    allowed = []
    for found in ROUTES:
        match = found.regex.match(path)
        if not match:
            continue
        allowed.append(found.method)
        if found.method == method:
            return found, match.groupdict()
    if allowed:
        raise ApiProblem(405, f"{method} is not allowed here; use {', '.join(allowed)}")
    raise ApiProblem(404, f"no such endpoint: {method} {path}")
