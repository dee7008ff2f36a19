"""The update policy in the pure planner: only an image change behind an
unchanged definition waits for a person; approvals and announcements."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from puller import constants
from puller.node.approvals import approval_target, settle
from puller.node.container import Container, Image
from puller.node.definitions import parse_definition
from puller.node.imageversion import Version, change
from puller.node.planner import Action, Memory, Plan, config_hash, plan
from puller.node.policy import asked_for

REPO = "reg.example/web"
D_OLD, D_NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64
OLD = Image("sha256:" + "1" * 64, (), (f"{REPO}@{D_OLD}",), version="1.2.5")
NEW = Image("sha256:" + "2" * 64, (f"{REPO}:latest",), (f"{REPO}@{D_NEW}",), version="1.2.7")
BASH = f"docker run -p 80:80 {REPO}"


def service(update="manual", tag="latest", bash=BASH):
    text = f"name: web\nbash: {bash}\nrepo: {REPO}\ntag: {tag}\n"
    if update is not None:
        text += f"update: {update}\n"
    return parse_definition(text, "web.yml")


def container(svc, image=OLD, status="running", asked_for="default", name="web", cid="c"):
    labels = {constants.LABEL_SERVICE: "web", constants.LABEL_NODE: "n",
              constants.LABEL_HASH: config_hash(svc.run.canonical(), image.id),
              constants.LABEL_IMAGE: image.id}
    if asked_for:
        labels[constants.LABEL_REF] = svc.image_ref if asked_for == "default" else asked_for
    return Container(cid * 64, name, image.id, status, labels=labels)


def steps(svc, containers, image=NEW, memory=None, now=0.0):
    result = plan({"web": svc}, containers, {svc.image_ref: image}, memory or Memory(), now,
                  known={OLD.id: OLD, NEW.id: NEW})
    return [(step.action, step.reason) for step in result.steps], result


def test_manual_holds_a_new_image_and_names_both_versions():
    svc = service("manual")
    found, result = steps(svc, [container(svc)])
    assert found == [(Action.HOLD, "update available: 1.2.5 → 1.2.7, waiting for approval "
                                   "(puller approve web)")]
    assert result.changes == ()
    held = result.steps[0].hold
    assert held.image_id == NEW.id and held.new.digest == D_NEW and held.old.digest == D_OLD


def test_notify_holds_too_and_says_it_is_not_deployed():
    svc = service("notify")
    found, _ = steps(svc, [container(svc)])
    assert found[0][0] is Action.HOLD and "not deployed (update: notify" in found[0][1]


def test_auto_and_no_field_deploy_the_new_image():
    for svc in (service("auto"), service(None)):
        found, _ = steps(svc, [container(svc)])
        assert [action for action, _ in found] == [Action.RECREATE]


def test_a_first_deploy_always_applies():
    found, _ = steps(service("manual"), [])
    assert [action for action, _ in found] == [Action.CREATE]


def test_an_edit_of_the_run_line_applies_at_once_with_the_new_image():
    before = service("manual")
    after = service("manual", bash=f"docker run -p 81:80 {REPO}")
    found, _ = steps(after, [container(before)])
    assert [action for action, _ in found] == [Action.RECREATE]


def test_an_edit_of_the_tag_applies_at_once():
    before = service("manual", tag="1.2.5")
    after = service("manual", tag="1.2.7")
    found, _ = steps(after, [container(before)])
    assert [action for action, _ in found] == [Action.RECREATE]


def test_a_container_without_the_ref_label_waits_to_be_safe():
    svc = service("manual")
    found, _ = steps(svc, [container(svc, asked_for=None)])
    assert [action for action, _ in found] == [Action.HOLD]


def test_an_approval_of_that_image_deploys_it_and_of_another_does_not():
    svc = service("manual")
    found, _ = steps(svc, [container(svc)], memory=Memory(approved={"web": NEW.id}))
    assert [action for action, _ in found] == [Action.RECREATE]
    found, _ = steps(svc, [container(svc)], memory=Memory(approved={"web": "sha256:" + "9" * 64}))
    assert [action for action, _ in found] == [Action.HOLD]


def test_an_exited_container_is_started_with_its_own_image_while_an_update_waits():
    svc = service("manual")
    found, result = steps(svc, [container(svc, status="exited")])
    assert [action for action, _ in found] == [Action.START, Action.HOLD]
    assert result.steps[0].target is None  # a start keeps the container's image


def test_a_waiting_image_does_not_end_a_probation_early():
    svc = service("manual")
    current = container(svc)
    previous = container(svc, status="exited", name="web" + constants.PREVIOUS_SUFFIX, cid="p")
    current = dataclasses.replace(current, started_at="1970-01-01T00:00:00Z")
    found, _ = steps(svc, [current, previous], now=1.0)  # health timeout 10 s: undecided
    assert [action for action, _ in found] == [Action.KEEP]
    assert "probation" in found[0][1]


def test_an_interrupted_update_is_not_finished_with_a_waiting_image():
    svc = service("manual")
    previous = container(svc, status="exited", name="web" + constants.PREVIOUS_SUFFIX)
    found, _ = steps(svc, [previous])
    assert [action for action, _ in found] == [Action.RESTORE]
    assert "waiting for approval" in found[0][1]


def test_versions_read_tag_then_oci_label_then_digest():
    assert Version("1.2.7", D_NEW, "9.9").label() == "1.2.7"
    assert Version("latest", D_NEW, "1.2.7").label() == "1.2.7"
    assert Version("latest", D_NEW).label() == D_NEW[:19] + "…"
    same = change(Version("v1", D_OLD), Version("v1", D_NEW))
    assert D_OLD[:19] in same and D_NEW[:19] in same  # a moved tag: the digests differ


def test_a_new_waiting_image_is_announced_once_and_an_approval_ends_with_its_deploy():
    svc = service("manual")
    _, result = steps(svc, [container(svc)])
    memory, announced = settle(Memory(), result, {"web": svc}, {svc.image_ref: NEW},
                               [container(svc)])
    assert announced == ("web",) and memory.announced == {"web": NEW.id}
    memory, announced = settle(memory, result, {"web": svc}, {svc.image_ref: NEW},
                               [container(svc)])
    assert announced == ()
    approved = dataclasses.replace(memory, approved={"web": NEW.id})
    kept, _ = settle(approved, result, {"web": svc}, {svc.image_ref: NEW}, [container(svc)])
    assert kept.approved == {"web": NEW.id}  # not deployed yet
    done, _ = settle(approved, result, {"web": svc}, {svc.image_ref: NEW},
                     [container(svc, image=NEW)])
    assert done.approved == {}
    moved, _ = settle(approved, result, {"web": svc}, {svc.image_ref: OLD}, [container(svc)])
    assert moved.approved == {}  # the tag moved on: that approval is for an image gone by
    gone, _ = settle(approved, Plan(), {}, {}, [])
    assert gone.approved == {} and gone.announced == {}


def test_approving_with_nothing_waiting_says_why():
    svc = service("manual")
    _, result = steps(svc, [container(svc, image=NEW)])
    step, why = approval_target(result, svc, "n")
    assert step is None and "no new image of web waits on node n" in why
    step, why = approval_target(result, service("auto"), "n")
    assert step is None and "update: auto" in why
    _, held = steps(svc, [container(svc)])
    step, why = approval_target(held, svc, "n")
    assert step is not None and step.hold.image_id == NEW.id


@given(policy=st.sampled_from(["auto", "notify", "manual", None]),
       run_edit=st.booleans(), tag_edit=st.booleans(), labelled=st.booleans(),
       approval=st.sampled_from([None, "new", "other"]),
       status=st.sampled_from(["running", "exited"]))
def test_a_new_image_is_deployed_only_when_the_policy_allows(policy, run_edit, tag_edit, labelled,
                                                              approval, status):
    before = service(policy, tag="1.2.5")
    after = service(policy, tag="1.2.7" if tag_edit else "1.2.5",
                    bash=f"docker run -p 81:80 {REPO}" if run_edit else BASH)
    approved = {"new": {"web": NEW.id}, "other": {"web": OLD.id}, None: {}}[approval]
    current = container(before, status=status, asked_for="default" if labelled else None)
    result = plan({"web": after}, [current], {after.image_ref: NEW}, Memory(approved=approved),
                  0.0, known={OLD.id: OLD})
    deploys = [step for step in result.steps
               if step.action in (Action.CREATE, Action.RECREATE)]
    edited = run_edit or (tag_edit and labelled)
    may = policy in ("auto", None) or edited or approval == "new"
    assert bool(deploys) == may
    assert all(step.target.image == NEW for step in deploys)
    held = [step for step in result.steps if step.action is Action.HOLD]
    assert bool(held) == (not may)
    if status == "exited":  # whatever waits, an exited container is started (its own image)
        assert any(step.action in (Action.START, Action.RECREATE) for step in result.steps)


def test_the_update_field_is_checked_with_its_line():
    import pytest

    from puller.errors import DefinitionError
    from puller.node.definitions import definition_fields, render_definition

    assert service("notify").update == "notify" and service(None).update == "auto"
    for value in ("Manual", "yes", "[auto]", "1"):
        with pytest.raises(DefinitionError) as caught:
            parse_definition(f"name: web\nbash: {BASH}\nrepo: {REPO}\nupdate: {value}\n",
                             "web.yml")
        assert caught.value.line == 4 and "auto, notify, manual" in str(caught.value)
    fields = definition_fields(service("manual"))
    assert fields["update"] == "manual" and "update" not in definition_fields(service("auto"))
    assert parse_definition(render_definition(fields), "web.yml").update == "manual"


def test_approvals_and_announcements_survive_a_restart(tmp_path):
    from puller.node.memoryfile import load_memory, memory_from_json, save_memory

    path = str(tmp_path / "memory.json")
    save_memory(path, Memory(approved={"web": NEW.id}, announced={"web": NEW.id, "db": OLD.id}))
    memory = load_memory(path)
    assert memory.approved == {"web": NEW.id}
    assert memory.announced == {"web": NEW.id, "db": OLD.id}
    odd = memory_from_json({"approved": {"web": 3, "db": OLD.id}, "announced": ["web"]})
    assert odd.approved == {"db": OLD.id} and odd.announced == {}


def tracked(update="manual", resolved="1.2.5", track="^1.2"):
    text = f"name: web\nbash: {BASH}\nrepo: {REPO}\ntrack: '{track}'\nupdate: {update}\n"
    return dataclasses.replace(parse_definition(text, "web.yml"), tag=resolved)


def test_a_newer_tag_found_by_track_is_an_image_change_that_waits():
    before, after = tracked(resolved="1.2.5"), tracked(resolved="1.2.7")
    found, result = steps(after, [container(before, asked_for=asked_for(before))])
    assert [action for action, _ in found] == [Action.HOLD], found
    assert "1.2.5 → 1.2.7" in found[0][1]


def test_a_new_range_is_a_persons_edit_and_applies():
    before, after = tracked(resolved="1.2.5"), tracked(resolved="2.0.1", track="^2")
    found, _ = steps(after, [container(before, asked_for=asked_for(before))])
    assert [action for action, _ in found] == [Action.RECREATE]


def test_a_rollout_pin_is_held_on_the_first_node_and_followed_on_the_others():
    """A rollout pins the release's digest: on its first node that is the new image its
    own registry check found (held); elsewhere, the release that node ran (followed).
    Either container records the ref the file asks for, not the pin."""
    svc = service("manual")
    running = container(svc)  # made from the file's ref, before the rollout
    for follows, expected in ((False, Action.HOLD), (True, Action.RECREATE)):
        pinned = dataclasses.replace(svc, digest=D_NEW, asked_ref=asked_for(svc),
                                     follows_release=follows)
        assert asked_for(pinned) == f"{REPO}:latest"
        result = plan({"web": pinned}, [running], {pinned.image_ref: NEW}, Memory(), 0.0,
                      known={OLD.id: OLD, NEW.id: NEW})
        assert [step.action for step in result.steps] == [expected], result.steps
