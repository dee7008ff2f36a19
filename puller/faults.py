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
