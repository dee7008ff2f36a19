"""Notifications: events derived from pass reports (pure), their text, and delivery."""

from __future__ import annotations

import threading
import time

import pytest

from puller import constants
from puller.control.notify import Event, EventWatch, Kind, Notifier, Version
from puller.images.freshness import Remote
from puller.node.container import Container, Image
from puller.node.definitions import Scan, parse_definition
from puller.node.executor import Outcome
from puller.node.planner import Action, Plan, Step, Target
from puller.node.report import PassReport

D1 = "sha256:" + "ab12" * 16
D2 = "sha256:" + "cd34" * 16
REPO = "registry.example:5000/web"


def service(tag: str = "v1", notify: str = ""):
    text = f"name: web\nbash: docker run {REPO}\nrepo: {REPO}\ntag: {tag}\n" + notify
    return parse_definition(text, "defs/web.yml")


def image(tag: str, digest: str) -> Image:
    return Image(id=f"sha256:{tag}" + "0" * 60, repo_tags=(f"{REPO}:{tag}",),
                 repo_digests=(f"{REPO}@{digest}",))


def container(img: Image, name: str = "web") -> Container:
    return Container(id="c" * 64, name=name, image_id=img.id, status="running",
                     labels={constants.LABEL_SERVICE: "web"})


def report(svc, img, outcomes=(), faults=None, remote=None, running=None) -> PassReport:
    return PassReport(Scan({"web": svc}, ()), Plan(tuple(o.step for o in outcomes)),
                      remotes={svc.image_ref: remote or Remote(digest=None)},
                      images={svc.image_ref: img},
                      containers=(container(running or img),), outcomes=tuple(outcomes),
                      faults=faults or {})


def deploy(svc, img, action=Action.RECREATE, error=None, restored=False) -> Outcome:
    step = Step(action, "web", "image changed", target=Target(svc, img, "hash"))
    return Outcome(step, error=error, restored=restored)


def test_a_deploy_names_node_service_and_old_to_new_version():
    watch = EventWatch("box-1")
    v1, v2 = image("v1", D1), image("v2", D2)
    assert watch.update(report(service("v1"), v1)) == []  # what runs at start: no event
    events = watch.update(report(service("v2"), v2, [deploy(service("v2"), v2)]))
    assert [e.kind for e in events] == [Kind.DEPLOYED]
    assert events[0].text() == ("web on box-1: v1 → v2 (sha256:cd34cd34cd34…): deployed: "
                                "image changed")


def test_a_tag_that_is_no_version_shows_the_short_digest():
    assert Version("latest", D1).label() == "sha256:ab12ab12ab12…"
    assert Version("latest", D1).detail() == "sha256:ab12ab12ab12… (latest)"
    assert Version("1.2.7", D1).detail() == "1.2.7 (sha256:ab12ab12ab12…)"
    first = Event(Kind.DEPLOYED, "n", "web", None, Version("v1", D1))
    assert first.text() == "web on n: new → v1 (sha256:ab12ab12ab12…): deployed"


def test_a_failed_deploy_and_a_put_back_say_why():
    watch = EventWatch("box-1")
    v1, v2 = image("v1", D1), image("v2", D2)
    watch.update(report(service("v1"), v1))
    failed = watch.update(report(service("v2"), v2, [deploy(service("v2"), v2, error="exited 1",
                                                            restored=True)], running=v1))
    assert failed[0].kind is Kind.FAILED
    assert failed[0].text() == ("web on box-1: v1 → v2 (sha256:cd34cd34cd34…): failed: "
                                "exited 1; v1 runs again")
    # a release that failed its probation is put back
    watch.update(report(service("v2"), v2, [deploy(service("v2"), v2)]))
    restore = Step(Action.RESTORE, "web", "v2 exited during its probation",
                   container=container(v1, "web.prev"))
    put_back = watch.update(report(service("v2"), v2, [Outcome(restore)], running=v1))
    assert [e.text() for e in put_back] == [
        "web on box-1: v2 → v1 (sha256:ab12ab12ab12…): put back: v2 exited during its probation"]


def test_bad_definitions_and_registry_outages_are_told_once_and_recovery_too():
    watch = EventWatch("box-1")
    v1 = image("v1", D1)
    bad = {"defs/web.yml": "bad definition, ignored: defs/web.yml:2: oops"}
    down = {f"registry {service().image_ref}": "connection refused"}
    remote = Remote(error="connection refused")
    kinds = []
    for faults in (bad, bad, {**bad, **down}, {**bad, **down}, {}):
        events = watch.update(report(service(), v1, faults=faults, remote=remote))
        kinds.append([e.kind for e in events])
    assert kinds == [[Kind.BAD_DEFINITION], [], [Kind.REGISTRY_DOWN], [], [Kind.REGISTRY_BACK]]


