"""A definitions directory, read on each pass.

``DefinitionDir`` keeps, per file, the last good definition in force while
the file is broken: a bad file is reported, never rewritten, never deleted,
and never stops the others. A file that vanishes for less than
``DELETE_GRACE`` (an editor saving by rename) is no deletion; ``name.yml``
beside ``name.yaml`` is reported, and nothing changes for that service until
one of them goes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from .. import constants
from ..errors import DefinitionError
from .definitions import Scan, Service, TwoFiles, is_definition_file, read_definition

log = logging.getLogger(__name__)


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
        in_grace = self._forget_vanished(set(names))
        doubled = _doubled(names)
        for stem, files in sorted(doubled.items()):
            errors.append(TwoFiles([os.path.join(self.path, f) for f in files]))
            kept = [self._last_good[f] for f in files if f in self._last_good]
            if kept:  # nothing changes for it: the last good definition stays
                services.setdefault(stem, kept[0])
            else:
                broken.add(stem)
        for filename in names:
            if os.path.splitext(filename)[0] in doubled:
                continue
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

    def _forget_vanished(self, present: set[str]) -> list[Service]:
        """Forget files that stayed away; the services of those away for a moment."""
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
        return in_grace

    def _last_good_by_name(self) -> dict[str, Service]:
        return {service.name: service for service in self._last_good.values()}


def _doubled(filenames: list[str]) -> dict[str, list[str]]:
    """Services with more than one file (``name.yml`` and ``name.yaml``)."""
    by_stem: dict[str, list[str]] = {}
    for filename in filenames:
        by_stem.setdefault(os.path.splitext(filename)[0], []).append(filename)
    return {stem: files for stem, files in by_stem.items() if len(files) > 1}
