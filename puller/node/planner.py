"""The pure heart of puller: desired services + actual containers → a plan.

Nothing here does I/O. ``plan_pulls`` says which images to pull before
anything else happens; ``plan`` compares each wanted service with the
containers of this node and returns one step per service and per orphan,
every step (no-ops included) with a reason a person can read.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AbstractSet, Callable, Iterable, Mapping, Sequence

from .. import constants
from ..errors import ImageReferenceError
from ..images.reference import Reference
from .container import Container, Image
from .definitions import Service
from .policy import Hold, hold
from .startfirst import candidate_name, judge

if TYPE_CHECKING:
    from ..images.freshness import Remote


@enum.unique
class Action(enum.Enum):
    PULL = "pull"
    CREATE = "create"
    RECREATE = "recreate"
    RESTORE = "restore"  # put a kept predecessor back in service
    PROMOTE = "promote"  # start-first: a proven new container takes the name, the old one goes
    START = "start"
    REMOVE = "remove"
    KEEP = "keep"  # nothing to do: up to date
    WAIT = "wait"  # something is wrong or backing off; nothing is done now
    HOLD = "hold"  # a new image waits for a person (update: notify|manual); nothing is done

    @property
    def changes_something(self) -> bool:
        return self not in (Action.KEEP, Action.WAIT, Action.HOLD)


@dataclass(frozen=True)
class Target:
    """What a service should run: its definition, the local image, and the drift hash."""

    service: Service
    image: Image
    config_hash: str


@dataclass(frozen=True)
class Step:
    action: Action
    service: str
    reason: str
    container: Container | None = None  # the existing container acted upon
    failed: Container | None = None  # for RESTORE: the successor that did not prove itself
    replaces: Container | None = None  # for PROMOTE: the old container that goes
    target: Target | None = None  # for CREATE / RECREATE
    image_ref: str | None = None  # for PULL: the ref to pull (and tag)
    digest: str | None = None  # for PULL: pull exactly this digest, then tag it as image_ref
    hold: Hold | None = None  # for HOLD: the update that waits (target: what would run)
    fault: bool = True  # for WAIT: something is wrong (False: an image is on its way)

    def __str__(self) -> str:
        return f"{self.action.value} {self.service}: {self.reason}"


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()

    @property
    def changes(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.action.changes_something)

    def by_service(self) -> dict[str, list[Step]]:
        grouped: dict[str, list[Step]] = {}
        for step in self.steps:
            grouped.setdefault(step.service, []).append(step)
        return grouped


@dataclass(frozen=True)
class Failure:
    """A deploy of (service, hash) that failed; not retried before ``retry_at``
    (never, when ``retry_at`` is None: the predecessor was put back instead)."""

    config_hash: str
    error: str
    at: float
    retry_at: float | None = None
    attempts: int = 1

    def blocks(self, config_hash: str, now: float) -> bool:
        if config_hash != self.config_hash:
            return False
        return self.retry_at is None or now < self.retry_at


@dataclass(frozen=True)
class Backoff:
    """Restarts of an exited container: how many, and not again before ``next_at``."""

    attempts: int
    next_at: float


@dataclass(frozen=True)
class Memory:
    """What the daemon remembers between passes (a snapshot, read by the planner)."""

    failures: Mapping[str, Failure] = field(default_factory=dict)  # by service
    restarts: Mapping[str, Backoff] = field(default_factory=dict)  # by container id
    pull_errors: Mapping[str, str] = field(default_factory=dict)  # image ref → error
    approved: Mapping[str, str] = field(default_factory=dict)  # service → image id approved
    announced: Mapping[str, str] = field(default_factory=dict)  # service → image id told of


def config_hash(run_canonical: Sequence[str], image_id: str) -> str:
    """sha256 over the canonical argv and the image id: the drift detector."""
    payload = json.dumps({"argv": list(run_canonical), "image": image_id}, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def release_digest(ref: str, image: Image | None, remote: "Remote | None") -> str | None:
    """The registry digest a local image was deployed as: the one the registry
    names for the tag when the image carries it. A multi-arch image carries
    both the index digest and its platform manifest's; only the index is the
    same on every node, so without the registry's word an image known by
    several digests names none (never a platform digest by chance)."""
    digests = local_digests(ref, image)
    if remote is not None and remote.digest in digests:
        return remote.digest
    if len(digests) == 1:
        return next(iter(digests))
    return None


def local_digests(ref: str, image: Image | None) -> set[str]:
    """The digests a local image is known by in ``ref``'s repository."""
    if image is None:
        return set()
    try:
        name = Reference.parse(ref).name
    except ImageReferenceError:
        return set()
    found = set()
    for entry in image.repo_digests:
        try:
            parsed = Reference.parse(entry)
        except ImageReferenceError:
            continue
        if parsed.name == name and parsed.digest:
            found.add(parsed.digest)
    return found


