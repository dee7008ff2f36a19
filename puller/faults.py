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
            self.log.info("resolved: %s", key)
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
