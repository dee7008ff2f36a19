"""Notifications of the update policy: a new image that waits is told once,
and an image's OCI version label names it when its tag is no version."""

from __future__ import annotations

import dataclasses

from puller import constants
from puller.control.notify import EventWatch, Kind
from puller.node.container import Container
from puller.node.definitions import Scan, parse_definition
from puller.node.planner import Memory, config_hash, plan
from puller.node.report import PassReport

from .test_notify import D1, D2, REPO, deploy, image, report

BASH = f"docker run {REPO}"


def service(update: str = "manual"):
    return parse_definition(f"name: web\nbash: {BASH}\nrepo: {REPO}\ntag: latest\n"
                            f"update: {update}\n", "defs/web.yml")


def held_report(svc, old, new, announced=("web",)) -> PassReport:
    current = Container("c" * 64, "web", old.id, "running", labels={
        constants.LABEL_SERVICE: "web", constants.LABEL_IMAGE: old.id,
        constants.LABEL_HASH: config_hash(svc.run.canonical(), old.id),
        constants.LABEL_REF: svc.image_ref})
    the_plan = plan({"web": svc}, [current], {svc.image_ref: new}, Memory(), 0.0,
                    known={old.id: old})
    return PassReport(Scan({"web": svc}, ()), the_plan, images={svc.image_ref: new},
                      containers=(current,), announced=announced)


def test_a_waiting_image_is_told_once_with_its_oci_version():
    old = dataclasses.replace(image("latest", D1), version="1.2.5")
    new = dataclasses.replace(image("latest", D2), version="1.2.7", id="sha256:" + "7" * 64)
    watch = EventWatch("box-1")
    events = watch.update(held_report(service(), old, new))
    assert [event.kind for event in events] == [Kind.NEW_IMAGE]
    text = events[0].text()
    assert text.startswith("web on box-1: 1.2.5 → 1.2.7 (sha256:cd34cd34cd34…): "
                           "new image available: waiting for approval"), text
    assert watch.update(held_report(service(), old, new, announced=())) == []


def test_under_notify_the_event_says_it_is_not_deployed():
    old, new = image("latest", D1), dataclasses.replace(image("latest", D2), id="sha256:" + "7" * 64)
    [event] = EventWatch("n").update(held_report(service("notify"), old, new))
    assert "not deployed (update: notify)" in event.text()


def test_a_deploy_names_the_oci_version_when_the_tag_is_no_version():
    svc = parse_definition(f"name: web\nbash: {BASH}\nrepo: {REPO}\ntag: latest\n", "web.yml")
    old = dataclasses.replace(image("latest", D1), version="1.2.5")
    new = dataclasses.replace(image("latest", D2), version="1.2.7")
    watch = EventWatch("box-1")
    watch.update(report(svc, old))
    [event] = watch.update(report(svc, new, [deploy(svc, new)]))
    assert event.text().startswith("web on box-1: 1.2.5 → 1.2.7 (sha256:cd34"), event.text()
