"""One reconcile pass of one node, and what it shows of the node.

``tick`` reads the definitions, asks the registries about the tags that are
due, reads the facts (one ``docker ps``, one batched ``docker image
inspect``), plans (pure, ``planner``), executes (``executor``) and remembers
what failed (``memoryfile``) and what ran (``history``). The daemon runs it in
its loop; tests run one pass with an injected clock.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Mapping, Protocol

from .. import constants
from ..errors import DefinitionError, ImageReferenceError, PullerError
from ..faults import FaultLog
from ..images.freshness import Freshness, Remote
from ..images.gcloud import GoogleLogins
from ..images.hooks import Push
from ..images.reference import Reference
from ..images.tracking import Tracker
from .approvals import approve, described, pending, settle
from .container import Container, Image
from .definitions import Scan, Service, definition_fields
from .deploys import DeployJobs
from .directory import DefinitionDir
from .docker import Docker
from .executor import Executor, Outcome, remember
from .history import History
from .inflight import InFlight, job_steps, leave_alone
from .memoryfile import load_memory, save_memory
from .planner import (Action, Memory, Plan, config_hash, local_digests, plan, plan_pulls,
                      release_digest)
from .pruner import Pruner
from .pulled import PulledImages
from .pulls import PullJobs
from .report import PassReport
from .rollouts import Gated, Rollouts
from .tracked import resolve_services

log = logging.getLogger(__name__)


class Settings(Protocol):
    """What a pass needs of the daemon's configuration."""

    node: str
    directory: str
    state_dir: str
    google_registries: tuple[str, ...]
    keep_images: int  # releases per service whose pulled images stay; 0: retention off

    def container_name(self, service: str) -> str: ...