def plan_pulls(
    services: Mapping[str, Service],
    images: Mapping[str, Image | None],
    remotes: Mapping[str, "Remote"],
    checked: Iterable[str] | None = None,
) -> tuple[Step, ...]:
    """One PULL step per distinct image ref that needs it (a ref shared by
    several services is pulled once).

    ``remotes`` holds what the registry last said of each ref; ``checked``
    the refs asked this pass (all, when None). A tag is pulled, by digest, only
    when the registry's digest is not one the local image is known by; by tag
    when it is missing locally and the registry was never asked, or when a
    HEAD cannot tell (then only on passes that asked). A registry that failed
    is not pulled from before its backoff ends.
    """
    checked = set(remotes) if checked is None else set(checked)
    steps: list[Step] = []
    by_ref: dict[str, list[str]] = {}
    for service in services.values():
        by_ref.setdefault(service.image_ref, []).append(service.name)
    for ref, names in sorted(by_ref.items()):
        users = ", ".join(sorted(names))
        image = images.get(ref)
        remote = remotes.get(ref)
        if "@" in ref:  # pinned: a digest never changes, present is up to date
            if image is None:
                steps.append(Step(Action.PULL, users, f"{ref} is not present locally", image_ref=ref))
            continue
        if remote is not None and remote.fallback:
            if ref not in checked and image is not None:
                continue
            steps.append(Step(Action.PULL, users,
                              f"{ref}: the registry cannot tell its digest without a pull "
                              f"({remote.error})", image_ref=ref))
        elif remote is not None and remote.error:
            continue  # the registry failed: nothing to pull from; the daemon reports it
        elif remote is not None and remote.digest:
            have = local_digests(ref, image)
            if remote.digest not in have:
                was = f"this node has {sorted(have)[0][:19]}" if have else (
                    "not present locally" if image is None else "the local image has no digest")
                steps.append(Step(Action.PULL, users,
                                  f"{ref} is {remote.digest[:19]} in the registry; {was}",
                                  image_ref=ref, digest=remote.digest))
        elif image is None:
            steps.append(Step(Action.PULL, users, f"{ref} is not present locally", image_ref=ref))
    return tuple(steps)


def plan(
    services: Mapping[str, Service],
    containers: Iterable[Container],
    images: Mapping[str, Image | None],
    memory: Memory,
    now: float,
    defined: Iterable[str] = (),
    broken: Iterable[str] = (),
    complete: bool = True,
    remotes: Mapping[str, "Remote"] | None = None,
    container_name: Callable[[str], str] = str,
    pulling: frozenset[str] = frozenset(),
    waiting: Mapping[str, str] | None = None,
    known: Mapping[str, Image] | None = None,
) -> Plan:
    """Steps that bring this node's containers to ``services``.

    ``containers`` are this node's (labelled) containers; ``defined`` names
    every service defined in the directory (for any node), to tell "deleted"
    from "no longer matches this node"; containers of ``broken`` services
    (a bad file with no good definition to fall back on) are left alone, as is
    everything when the directory could not be read (``complete`` false).
    ``pulling`` names the images being pulled in the background; ``waiting``
    services that cannot be planned yet (a ``track:`` not resolved), with why:
    they wait, and their containers are left as they are. ``known`` holds
    images by id (those the containers were made from, for the versions an
    update policy names).
    """
    current, previous, odd, candidates = _by_role(containers, services, container_name)
    steps = _plan_misnamed(odd, current, previous)
    for name in sorted(services):
        steps.extend(_plan_service(
            services[name], current.get(name), previous.get(name), images, memory, now,
            remotes or {}, pulling, candidates.get(name), known or {},
        ))
    waiting = {name: why for name, why in (waiting or {}).items() if name not in services}
    steps.extend(Step(Action.WAIT, name, why, container=current.get(name))
                 for name, why in sorted(waiting.items()))
    steps.extend(_plan_orphans(services.keys() | waiting.keys(), current, previous, set(defined),
                               set(broken), complete, candidates))
    return Plan(tuple(steps))


def _by_role(containers: Iterable[Container], services: Mapping[str, Service],
             container_name: Callable[[str], str]
             ) -> tuple[dict[str, Container], dict[str, Container], dict[str, list[Container]],
                        dict[str, Container]]:
    """This node's containers by service: the current one, the kept predecessor,
    those under another name (a new -name-template), and the start-first
    candidate (a new container proving itself beside the current one)."""
    current: dict[str, Container] = {}
    previous: dict[str, Container] = {}
    odd: dict[str, list[Container]] = {}
    candidates: dict[str, Container] = {}
    for container in sorted(containers, key=lambda c: (c.name, c.id)):
        name = container.service
        if name is None:
            continue  # not labelled as a service: not ours to judge
        if container.name == container_name(name):
            current[name] = container
        elif container.name == container_name(name) + constants.PREVIOUS_SUFFIX:
            previous[name] = container
        elif container.name == candidate_name(container_name(name)):
            candidates[name] = container
        elif name in services:
            odd.setdefault(name, []).append(container)
        else:
            current.setdefault(name, container)
    return current, previous, odd, candidates


