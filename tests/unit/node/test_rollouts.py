"""This node's part in a rollout: the services the planner sees, the state it
publishes, what it remembers on disk (no docker: containers are values)."""

from __future__ import annotations

import dataclasses
import json

from puller.node.container import Container, Image
from puller.node.definitions import parse_definition
from puller.node.history import History
from puller.node.planner import Action, Failure, Plan, Step, config_hash
from puller.node.rollouts import Gated, Rollouts

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
TEXT = ("name: web\nbash: docker run reg/web\nrepo: reg/web\ntag: {tag}\nnode: 'roll-'\n"
        "health_timeout: 2\nrollout: {{canary: 1, parallel: 1}}\n")


class Remote:
    def __init__(self, digest):
        self.digest = digest


def web(tag: str = "v1"):
    return parse_definition(TEXT.format(tag=tag), "defs/web.yml")


def make(tmp_path, node: str, peers=None) -> Rollouts:
    history = History(str(tmp_path / f"history-{node}.json"), node)
    return Rollouts(str(tmp_path / f"rollouts-{node}.json"), node, history,
                    peers=(lambda: peers) if peers is not None else dict)


def gate(rollouts: Rollouts, service, digest: str = D1, now: float = 100.0) -> Gated:
    services = {"web": service}
    return rollouts.gate(services, services, {service.image_ref: Remote(digest)}, now)


def test_alone_the_node_takes_the_registry_digest_pinned(tmp_path):
    gated = gate(make(tmp_path, "roll-1"), web())
    assert gated.services["web"].digest == D1 and gated.services["web"].tag == "v1"
    assert gated.held == {}


def test_a_later_wave_is_held_and_the_plan_says_why(tmp_path):
    peers = {"roll-1": (100.0, {"web": {"release": None, "state": "waiting"}})}
    rollouts = make(tmp_path, "roll-2", peers)
    first = gate(rollouts, web())  # roll-1 has proposed nothing yet
    assert "web" not in first.services and "waiting for roll-1 to propose" in first.held["web"]
    release = {"definition": rollouts.status()["web"]["view"]["definition"], "digest": D1}
    peers["roll-1"] = (100.0, {"web": {"release": release, "state": "proving", "since": 99}})
    gated = gate(rollouts, web(), digest=D2)  # its own registry says D2: D1 is the release
    assert "web" not in gated.services
    assert gated.held["web"].startswith("rollout of web: wave 2 of 2, waiting for roll-1")
    running = Container("c1", "web", "img", "running", labels={"io.puller.service": "web"})
    plan = gated.explain(Plan((Step(Action.KEEP, "web", "its definition cannot be read",
                                    container=running),)))
    assert plan.steps[0].reason == gated.held["web"] and plan.steps[0].container is running
    peers["roll-1"] = (100.0, {"web": {"release": release, "state": "done", "since": 99}})
    taken = gate(rollouts, web(), digest=D2)
    assert taken.services["web"].digest == D1


def test_the_leader_s_own_new_image_stays_under_the_update_policy_a_follower_s_does_not(
        tmp_path):
    """The first node pins what its registry check found: that is a new image, which
    `update: manual` holds; a later node follows the release the first one ran."""
    leader = gate(make(tmp_path, "roll-1"), web()).services["web"]
    assert leader.digest == D1 and leader.asked_ref == "reg/web:v1"
    assert not leader.follows_release
    peers = {"roll-1": (100.0, {"web": {"release": None, "state": "waiting"}})}
    follower = make(tmp_path, "roll-2", peers)
    gate(follower, web())
    release = {"definition": follower.status()["web"]["view"]["definition"], "digest": D1}
    peers["roll-1"] = (100.0, {"web": {"release": release, "state": "done", "since": 99}})
    taken = gate(follower, web(), digest=D2).services["web"]
    # it follows; its container records the file's ref, so if it is the first node
    # one day, the next new image is held here as it would be there
    assert taken.digest == D1 and taken.follows_release and taken.asked_ref == "reg/web:v1"
    # a digest a person wrote is an edit, not a new image: never held by the policy
    person = parse_definition(TEXT.format(tag="v1") + f"digest: '{D2}'\n", "defs/web.yml")
    pinned = gate(make(tmp_path, "roll-0"), person).services["web"]
    assert pinned.asked_ref == f"reg/web@{D2}" and pinned.follows_release


def test_not_before_the_peers_were_heard(tmp_path):
    rollouts = Rollouts(str(tmp_path / "r.json"), "roll-1",
                        History(str(tmp_path / "h.json"), "roll-1"), peers=lambda: None)
    gated = gate(rollouts, web())
    assert "waiting to hear from the other nodes" in gated.held["web"]
    assert rollouts.busy() is True


