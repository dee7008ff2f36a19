"""Carry out a plan through the docker CLI, keeping puller's safety rules.

- Pull before remove: ``Executor.pull`` runs before any container is
  touched, and the planner makes a service whose image is missing WAIT, so it
  is never changed.
- Never leave the node empty: on a recreate (``_recreate``) the running
  container is renamed ``<name>.prev`` and stopped, not removed; if its
  successor cannot be created or started, the successor is removed and the
  predecessor is renamed back and started again (``_put_back``). The
  predecessor is removed only once the planner has judged the successor's
  probation passed (``planner._plan_probation``), from the containers alone.
- Start-first (``rollout: {order: start-first}``): the new container runs as
  ``<name>.next`` beside the old one, which keeps serving untouched
  (``_start_beside``); once the planner has judged it proven (``startfirst``),
  it takes the name and the old one stops and goes (``_promote``); when it
  failed, it is removed and the old one never stopped (RESTORE).
- No retry loop: ``remember`` folds the outcomes into the daemon's memory
  (pure), where a failed (definition, image) stays failed until one changes.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from .. import constants
from ..backoff import next_backoff
from ..errors import DockerError, PullerError
from ..images.reference import Reference
from .container import Container
from .docker import NAME_IN_USE, Docker
from .planner import Action, Backoff, Failure, Memory, Plan, Step, Target
from .policy import asked_for
from .startfirst import candidate_name, starts_first

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    step: Step
    error: str | None = None
    container_id: str | None = None
    restored: bool = False  # the predecessor was put back after a failure
    transient: bool = False  # failed before the new version was tried: retry later

    @property
    def ok(self) -> bool:
        return self.error is None


def run_options(target: Target, node: str, name: str | None = None) -> list[str]:
    """The options puller adds to the user's ``docker run`` line."""
    service = target.service
    return [
        "--name", name or service.name,
        "--detach",
        "--label", f"{constants.LABEL_SERVICE}={service.name}",
        "--label", f"{constants.LABEL_NODE}={node}",
        "--label", f"{constants.LABEL_HASH}={target.config_hash}",
        "--label", f"{constants.LABEL_IMAGE}={target.image.id}",
        "--label", f"{constants.LABEL_REF}={asked_for(service)}",
    ]


def run_command(target: Target, node: str, name: str | None = None) -> list[str]:
    """The full argv after ``docker`` for the service's container (named ``name``)."""
    service = target.service
    return service.run.command(service.image_ref, run_options(target, node, name))


