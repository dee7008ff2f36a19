"""Log a fault that repeats once, not on every pass."""

from __future__ import annotations

import logging
from typing import Mapping


class FaultLog:
    """Tracks the faults of the latest pass: a new or changed fault is logged at
    WARNING, the same fault again only at DEBUG, a fault that went away at INFO."""

    def __init__(self, logger: logging.Logger):
        self.log = logger
        self.active: dict[str, str] = {}

    def update(self, faults: Mapping[str, str]) -> None:
        for key, message in faults.items():
            if self.active.get(key) != message:
                self.log.warning("%s", message)
            else:
                self.log.debug("still: %s", message)
        for key in set(self.active) - set(faults):
            # say what ended, not "resolved": a deleted file ends its fault too
            self.log.info("no longer: %s", self.active[key])
        self.active = dict(faults)


class OnceLog:
    """Logs a message at WARNING the first time it is seen under its key, and
    at DEBUG while it repeats unchanged (a peer that keeps sending garbage)."""

    def __init__(self, logger: logging.Logger):
        self.log = logger
        self._last: dict[str, str] = {}

    def warning(self, key: str, message: str) -> None:
        if self._last.get(key) != message:
            self.log.warning("%s", message)
            self._last[key] = message
        else:
            self.log.debug("%s", message)


class Outage:
    """Something the loop needs that keeps failing (the docker engine, a pass):
    one line when it starts, one when it ends ("docker is back after 42 s"),
    DEBUG in between; and how long to wait before trying again (doubling,
    capped), so an outage is not hammered."""

    def __init__(self, logger: logging.Logger, what: str):
        self.log = logger
        self.what = what
        self.since: float | None = None
        self.message: str | None = None
        self.failures = 0

    def failed(self, message: str, now: float) -> None:
        self.failures += 1
        if self.since is None:
            self.since = now
            self.log.error("%s", message)
        elif message != self.message:
            self.log.warning("%s", message)
        else:
            self.log.debug("still: %s", message)
        self.message = message

    def ok(self, now: float) -> None:
        if self.since is not None:
            self.log.info("%s after %.0f s", self.what, now - self.since)
        self.since, self.message, self.failures = None, None, 0

    def delay(self, interval: float, cap: float) -> float:
        """Seconds to the next try: the interval, doubled per failure, at most ``cap``."""
        if not self.failures:
            return interval
        return max(interval, min(max(interval, 1.0) * 2 ** min(self.failures - 1, 16), cap))
