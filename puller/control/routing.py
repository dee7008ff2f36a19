"""The API's requests, error answers and route table (filled by the endpoint modules)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable


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
ROUTES: list[tuple[str, re.Pattern, Handler, bool]] = []


def route(method: str, pattern: str, public: bool = False):
    """Register a handler for ``method`` and a path pattern with ``{name}`` parts."""
    regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

    def register(handler: Handler) -> Handler:
        ROUTES.append((method, regex, handler, public))
        return handler

    return register