class Executor:
    """Runs pull and container steps; steps of distinct services run concurrently."""

    def __init__(self, docker: Docker, node: str, workers: int = constants.DEPLOY_WORKERS,
                 pull_config: Callable[[str, bool], str | None] | None = None,
                 container_name: Callable[[str], str] = str,
                 on_pulled: Callable[[str, str, bool], None] | None = None):
        self.docker = docker
        self.node = node
        self.workers = workers
        self.container_name = container_name  # service name → container name
        # ref, refresh → the docker config dir to pull it with (None: the host's);
        # logs in to Google registries on the way.
        self.pull_config = pull_config or (lambda ref, refresh: None)
        # (image id, ref, whether the pull brought the image): the record of
        # pulled images, for image retention; None: nothing is recorded
        self.on_pulled = on_pulled

    # Pulls -------------------------------------------------------------------

    def pull(self, steps: Sequence[Step]) -> list[Outcome]:
        if not steps:
            return []
        with ThreadPoolExecutor(max_workers=min(constants.PULL_WORKERS, len(steps)),
                                thread_name_prefix="puller-pull") as pool:
            return list(pool.map(self.pull_one, steps))

    def pull_one(self, step: Step) -> Outcome:
        ref = step.image_ref
        assert ref is not None
        try:
            try:
                self._pull(ref, step.digest, refresh=False)
            except DockerError as exc:
                if not _unauthorized(exc.stderr):
                    raise
                # stale credentials: refresh once (a new Google token), retry once
                self._pull(ref, step.digest, refresh=True)
        except DockerError as exc:
            return Outcome(step, error=exc.stderr or str(exc))
        except PullerError as exc:
            return Outcome(step, error=str(exc))
        except OSError as exc:  # e.g. puller's docker config dir cannot be made
            return Outcome(step, error=f"cannot prepare the pull: {exc}")
        log.info("pulled %s%s: %s", ref, f" at {step.digest[:19]}" if step.digest else "",
                 step.reason)
        return Outcome(step)

    def _pull(self, ref: str, digest: str | None, refresh: bool) -> None:
        config = self.pull_config(ref, refresh)
        # exactly what was checked, then the tag is moved to it locally
        exact = Reference.parse(ref).with_digest(digest) if digest else ref
        before = self._local_id(exact) if self.on_pulled is not None else None
        self.docker.pull(exact, config_dir=config)
        if digest:
            self.docker.tag(exact, ref)
        if self.on_pulled is not None:
            after = self._local_id(exact)
            if after:  # brought: absent before (or, for a tag, another image)
                self.on_pulled(after, ref, before != "" and before != after)

    def _local_id(self, ref: str) -> str | None:
        """The id of the local image ``ref`` names; None if absent; "" if it
        cannot be told (then a pull never counts as bringing the image)."""
        try:
            image = self.docker.images([ref]).get(ref)
        except DockerError as exc:
            log.debug("cannot tell whether %s is present: %s", ref, exc)
            return ""
        return image.id if image is not None else None

    # Containers --------------------------------------------------------------

    def execute(self, plan: Plan) -> list[Outcome]:
        groups = [steps for steps in plan.by_service().values()
                  if any(step.action.changes_something for step in steps)]
        if not groups:
            return []
        if len(groups) == 1 or self.workers <= 1:
            return [outcome for steps in groups for outcome in self.run_steps(steps)]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(groups)),
                                thread_name_prefix="puller-deploy") as pool:
            results = list(pool.map(self.run_steps, groups))
        return [outcome for outcomes in results for outcome in outcomes]

    def run_steps(self, steps: Iterable[Step]) -> list[Outcome]:
        """One service's steps, in order (a background deploy job runs this)."""
        outcomes = []
        for step in steps:
            if not step.action.changes_something:
                continue
            outcome = self._run_step(step)
            outcomes.append(outcome)
            if outcome.ok:
                log.info("%s %s: %s", step.action.value, step.service, step.reason)
            else:
                log.warning("%s %s failed: %s%s", step.action.value, step.service, outcome.error,
                            " (the previous container runs again)" if outcome.restored else "")
        return outcomes

    def _run_step(self, step: Step) -> Outcome:
        try:
            if step.action is Action.CREATE:
                assert step.target is not None
                return self._create(step, step.target)
            if step.action is Action.RECREATE:
                assert step.target is not None and step.container is not None
                return self._recreate(step, step.target, step.container)
            assert step.container is not None
            if step.action is Action.PROMOTE:
                self._promote(step.container.id, step.replaces,
                              self.container_name(step.service))
            elif step.action is Action.REMOVE:
                self.docker.remove(step.container.id)
            elif step.action is Action.START:
                self.docker.start(step.container.id)
            elif step.action is Action.RESTORE:
                if step.failed is not None:
                    self._discard(step.failed)
                self._put_back(step.container, self.container_name(step.service), start=True)
            else:
                raise AssertionError(f"unexpected step {step}")
        except DockerError as exc:
            return Outcome(step, error=str(exc))
        return Outcome(step, container_id=step.container.id)

    def _create(self, step: Step, target: Target) -> Outcome:
        try:
            new_id = self._run_checked(target)
        except DockerError as exc:
            self._discard_failed(target)
            return Outcome(step, error=self.explain(exc, self.container_name(target.service.name)))
        return Outcome(step, container_id=new_id)

    def _recreate(self, step: Step, target: Target, old: Container) -> Outcome:
        name = self.container_name(target.service.name)
        if starts_first(target.service) and old.name == name:
            return self._start_beside(step, target, old, name)
        aside = name + constants.PREVIOUS_SUFFIX
        # A predecessor found already set aside (an update interrupted by a
        # crash) ran before: it is started again if its successor fails.
        was_running = old.running or old.is_previous
        try:
            # rename and stop at once: both must be done before the new one runs
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="puller-aside") as pool:
                stopped = pool.submit(self.docker.stop, old.id) if old.running else None
                if old.name != aside:
                    self.docker.rename(old.id, aside)
                if stopped is not None:
                    stopped.result()
        except DockerError as exc:
            # Nothing was started yet: make sure the old one is as it was.
            self._put_back(old, name, start=old.running, quiet=True)
            return Outcome(step, error=f"could not set the old container aside: {exc}",
                           transient=True)
        try:
            new_id = self._run_checked(target)
        except DockerError as exc:
            self._discard_failed(target)
            restored = self._put_back(old, name, start=was_running, quiet=True)
            return Outcome(step, error=self.explain(exc, name), restored=restored)
        if _health_timeout(target) > 0:
            # The predecessor stays, stopped, until the new one has proven itself
            # (judged by the planner on later passes).
            return Outcome(step, container_id=new_id)
        try:
            self.docker.remove(old.id)
        except DockerError as exc:
            log.warning("%s: could not remove the old container %s: %s", name, old.short_id, exc)
        return Outcome(step, container_id=new_id)

    def _start_beside(self, step: Step, target: Target, old: Container, name: str) -> Outcome:
        """Start-first: run the new container as ``<name>.next`` while ``old`` keeps
        serving, untouched. It takes the name once it has proven itself (judged
        by the planner on later passes), at once without a health timeout."""
        beside = candidate_name(name)
        try:
            new_id = self._run_checked(target, beside)
        except DockerError as exc:
            self._discard_failed(target, beside)
            return Outcome(step, error=self.explain(exc, beside))
        if _health_timeout(target) <= 0:
            try:
                self._promote(new_id, old, name)
            except DockerError as exc:
                return Outcome(step, error=f"could not give the new container the name: {exc}")
        return Outcome(step, container_id=new_id)

    def _promote(self, new_id: str, old: Container | None, name: str) -> None:
        """Start-first's swap: the old container steps aside (still running), the
        new one takes the name, then the old one stops and goes. Each step can be
        resumed: the planner finishes an interrupted swap from the names."""
        aside = name + constants.PREVIOUS_SUFFIX
        if old is not None and old.name != aside:
            self.docker.rename(old.id, aside)
        try:
            self.docker.rename(new_id, name)
        except DockerError:
            if old is not None:
                self._put_back(old, name, start=False, quiet=True)
            raise
        if old is None:
            return
        try:
            self.docker.stop(old.id)
            self.docker.remove(old.id)
        except DockerError as exc:  # a later pass removes a predecessor left over
            log.warning("%s: could not remove the old container %s: %s", name, old.short_id, exc)

    def _run_checked(self, target: Target, name: str | None = None) -> str:
        """``docker run`` the target (as ``name``, by default the service's
        container name); a container that is not running right after its start
        counts as a failure."""
        name = name or self.container_name(target.service.name)
        argv = run_command(target, self.node, name)
        new_id = self.docker.run(argv)
        started = self.docker.inspect_container(new_id or name)
        if started is None:
            raise DockerError(["docker", *argv], 0, "the new container vanished right after its start")
        failed = started.status in ("created", "dead", "removing") or (
            started.status == "exited" and started.exit_code != 0)
        if failed:
            raise DockerError(["docker", *argv], 0,
                              f"the new container {started.describe_state()} right after its start")
        return started.id

    def explain(self, exc: DockerError, name: str) -> str:
        """``exc`` for a person; when the name is in use, the holder's node is named."""
        holder = None
        if NAME_IN_USE in exc.stderr:
            try:
                holder = self.docker.inspect_container(name)
            except DockerError:
                pass
        return _explain(exc, name, holder)

    def _discard(self, failed: Container) -> None:
        """Remove a successor that failed its probation (ours: checked by label)."""
        if failed.node == self.node:
            self.docker.remove(failed.id)

    def _discard_failed(self, target: Target, name: str | None = None) -> None:
        """Remove what a failed ``docker run`` left behind under ``name`` (the
        service's container name by default) — but only if it is ours, with this
        very hash."""
        try:
            left = self.docker.inspect_container(name or self.container_name(target.service.name))
            if (left is not None and left.node == self.node
                    and left.config_hash == target.config_hash):
                self.docker.remove(left.id)
        except DockerError as exc:
            log.warning("%s: could not clean up the failed container: %s", target.service.name, exc)

    def _put_back(self, old: Container, name: str, start: bool, quiet: bool = False) -> bool:
        """Rename a predecessor back to the service name (whatever name it has
        now) and start it again."""
        try:
            current = self.docker.inspect_container(old.id)
            if current is not None and current.name != name:
                self.docker.rename(old.id, name)
            if start:
                self.docker.start(old.id)
        except DockerError as exc:
            if not quiet:
                raise
            log.error("%s: could not put the previous container %s back: %s", name, old.short_id, exc)
            return False
        return True


