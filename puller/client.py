"""Talk to the local daemon's HTTP API (for the CLI client)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .errors import PullerError


class DaemonUnreachable(PullerError):
    def __init__(self, url: str, reason: str):
        self.url = url
        super().__init__(f"no puller daemon at {url} — is `puller -d` running? ({reason}); "
                         "-port or -api picks another")


class ApiError(PullerError):
    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message if status != 401 else
                         f"{message} (set PULLER_APIKEY or -apikey to the daemon's key)")


class Client:
    def __init__(self, base_url: str, apikey: str | None = None, timeout: float = 330.0):
        self.base_url = base_url.rstrip("/")
        self.apikey = apikey
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             content_type: str = "application/json") -> Any:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        if self.apikey:
            headers["Authorization"] = f"Bearer {self.apikey}"
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                try:
                    message = json.loads(exc.read()).get("error") or exc.reason
                except (ValueError, AttributeError):
                    message = str(exc.reason)
            raise ApiError(exc.code, f"{message} (HTTP {exc.code})") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DaemonUnreachable(self.base_url, str(getattr(exc, "reason", exc))) from None
