"""Image retention at the edge: after a deploy proved itself, remove the
images puller pulled that ``retention.removable`` lets go.

The facts are read in an order that keeps a pull finishing meanwhile safe:
first the record of pulls (an image recorded later is not considered), then
the images in use, the local images, and what the current definitions'
references resolve to (a tag a pull just moved names the new image). Removal
is ``docker image rm`` without force: a refusal by the engine (the image got a
container or a tag meanwhile) is logged at DEBUG and never fatal. The daemon
runs it in a thread of its own, off the pass; tests run it inline.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

from .. import constants
from ..errors import DockerError, PullerError
from .docker import Docker
from .executor import Outcome
from .history import History
from .planner import Action
from .pulled import PulledImages
from .retention import kept_releases, removable

log = logging.getLogger(__name__)


def proved_itself(outcomes: Sequence[Outcome]) -> bool:
    """A deploy proved itself in this pass: a predecessor kept during a
    probation was removed, or a release without probation (health_timeout 0)
    replaced its predecessor."""
    for outcome in outcomes:
        step = outcome.step
        if not outcome.ok:
            continue
        if (step.action is Action.REMOVE and step.container is not None
                and step.container.is_previous):
            return True
        if step.action is Action.RECREATE and step.target is not None:
            timeout = step.target.service.health_timeout
            if (constants.DEFAULT_HEALTH_TIMEOUT if timeout is None else timeout) <= 0:
                return True
    return False


class Pruner:
    """Owns its worker thread once ``in_background()``; ``close()`` is idempotent."""

    def __init__(self, docker: Docker, pulled: PulledImages, history: History, keep: int):
        self.docker = docker
        self.pulled = pulled
        self.history = history
        self.keep = keep
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._queued = False
        self._refs: frozenset[str] = frozenset()
        self._closed = False

    def in_background(self) -> None:
        """From now on a run happens in a thread of its own, never in the pass."""
        with self._lock:
            if self._pool is None and not self._closed:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="puller-prune")

    def after_pass(self, outcomes: Sequence[Outcome], refs: Iterable[str]) -> None:
        """Run retention if a deploy proved itself in the pass; ``refs`` are the
        current definitions' image references."""
        if self.keep <= 0 or not proved_itself(outcomes):
            return
        wanted = frozenset(refs)
        with self._lock:
            self._refs = wanted
            if self._closed or (self._pool is not None and self._queued):
                return  # a queued run will read the newest refs
            if self._pool is not None:
                self._queued = True
                self._pool.submit(self._background)
                return
        self._run_logged(wanted)

    def _background(self) -> None:
        with self._lock:
            self._queued = False
            refs = self._refs
        self._run_logged(refs)

    def _run_logged(self, refs: frozenset[str]) -> None:
        try:
            self.run(refs)
        except PullerError as exc:
            log.warning("image retention skipped this time: %s", exc)
        except Exception:  # never let retention break a pass or kill its thread
            log.exception("image retention failed unexpectedly")

    def run(self, refs: Iterable[str]) -> tuple[str, ...]:
        """One retention run; the ids of the images removed."""
        pulled = self.pulled.snapshot()
        if not pulled or self.keep <= 0:
            return ()
        in_use = self.docker.image_ids_in_use()
        local = self.docker.images_by_id(pulled)
        self.pulled.forget(frozenset(pulled) - local.keys())
        current = {image.id for image in self.docker.images(refs).values() if image is not None}
        kept = kept_releases(self.history.all_revisions(), self.keep)
        removed = set()
        for image_id in removable(pulled, local, in_use, current, kept, self.keep):
            try:
                self.docker.remove_image(image_id)
            except DockerError as exc:
                log.debug("image %s stays: the engine refused to remove it: %s",
                          image_id[7:19], exc.stderr or exc)
                continue
            log.info("removed image %s (%s): puller pulled it, no container uses it, and it is "
                     "not among the last %d release(s) of any service", image_id[7:19],
                     ", ".join(pulled[image_id]) or "untagged", self.keep)
            removed.add(image_id)
        self.pulled.forget(frozenset(removed))
        return tuple(sorted(removed))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