def _plan_misnamed(odd: dict[str, list[Container]], current: dict[str, Container],
                   previous: dict[str, Container]) -> list[Step]:
    """The first stands in as the predecessor when there is none (``previous``
    is updated); the rest are removed only once the service has a container of
    its own."""
    steps = []
    for name, others in sorted(odd.items()):
        if name not in current and name not in previous:
            previous[name] = others.pop(0)
        for container in others:
            if name in current:
                steps.append(Step(Action.REMOVE, name,
                                  f"container {container.name} ({container.short_id}) belongs "
                                  f"to {name} but has an unexpected name", container=container))
            else:
                steps.append(Step(Action.KEEP, name,
                                  f"container {container.name} waits for {name}'s own",
                                  container=container))
    return steps


def _plan_orphans(services: AbstractSet[str], current: dict[str, Container],
                  previous: dict[str, Container], defined: set[str], broken: set[str],
                  complete: bool, candidates: Mapping[str, Container]) -> list[Step]:
    """Containers of services that are not (or no longer) this node's."""
    steps = []
    for name in sorted(set(current) | set(previous) | set(candidates)):
        if name in services:
            continue
        for container in (current.get(name), previous.get(name), candidates.get(name)):
            if container is None:
                continue
            if not complete or name in broken:
                steps.append(Step(
                    Action.KEEP, name,
                    "its definition cannot be read; leaving the container as it is",
                    container=container,
                ))
            elif name in defined:
                steps.append(Step(
                    Action.REMOVE, name, "service no longer matches this node", container=container
                ))
            else:
                steps.append(Step(
                    Action.REMOVE, name, "service definition was deleted", container=container
                ))
    return steps


def _plan_service(
    service: Service,
    current: Container | None,
    previous: Container | None,
    images: Mapping[str, Image | None],
    memory: Memory,
    now: float,
    remotes: Mapping[str, "Remote"],
    pulling: frozenset[str] = frozenset(),
    candidate: Container | None = None,
    known: Mapping[str, Image] | None = None,
) -> list[Step]:
    image = images.get(service.image_ref)
    if image is None:
        return _plan_without_image(service, current, memory, remotes, pulling)
    wanted = config_hash(service.run.canonical(), image.id)
    target = Target(service, image, wanted)
    failure = memory.failures.get(service.name)
    blocked = failure if failure is not None and failure.blocks(wanted, now) else None
    if candidate is not None:  # start-first: a new container proving itself beside the old
        timeout = _health_timeout(service)
        moves, whole = judge(candidate, current, previous, wanted,
                             blocked.error if blocked else None,
                             _probation_verdict(candidate, timeout, now), timeout)
        steps = [Step(Action[m.action], service.name, m.reason, container=m.container,
                      failed=m.failed, replaces=m.replaces) for m in moves]
        return steps if whole else steps + _plan_service(
            service, current, previous, images, memory, now, remotes, pulling, None, known)
    if current is None:
        held = _hold(service, previous, target, memory, remotes, known or {}) if previous else None
        return _plan_without_current(service, previous, target, blocked, held)
    held = _hold(service, current, target, memory, remotes, known or {})
    steps: list[Step] = []
    if previous is not None:
        # an update that waits is not wanted yet: it does not end a probation early
        probation = _plan_probation(service, current, previous,
                                    current.config_hash or "" if held else wanted, now)
        if probation is None or probation.action is Action.RESTORE:
            return [probation or Step(Action.KEEP, service.name,
                                      f"new container on probation for "
                                      f"{_health_timeout(service):g} s", container=current)]
        steps.append(probation)
    return steps + _plan_current(service, current, image, target, blocked, memory, now, held)


def _hold(service: Service, current: Container, target: Target, memory: Memory,
          remotes: Mapping[str, "Remote"], known: Mapping[str, Image]) -> Hold | None:
    """The update policy's word on replacing ``current`` by ``target`` (node.policy)."""
    if service.update == constants.UPDATE_POLICIES[0] or current.config_hash == target.config_hash:
        return None
    made_from = current.created_from or ""
    same = bool(made_from) and config_hash(service.run.canonical(), made_from) == current.config_hash
    old, ref = known.get(made_from), service.image_ref
    digests = (release_digest(ref, old, None), release_digest(ref, target.image, remotes.get(ref)))
    return hold(service, current, target.image, old, memory.approved.get(service.name), same,
                digests)