def test_proving_then_done_after_the_health_timeout_and_remembered(tmp_path):
    rollouts = make(tmp_path, "roll-1")
    gated = gate(rollouts, web(), now=100.0)
    service = gated.services["web"]
    image = Image("sha256:img", repo_digests=(f"reg/web@{D1}",))
    container = Container("c1", "web", image.id, "running", labels={
        "io.puller.service": "web", "io.puller.hash": config_hash(service.run.canonical(),
                                                                   image.id)})
    rollouts.settle(gated, [container], {service.image_ref: image}, {}, 101.0)
    assert rollouts.status()["web"]["state"] == "proving"
    assert rollouts.due(102.0) and not rollouts.due(101.5)
    rollouts.settle(gate(rollouts, web(), now=102.5), [container],
                    {service.image_ref: image}, {}, 102.5)
    assert rollouts.status()["web"]["state"] == "done"
    view = rollouts.status()["web"]["view"]
    assert view["nodes"]["roll-1"]["state"] == "done" and view["ended"]
    saved = json.loads((tmp_path / "rollouts-roll-1.json").read_text())
    assert saved["web"]["state"] == "done" and saved["web"]["release"]["digest"] == D1
    again = make(tmp_path, "roll-1")
    assert again.mine["web"].state == "done"


def test_a_failure_recorded_by_the_planner_fails_the_release_and_is_published(tmp_path):
    rollouts = make(tmp_path, "roll-1")
    gated = gate(rollouts, web(), now=100.0)
    rollouts.settle(gated, [], {}, {"web": Failure("h", "exited with code 3", 100.5)}, 100.5)
    published = rollouts.status()["web"]
    assert published["state"] == "failed" and published["error"] == "exited with code 3"
    assert published["failed"][0]["node"] == "roll-1"
    # the view shows it at once, not after the next pass
    assert published["view"]["halted"] == "failed on roll-1: exited with code 3"
    assert published["view"]["nodes"]["roll-1"]["state"] == "failed"
    gate(rollouts, web(), now=101.0)
    assert rollouts.status()["web"]["view"]["halted"] == "failed on roll-1: exited with code 3"


def test_a_garbled_memory_file_is_ignored(tmp_path):
    (tmp_path / "rollouts-roll-1.json").write_text("{not json")
    assert make(tmp_path, "roll-1").mine == {}
    (tmp_path / "rollouts-roll-1.json").write_text(json.dumps(
        {"web": {"release": {"digest": "nope"}, "state": "bogus", "failed": [1, {}]}}))
    memo = make(tmp_path, "roll-1").mine["web"]
    assert memo.release is None and memo.state == "waiting" and memo.failed == ()


def test_without_the_registry_the_first_node_proposes_its_local_image(tmp_path):
    rollouts = make(tmp_path, "roll-1")
    service = web()
    gated = rollouts.gate({"web": service}, {"web": service}, {}, 100.0,
                          lambda ref: D2 if ref == service.image_ref else None)
    assert gated.services["web"].digest == D2
    follower = make(tmp_path, "roll-2", {"roll-1": (100.0, {})})
    held = follower.gate({"web": service}, {"web": service}, {}, 100.0, lambda ref: D2)
    assert "waiting for roll-1 to propose" in held.held["web"]  # only the first node proposes


def test_after_a_rollback_the_next_rollout_goes_back_to_what_runs_not_to_the_failed_one(
        tmp_path):
    rollouts = make(tmp_path, "roll-1")
    before = {"fields": {"name": "web", "tag": "v0"}, "digest": D2}
    rollouts.history.observe({"web": {"name": "web", "tag": "v1"}}, {"web": D1}, 50.0)
    gated = gate(rollouts, web(), now=100.0)
    rollouts.mine["web"] = dataclasses.replace(rollouts.mine["web"], state="reverted",
                                               previous=before)
    # the failed release ran here, as the history says; a new one comes
    gate(rollouts, web("v2"), digest=D2, now=101.0)
    assert rollouts.mine["web"].previous == before
    assert gated.services["web"].digest == D1


def test_pinning_to_the_release_digest_keeps_the_drift_hash():
    """A node that takes a release whose digest its container already runs changes nothing."""
    service = web()
    pinned = dataclasses.replace(service, digest=D1)
    assert pinned.image_ref == f"reg/web@{D1}" and service.image_ref == "reg/web:v1"
    assert config_hash(pinned.run.canonical(), "sha256:img") == config_hash(
        service.run.canonical(), "sha256:img")


def test_the_proof_window_starts_when_the_container_runs_not_when_the_pull_began(tmp_path):
    rollouts = make(tmp_path, "roll-1")
    gated = gate(rollouts, web(), now=100.0)
    service = gated.services["web"]
    image = Image("sha256:img", repo_digests=(f"reg/web@{D1}",))
    rollouts.settle(gated, [], {}, {}, 110.0)  # still pulling at 110
    container = Container("c1", "web", image.id, "running", labels={
        "io.puller.service": "web", "io.puller.hash": config_hash(service.run.canonical(),
                                                                   image.id)})
    rollouts.settle(gate(rollouts, web(), now=111.0), [container], {service.image_ref: image},
                    {}, 111.0)
    assert rollouts.status()["web"]["state"] == "proving"  # 2 s from 110, not from 100
    rollouts.settle(gate(rollouts, web(), now=112.5), [container], {service.image_ref: image},
                    {}, 112.5)
    assert rollouts.status()["web"]["state"] == "done"