class Reconciler:
    """One node's passes, with the memory they keep between them."""

    def __init__(self, config: Settings, docker: Docker | None = None,
                 freshness: Freshness | None = None):
        self.config = config
        self.node = config.node
        self.directory = config.directory
        self.docker = docker or Docker()
        self.definitions = DefinitionDir(config.directory)
        self.freshness = freshness or Freshness(google_registries=config.google_registries)
        self.tracker = Tracker(self.freshness, os.path.join(config.state_dir, "tracking.json"))
        self.logins = GoogleLogins(self.docker, self.freshness.google,
                                   os.path.join(config.state_dir, "docker"),
                                   config.google_registries)
        self.pulled = PulledImages(os.path.join(config.state_dir, "pulled.json"))
        self.executor = Executor(self.docker, config.node, pull_config=self.logins.config_for,
                                 container_name=config.container_name,
                                 on_pulled=self.pulled.note if config.keep_images > 0 else None)
        self.memory_path = os.path.join(config.state_dir, "memory.json")
        self.memory = load_memory(self.memory_path)
        self.history = History(os.path.join(config.state_dir, "history.json"), config.node)
        self.pruner = Pruner(self.docker, self.pulled, self.history, config.keep_images)
        self.last_report: PassReport | None = None
        self.faults = FaultLog(log)
        self.passes = 0
        self.pull_jobs: PullJobs | None = None
        self.known_images: dict[str, Image] = {}  # by id: images never change
        self.unknown_images: set[str] = set()  # ids docker no longer has: not asked again
        self.deploy_jobs: DeployJobs | None = None
        self.rollouts = Rollouts(os.path.join(config.state_dir, "rollouts.json"), config.node,
                                 self.history, config.container_name)

    def tick(self, now: float | None = None, pull_due: bool = False,
             check: Iterable[str] = (), pushes: Iterable[Push] = (),
             approvals: Mapping[str, str] | None = None) -> PassReport:
        """Run one reconcile pass.

        ``pull_due`` asks the registry about every image; otherwise only images
        never asked about are, plus those of the services in ``check`` and the
        tags in ``pushes`` (a push's digest is never taken as is: the registry
        is asked). Pulls run within the pass,
        unless ``pull_in_background`` set a ``PullJobs``: then the pass starts
        them and goes on without their images. Container steps too, unless
        ``deploy_in_background`` set ``DeployJobs``: then the pass starts one
        job per service it changes, leaves services with a job in flight alone,
        and reports (and remembers) the outcomes of the jobs that ended.
        ``approvals`` (service → image id) are the waiting updates a person
        approved.
        """
        now = time.time() if now is None else now
        calls_before = self.docker.calls
        self.passes += 1
        scan = self.definitions.scan()
        services = {name: service for name, service in scan.services.items()
                    if service.matches(self.config.node)}
        # track: ranges become tags first, so all that follows sees a fixed tag
        services, waiting = resolve_services(services, self.tracker, now, pull_due, check, pushes,
                                             prune=scan.complete)
        scan = dataclasses.replace(scan, services={**scan.services, **services})
        remotes = self._check_registries(services, now, pull_due, check, pushes)
        # before the containers are read: what a job that ended did is in them
        finished, deploying = self.deploy_jobs.take() if self.deploy_jobs else ([], {})
        # a service with a rollout: pinned to its release's digest, held, or reverted
        gated = self.rollouts.gate(scan.services, services, self.freshness.remotes(), now,
                                   self._local_digest)
        images, pulls, containers = self._read_facts(gated.services, remotes)
        kept_before = _kept(self.memory)
        self.memory = _approved(self.memory, approvals or {})
        the_plan = leave_alone(gated.explain(
            plan(gated.services, containers, images, self.memory, now,
                 defined=scan.services.keys(), broken=scan.broken | set(gated.held),
                 complete=scan.complete, remotes=self.freshness.remotes(),
                 container_name=self.config.container_name, pulling=self.pulling(),
                 waiting=waiting, known=self._made_from(gated.services, images, containers))),
            deploying, now)
        outcomes = self._execute(the_plan, finished, deploying, now)
        if outcomes and self.deploy_jobs is None:  # what runs now, for status
            containers = self.docker.containers(self.config.node)
        announced = self._remember(the_plan, pulls, outcomes, gated.services, images, containers,
                                   kept_before, now)
        self._observe(services, gated, images, containers, now)
        # after the history has the new release: the last N releases count it
        self.pruner.after_pass(outcomes, {s.image_ref for s in scan.services.values()}
                               | {s.image_ref for s in gated.services.values()})
        faults = self._faults(scan, the_plan)
        self.faults.update(faults)
        report = PassReport(scan, the_plan, now, self.freshness.remotes(), images,
                            tuple(containers), tuple(pulls), tuple(outcomes),
                            self.docker.calls - calls_before, faults, announced,
                            frozenset(deploying))
        self.last_report = report
        return report

    def _observe(self, services: Mapping[str, Service], gated: Gated,
                 images: Mapping[str, Image | None], containers: list[Container],
                 now: float) -> None:
        """Rollouts settle (a release taken here proven or failed); the history
        records the file's fields, and only a release taken for them."""
        self.rollouts.settle(gated, containers, images, self.memory.failures, now)
        deployed = self._deployed(gated.services, images, containers)
        self.history.observe(
            {name: definition_fields(service) for name, service in services.items()},
            {name: digest for name, digest in deployed.items() if gated.taken(name)}, now)

    def _remember(self, the_plan: Plan, pulls: list[Outcome], outcomes: list[Outcome],
                  services: Mapping[str, Service], images: Mapping[str, Image | None],
                  containers: list[Container], kept_before: tuple, now: float
                  ) -> tuple[str, ...]:
        """Fold the pass into the memory (saved when what it keeps changed); the
        services whose waiting new image is told of now."""
        memory = remember(self.memory, the_plan, pulls, outcomes, now)
        memory, announced = settle(memory, the_plan, services, images, containers)
        if _kept(memory) != kept_before:
            save_memory(self.memory_path, memory)
        self.memory = memory
        return announced

    def _execute(self, the_plan: Plan, finished: list[Outcome],
                 deploying: dict[str, InFlight], now: float) -> list[Outcome]:
        """Run the plan's changes now, their outcomes; or, with ``deploy_jobs``,
        start them as jobs (added to ``deploying``) and return ``finished``,
        the outcomes of the jobs that ended before this pass."""
        for step in the_plan.steps:
            if not step.action.changes_something:
                log.debug("%s", step)
        if self.deploy_jobs is None:
            return self.executor.execute(the_plan)
        deploying.update(self.deploy_jobs.start(job_steps(the_plan), now))
        return finished

    def _check_registries(self, services: Mapping[str, Service], now: float, pull_due: bool,
                          check: Iterable[str], pushes: Iterable[Push]) -> dict[str, Remote]:
        """Ask the registries about the tags that are due; what they said this pass."""
        tags = {service.image_ref for service in services.values()
                if "@" not in service.image_ref}
        forced = {services[name].image_ref for name in check if name in services} & tags
        # a push notification is only a trigger: whoever can send one could name
        # any digest, so the registry's manifest HEAD says what the tag is now
        forced |= {ref for push in pushes for ref in tags if push.matches(ref)}
        known = self.freshness.remotes()
        due = tags if pull_due else {ref for ref in tags if ref not in known}
        remotes = self.freshness.check(due, now, force=forced)
        for push in pushes:
            for ref in tags:
                remote = remotes.get(ref)
                if push.digest and push.matches(ref) and remote and remote.digest != push.digest:
                    log.debug("%s: a push notification named %s; the registry says %s",
                              ref, push.digest, remote.digest or remote.error)
        self.freshness.forget(tags)
        return remotes

    def _made_from(self, services: Mapping[str, Service], images: Mapping[str, Image | None],
                   containers: Iterable[Container]) -> dict[str, Image]:
        """The images containers were made from, by id, for the versions an update
        policy names; a docker call only for one no pass has seen (after a restart)."""
        containers = list(containers)
        keep = {c.created_from for c in containers if c.created_from}
        known = {image_id: self.known_images[image_id] for image_id in keep
                 if image_id in self.known_images}
        known.update((image.id, image) for image in images.values() if image)
        gated = {name for name, service in services.items()
                 if service.update != constants.UPDATE_POLICIES[0]}
        missing = {c.created_from for c in containers
                   if c.service in gated and c.created_from and c.created_from not in known
                   and c.created_from not in self.unknown_images}
        if missing:
            try:
                known.update(self.docker.images_by_id(missing))
                self.unknown_images |= missing - set(known)
            except PullerError as exc:
                log.debug("cannot inspect the images containers were made from: %s", exc)
        self.known_images = known
        return known

    def _read_facts(self, services: Mapping[str, Service], remotes: Mapping[str, Remote]
                    ) -> tuple[dict[str, Image | None], list[Outcome], list[Container]]:
        """The images (after the pulls they need) and this node's containers."""
        refs = {service.image_ref for service in services.values()}
        # The containers are read while the images are looked at and pulled:
        # both are on the path from an edit to its container.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="puller-facts") as pool:
            containers_read = pool.submit(self.docker.containers, self.config.node)
            finished = self.pull_jobs.take_finished() if self.pull_jobs else []
            images = self.docker.images(refs)
            steps = plan_pulls(services, images, {**self.freshness.remotes(), **remotes},
                               checked=remotes)
            if self.pull_jobs is not None:
                in_flight = self.pull_jobs.in_flight()
                self.pull_jobs.start([s for s in steps if s.image_ref not in in_flight])
                pulls = finished
            else:
                pulls = self.executor.pull(steps)
                if pulls:
                    images = self.docker.images(refs)
            containers = containers_read.result()
        return images, pulls, containers

    def _local_digest(self, ref: str) -> str | None:
        """The registry digest the local image of ``ref`` is known by (one docker call)."""
        try:
            return release_digest(ref, self.docker.images([ref]).get(ref), None)
        except PullerError as exc:
            log.debug("cannot inspect %s: %s", ref, exc)
            return None

    def pull_in_background(self, on_done: Callable[[], None]) -> None:
        """From now on pulls run as background jobs; ``on_done`` when one ends."""
        if self.pull_jobs is None:
            self.pull_jobs = PullJobs(self.executor, on_done)

    def deploy_in_background(self, on_done: Callable[[], None]) -> None:
        """From now on container steps run as background jobs, one per service;
        ``on_done`` when one ends."""
        if self.deploy_jobs is None:
            self.deploy_jobs = DeployJobs(self.executor, on_done)

    def finish_deploys(self, timeout: float = constants.DEPLOY_CLOSE_WAIT) -> None:
        """Stop taking deploy jobs; wait (bounded) for those in flight and keep
        what they did in the memory (a failure stays failed after a restart)."""
        if self.deploy_jobs is None:
            return
        self.deploy_jobs.close(timeout)
        finished, _ = self.deploy_jobs.take()
        if finished:
            last = self.last_report.plan if self.last_report else Plan()
            self.memory = remember(self.memory, last, [], finished, time.time())
            save_memory(self.memory_path, self.memory)

    def pulling(self) -> frozenset[str]:
        """The images being pulled in the background now."""
        return self.pull_jobs.in_flight() if self.pull_jobs is not None else frozenset()

    def _deployed(self, services: Mapping[str, Service], images: Mapping[str, Image | None],
                  containers: Iterable[Container]) -> dict[str, str]:
        """The digest each service runs, once its container is up to date (for
        the history). A container on probation counts: it served, and a newer
        edit may end its probation before it is judged."""
        current = {c.service: c for c in containers
                   if c.service and c.name == self.config.container_name(c.service)}
        remotes = self.freshness.remotes()
        deployed = {}
        for name, service in services.items():
            container, image = current.get(name), images.get(service.image_ref)
            if (container is None or image is None or not container.running
                    or container.image_id != image.id
                    or container.config_hash != config_hash(service.run.canonical(), image.id)):
                continue
            digest = service.digest or release_digest(service.image_ref, image,
                                                      remotes.get(service.image_ref))
            if digest:
                deployed[name] = digest
        return deployed

    def _faults(self, scan: Scan, the_plan: Plan) -> dict[str, str]:
        faults = {error.path: definition_fault(error, scan) for error in scan.errors}
        faults.update(self.tracker.faults())
        for ref, remote in self.freshness.remotes().items():
            if remote.error and not remote.fallback:
                faults[f"registry {ref}"] = f"{ref}: {remote.error}; the running containers stay"
            elif remote.fallback:
                faults[f"registry {ref}"] = (f"{ref}: cannot check without pulling "
                                             f"({remote.error}); falling back to docker pull")
        for step in the_plan.steps:
            if step.action is Action.WAIT and step.fault:
                faults[f"service {step.service}"] = f"{step.service}: {step.reason}"
        return faults

    def status(self) -> dict:
        """This node's view of its services, from the latest pass (plain JSON data)."""
        report = self.last_report
        node = {"node": self.config.node, "directory": self.config.directory,
                "passes": self.passes, "last_pass": report.at if report else None,
                "services": {}}
        rollouts = self.rollouts.status()
        if rollouts:
            node["rollouts"] = rollouts
        if report is None:
            return node
        errors = {step.service: step.reason for step in report.plan.steps
                  if step.action is Action.WAIT}
        for outcome in report.outcomes:
            if not outcome.ok:
                errors[outcome.step.service] = outcome.error
        for name, failure in self.memory.failures.items():
            errors.setdefault(name, failure.error)
        for error in report.scan.errors:
            errors.setdefault(os.path.splitext(os.path.basename(error.path))[0], str(error))
        containers = {c.service: c for c in report.containers
                      if c.service is not None
                      and c.name == self.config.container_name(c.service)}
        running = self._running_images(report, containers.values())
        for name, service in sorted(report.scan.services.items()):
            if service.matches(self.config.node):
                node["services"][name] = self._service_status(
                    service, report, containers.get(name), running, errors.get(name))
        return node

    def rollout(self, name: str) -> dict | None:
        """Where the rollout of ``name`` stands, as this node sees it (None: no rollout)."""
        return self.rollouts.status().get(name, {}).get("view")

    def _running_images(self, report: PassReport, containers: Iterable[Container]
                        ) -> dict[str, Image]:
        """The image of each running container by id; a docker call only for
        images the pass did not look at (a release that failed and was put back)."""
        known = {image.id: image for image in report.images.values() if image is not None}
        missing = {c.image_id for c in containers if c.image_id and c.image_id not in known}
        if missing:
            try:
                known.update(self.docker.images_by_id(missing))
            except PullerError as exc:
                log.debug("cannot inspect the running images: %s", exc)
        return known

    def _service_status(self, service: Service, report: PassReport, container: Container | None,
                        running: Mapping[str, Image], error: str | None) -> dict:
        ref = service.image_ref
        remote = report.remotes.get(ref)
        image = running.get(container.image_id) if container and container.image_id else None
        digest = release_digest(ref, image, remote)
        if digest is None and image is not None:
            digest = min(local_digests(ref, image), default=None)
        failure = self.memory.failures.get(service.name)
        wanted = report.images.get(ref)
        if failure is not None and container is not None and image is not None and (
                wanted is None or image.id != wanted.id):
            error = (f"{service.digest or service.tag} failed: {failure.error}; running "
                     f"{_image_label(ref, image)} ({(digest or image.id)[7:19]})")
        tracking = {"track": service.track, "resolved": service.tag or None} if service.track else {}
        held = pending(report.plan, service.name)
        return {
            **tracking,
            "image": ref,
            "update_policy": service.update,
            "update": described(held) if held else None,
            "state": container.status if container else "absent",
            "container": container.short_id if container else None,
            "image_id": container.image_id if container else None,
            "running_digest": digest,
            "registry_digest": remote.digest if remote else None,
            "checked_at": remote.checked_at if remote else None,
            "error": error or (remote.error if remote else None),
        }