def test_a_services_own_urls_travel_with_its_events():
    svc = service("v2", "notify: ['json://127.0.0.1:9/web']\n")
    v1, v2 = image("v1", D1), image("v2", D2)
    watch = EventWatch("box-1")
    events = watch.update(report(svc, v2, [deploy(svc, v2)]))
    assert events[0].urls == ("json://127.0.0.1:9/web",)


class Recorder:
    def __init__(self, fail: set[str] = frozenset(), hang: float = 0.0):
        self.sent: list[tuple[str, str, str]] = []
        self.fail, self.hang = fail, hang

    def __call__(self, url, title, body, timeout):
        if self.hang:
            time.sleep(self.hang)
        self.sent.append((url, title, body))
        return url not in self.fail


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def event(service_name: str, urls=()) -> Event:
    return Event(Kind.DEPLOYED, "n", service_name, Version("v1", D1), Version("v2", D2),
                 urls=tuple(urls))


def test_events_close_together_are_batched_per_destination(monkeypatch):
    monkeypatch.setattr(constants, "NOTIFY_BATCH", 0.2)
    sender = Recorder()
    with Notifier(["json://a/x"], send=sender) as notifier:
        notifier.notify([event("web")])
        notifier.notify([event("db", urls=["json://b/y"])])
        wait_for(lambda: len(sender.sent) == 2)
    by_url = {url: body for url, _title, body in sender.sent}
    assert by_url["json://a/x"].splitlines() == [event("web").text(), event("db").text()]
    assert by_url["json://b/y"] == event("db").text()


def test_a_failing_destination_is_tried_a_bounded_number_of_times_and_logged_once(
        monkeypatch, caplog):
    for name, value in (("NOTIFY_BATCH", 0.0), ("NOTIFY_RETRY_WAIT", 0.0),
                        ("NOTIFY_ATTEMPTS", 3)):
        monkeypatch.setattr(constants, name, value)
    sender = Recorder(fail={"json://down/x"})
    with Notifier(["json://down/x"], send=sender) as notifier:
        notifier.notify([event("web")])
        wait_for(lambda: len(sender.sent) == 3)
        notifier.notify([event("db")])
        wait_for(lambda: len(sender.sent) == 6)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "down" in warnings[0].getMessage()


def test_a_slow_destination_never_blocks_the_caller(monkeypatch):
    monkeypatch.setattr(constants, "NOTIFY_BATCH", 0.0)
    sender = Recorder(hang=1.0)
    notifier = Notifier(["json://slow/x"], send=sender)
    started = time.monotonic()
    for _ in range(5):
        notifier.notify([event("web")])
    assert time.monotonic() - started < 0.1
    notifier.close()
    notifier.close()  # idempotent
    assert not [t for t in threading.enumerate() if t.name == "puller-notify"]


def test_without_any_destination_no_thread_starts():
    notifier = Notifier([])
    notifier.notify([event("web")])
    assert notifier._destinations == {}
    notifier.close()


def test_a_deploy_in_the_background_still_names_the_version_it_replaced():
    # a pass that sees the new container up while its job still runs must not
    # take it as what ran before: the outcome, a pass later, says v1 → v2
    watch = EventWatch("box-1")
    v1, v2 = image("v1", D1), image("v2", D2)
    watch.update(report(service("v1"), v1))
    mid = report(service("v2"), v2)
    assert watch.update(PassReport(mid.scan, mid.plan, remotes=mid.remotes, images=mid.images,
                                   containers=mid.containers, deploying=frozenset({"web"}))) == []
    events = watch.update(report(service("v2"), v2, [deploy(service("v2"), v2)]))
    assert [(e.kind, e.old.tag, e.new.tag) for e in events] == [(Kind.DEPLOYED, "v1", "v2")]


def halted_rollout(node: str, digest: str = "sha256:" + "c" * 64) -> dict:
    return {"web": {"state": "failed", "view": {
        "release": {"definition": "d1", "digest": digest},
        "halted": f"failed on {node}: exited with code 3"}}}


def test_a_halted_rollout_is_told_once_by_the_node_it_failed_on():
    svc, img = service(), image("v1", "sha256:" + "a" * 64)
    here, there = EventWatch("roll-1"), EventWatch("roll-2")
    events = here.halted(halted_rollout("roll-1"), report(svc, img))
    assert [e.kind for e in events] == [Kind.ROLLOUT_HALTED]
    assert "web on roll-1" in events[0].text() and "exited with code 3" in events[0].text()
    assert here.halted(halted_rollout("roll-1"), report(svc, img)) == []  # once
    assert there.halted(halted_rollout("roll-1"), report(svc, img)) == []  # not by the others
    again = here.halted(halted_rollout("roll-1", "sha256:" + "d" * 64), report(svc, img))
    assert len(again) == 1  # another release halting is news