def _plan_without_image(service: Service, current: Container | None, memory: Memory,
                        remotes: Mapping[str, "Remote"], pulling: frozenset[str]) -> list[Step]:
    ref = service.image_ref
    remote = remotes.get(ref)
    error = memory.pull_errors.get(ref) or (remote.error if remote else None)
    why = ("pulling" if ref in pulling else f"pull failed: {error}" if error
           else "not pulled yet")
    keeping = "; keeping the current container" if current is not None else ""
    return [Step(Action.WAIT, service.name, f"image {ref} is not available ({why}){keeping}",
                 container=current, fault=bool(error) and ref not in pulling)]


def _plan_without_current(service: Service, previous: Container | None, target: Target,
                          blocked: Failure | None, held: Hold | None = None) -> list[Step]:
    name = service.name
    if previous is not None:
        if blocked:
            return [Step(Action.RESTORE, name,
                         f"putting the previous container back: the new one failed ({blocked.error})",
                         container=previous)]
        if held:  # its image is what runs until a person approves the new one
            return [Step(Action.RESTORE, name, f"putting the previous container back: "
                                               f"{held.reason()}", container=previous)]
        return [Step(Action.RECREATE, name,
                     "finishing an update that was interrupted", container=previous, target=target)]
    if blocked:
        # no countdown in the reason: a fault logged once must read the same each pass
        retry = ("retried with backoff" if blocked.retry_at
                 else "not retried until the definition or the image changes")
        return [Step(Action.WAIT, name, f"could not be created: {blocked.error}; {retry}")]
    return [Step(Action.CREATE, name, f"no container yet; running {service.image_ref}",
                 target=target)]


def _plan_probation(service: Service, current: Container, previous: Container, wanted: str,
                    now: float) -> Step | None:
    """A kept predecessor means the current container is on probation: it must
    stay up (and healthy) for health_timeout seconds from its start. Judged from
    the containers alone, so a restarted daemon judges the same way. None while
    undecided; a RESTORE when it failed; the predecessor's REMOVE when it passed."""
    verdict = _probation_verdict(current, _health_timeout(service), now)
    if verdict is None and current.config_hash != wanted:
        verdict = ""  # a newer version is wanted: the trial ends early, as passed
    if verdict is None:
        return None
    if verdict:
        return Step(Action.RESTORE, service.name,
                    f"the new container {verdict}; putting the previous one back",
                    container=previous, failed=current)
    return Step(Action.REMOVE, service.name,
                "the new container proved itself; removing its predecessor", container=previous)


def _plan_current(service: Service, current: Container, image: Image, target: Target,
                  blocked: Failure | None, memory: Memory, now: float,
                  held: Hold | None = None) -> list[Step]:
    name = service.name
    if current.config_hash != target.config_hash and held is None:
        if blocked:
            return [Step(Action.KEEP, name,
                         f"the new version failed on this node ({blocked.error}); "
                         "keeping the current container until the definition or the image changes",
                         container=current)]
        return [Step(Action.RECREATE, name, _drift_reason(current, image, service.image_ref),
                     container=current, target=target)]
    # a held update: the container keeps its image, started again if it exits
    waiting = [Step(Action.HOLD, name, held.reason(), container=current, target=target,
                    hold=held)] if held else []
    if current.running:
        return waiting or [Step(Action.KEEP, name, f"up to date ({current.status})",
                                container=current)]
    backoff = memory.restarts.get(current.id)
    if backoff is not None and now < backoff.next_at:
        return [Step(Action.WAIT, name, f"{current.describe_state()}; started again after a backoff",
                     container=current), *waiting]
    return [Step(Action.START, name, current.describe_state(), container=current), *waiting]


def _health_timeout(service: Service) -> float:
    if service.health_timeout is None:
        return constants.DEFAULT_HEALTH_TIMEOUT
    return service.health_timeout


def _probation_verdict(current: Container, timeout: float, now: float) -> str | None:
    """Why a container on probation failed; "" when it passed; None while undecided."""
    if current.status != "running":
        return current.describe_state()
    if current.restart_count > 0:
        return f"restarted {current.restart_count} time(s)"
    if current.health == "unhealthy":
        return "turned unhealthy"
    started = current.started
    if started is not None and now < started + timeout:
        return None
    if current.health not in (None, "healthy"):
        return f"was still {current.health} when its health timeout ran out"
    return ""


def _drift_reason(current: Container, image: Image, ref: str) -> str:
    if current.created_from and current.created_from != image.id:
        return f"image changed: {ref} is now {image.id[7:19]} (was {current.created_from[7:19]})"
    return "definition changed"