def _approved(memory: Memory, approvals: Mapping[str, str]) -> Memory:
    """The memory with the updates a person approved (service → image id)."""
    for name, image_id in approvals.items():
        memory = approve(memory, name, image_id)
    return memory


def _kept(memory: Memory) -> tuple:
    """What of the memory is kept on disk (pull errors are not)."""
    return memory.failures, memory.restarts, memory.approved, memory.announced


def _image_label(ref: str, image: Image) -> str:
    """A running image as a person knows it: its tag in ``ref``'s repository, else its id."""
    try:
        name = Reference.parse(ref).name
        for tagged in image.repo_tags:
            parsed = Reference.parse(tagged)
            if parsed.name == name and parsed.tag:
                return parsed.tag
    except ImageReferenceError:
        pass
    return image.id[7:19]


def definition_fault(error: DefinitionError, scan: Scan) -> str:
    """A bad definition told with what happens meanwhile: the last good
    definition stays in force, or, with none, nothing changes for the service."""
    name = os.path.splitext(os.path.basename(error.path))[0]
    if name in scan.services:
        return (f"bad definition: {error}; the last good definition of {name} stays in force "
                "until the file is fixed")
    return (f"bad definition: {error}; there is no good definition of {name} to run, so its "
            "containers, if any, are left alone until the file is fixed")