def _health_timeout(target: Target) -> float:
    timeout = target.service.health_timeout
    return constants.DEFAULT_HEALTH_TIMEOUT if timeout is None else timeout


def _unauthorized(stderr: str) -> bool:
    text = stderr.lower()
    return any(word in text for word in ("unauthorized", "authentication required", "denied"))


def _explain(exc: DockerError, name: str, holder: Container | None = None) -> str:
    """A failed run told for a person; a name in use says who holds it."""
    if NAME_IN_USE not in exc.stderr:
        return str(exc)
    other = holder.node if holder is not None else None
    if other:
        return (f"the container name {name!r} is taken by the container of puller node "
                f"{other!r}, which shares this Docker engine; give each node its own names: "
                f"start every node on this engine with -name-template {{node}}-{{service}} "
                f"({exc.stderr})")
    return (f"the container name {name!r} is taken by a container puller does not manage "
            f"on this node; rename or remove that container ({exc.stderr})")


def remember(memory: Memory, plan: Plan, pulls: Sequence[Outcome],
             outcomes: Sequence[Outcome], now: float) -> Memory:
    """Fold one pass's plan and outcomes into the memory the planner reads next time."""
    pull_errors = dict(memory.pull_errors)
    for outcome in pulls:
        ref = outcome.step.image_ref
        assert ref is not None
        if outcome.ok:
            pull_errors.pop(ref, None)
        else:
            pull_errors[ref] = outcome.error or "failed"
    failures = dict(memory.failures)
    # Restart backoff is forgotten for containers that are gone, and for those
    # that have kept running well past their last restart.
    seen = {step.container.id: step for step in plan.steps if step.container is not None}
    restarts = {
        cid: backoff for cid, backoff in memory.restarts.items()
        if cid in seen and not (seen[cid].container.running
                                and now > backoff.next_at + constants.START_BACKOFF_MAX)
    }
    for outcome in outcomes:
        step = outcome.step
        if step.action is Action.RESTORE and outcome.ok and step.failed is not None:
            failures[step.service] = Failure(step.failed.config_hash or "", step.reason, now)
            continue
        if step.action in (Action.CREATE, Action.RECREATE):
            assert step.target is not None
            if outcome.ok:
                failures.pop(step.service, None)
                continue
            old = failures.get(step.service)
            attempts = old.attempts + 1 if old and old.config_hash == step.target.config_hash else 1
            # A version that failed while its predecessor runs again is not
            # retried; a create, or a failure before the new version ran, is.
            had_previous = step.action is Action.RECREATE and not outcome.transient
            retry_at = None if had_previous else next_backoff(
                attempts, now, constants.CREATE_BACKOFF_MIN, constants.CREATE_BACKOFF_MAX)
            failures[step.service] = Failure(step.target.config_hash, outcome.error or "failed",
                                             now, retry_at, attempts)
        elif step.action is Action.START and step.container is not None:
            previous = restarts.get(step.container.id)
            attempts = previous.attempts + 1 if previous else 1
            restarts[step.container.id] = Backoff(attempts, next_backoff(
                attempts, now, constants.START_BACKOFF_MIN, constants.START_BACKOFF_MAX))
    return dataclasses.replace(memory, failures=failures, restarts=restarts,
                               pull_errors=pull_errors)
