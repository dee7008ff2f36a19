"""The pure planner: fixtures of {desired, actual} → expected steps."""

from __future__ import annotations

import pytest

from puller import constants
from puller.node.container import Container, Image
from puller.node.definitions import parse_definition
from puller.images.freshness import Remote
from puller.node.planner import (Action, Backoff, Failure, Memory, config_hash, local_digests, plan,
                            plan_pulls, release_digest)

NODE = "box-1"
IMG1 = Image("sha256:" + "1" * 64, ("web:v1",))
IMG2 = Image("sha256:" + "2" * 64, ("web:v1",))


def service(name="web", bash=None, tag="v1", repo="web", node=""):
    bash = bash or f"docker run -p 80:80 {repo}"
    return parse_definition(
        f"name: {name}\nbash: {bash}\nrepo: {repo}\ntag: {tag}\nnode: '{node}'\n", f"{name}.yml")


def hash_of(svc, image=IMG1):
    return config_hash(svc.run.canonical(), image.id)


def container(name="web", service_name=None, hash_="", status="running", exit_code=0,
              cid=None, image=IMG1):
    service_name = service_name or name.removesuffix(constants.PREVIOUS_SUFFIX)
    return Container(
        id=cid or (name + "-id").ljust(64, "0"), name=name, image_id=image.id, status=status,
        exit_code=exit_code,
        labels={constants.LABEL_SERVICE: service_name, constants.LABEL_NODE: NODE,
                constants.LABEL_HASH: hash_, constants.LABEL_IMAGE: image.id},
    )


def actions(the_plan):
    return [(step.action, step.service) for step in the_plan.steps]


def test_no_change_gives_only_keeps_with_reasons():
    web, db = service("web"), service("db", repo="db")
    images = {"web:v1": IMG1, "db:v1": IMG1}
    actual = [container("web", hash_=hash_of(web)), container("db", hash_=hash_of(db))]
    result = plan({"web": web, "db": db}, actual, images, Memory(), now=0)
    assert actions(result) == [(Action.KEEP, "db"), (Action.KEEP, "web")]
    assert all("up to date" in step.reason for step in result.steps)
    assert result.changes == ()


def test_a_new_service_is_created():
    web = service()
    result = plan({"web": web}, [], {"web:v1": IMG1}, Memory(), now=0)
    assert actions(result) == [(Action.CREATE, "web")]
    assert result.steps[0].target.config_hash == hash_of(web)


def test_a_changed_run_line_recreates():
    old, new = service(), service(bash="docker run -p 80:80 -p 81:80 web")
    result = plan({"web": new}, [container(hash_=hash_of(old))], {"web:v1": IMG1}, Memory(), 0)
    assert actions(result) == [(Action.RECREATE, "web")]
    assert result.steps[0].reason == "definition changed"


def test_a_changed_image_recreates_and_says_so():
    web = service()
    result = plan({"web": web}, [container(hash_=hash_of(web, IMG1))], {"web:v1": IMG2}, Memory(), 0)
    assert actions(result) == [(Action.RECREATE, "web")]
    assert "image changed" in result.steps[0].reason


def test_hash_is_stable_and_sensitive():
    a, b = service(), service()
    assert hash_of(a) == hash_of(b)
    assert hash_of(a, IMG1) != hash_of(a, IMG2)
    assert hash_of(a) != hash_of(service(bash="docker run -p 81:80 web"))
    # puller's own additions are not part of it: only the user's line and the image
    assert hash_of(a) == config_hash(a.run.canonical(), IMG1.id)


def test_a_deleted_service_is_removed_and_a_mismatched_node_too():
    result = plan({}, [container("gone"), container("elsewhere")], {}, Memory(), 0,
                  defined={"elsewhere"})
    reasons = {step.service: (step.action, step.reason) for step in result.steps}
    assert reasons["gone"] == (Action.REMOVE, "service definition was deleted")
    assert reasons["elsewhere"] == (Action.REMOVE, "service no longer matches this node")


def test_broken_definitions_and_unreadable_directory_remove_nothing():
    actual = [container("web"), container("db")]
    result = plan({}, actual, {}, Memory(), 0, broken={"web"})
    assert actions(result) == [(Action.REMOVE, "db"), (Action.KEEP, "web")]
    result = plan({}, actual, {}, Memory(), 0, complete=False)
    assert actions(result) == [(Action.KEEP, "db"), (Action.KEEP, "web")]


def test_containers_without_a_service_label_are_not_judged():
    stranger = Container(id="f" * 64, name="stranger", image_id="x", status="running",
                         labels={constants.LABEL_NODE: NODE})
    assert plan({}, [stranger], {}, Memory(), 0).steps == ()


def test_missing_image_waits_and_keeps_the_running_container():
    web = service(tag="v2")
    current = container(hash_="old")
    memory = Memory(pull_errors={"web:v2": "manifest unknown"})
    result = plan({"web": web}, [current], {"web:v2": None}, memory, 0)
    assert actions(result) == [(Action.WAIT, "web")]
    assert "manifest unknown" in result.steps[0].reason
    assert "keeping the current container" in result.steps[0].reason
    assert result.steps[0].fault  # logged as a fault: the pull failed


def test_an_image_on_its_way_is_a_wait_but_no_fault():
    web = service(tag="v2")
    for current in (container(hash_="old"), None):
        for pulling in (frozenset({"web:v2"}), frozenset()):
            result = plan({"web": web}, [current] if current else [], {"web:v2": None},
                          Memory(), 0, pulling=pulling)
            [step] = result.steps
            assert step.action is Action.WAIT and not step.fault, step
    failed = plan({"web": web}, [], {"web:v2": None},
                  Memory(pull_errors={"web:v2": "manifest unknown"}), 0)
    assert failed.steps[0].fault


def test_a_failed_update_is_not_retried_until_something_changes():
    web = service()
    failed = Memory(failures={"web": Failure(hash_of(web), "exited with code 1", at=0)})
    current = container(hash_="older")
    result = plan({"web": web}, [current], {"web:v1": IMG1}, failed, now=10_000)
    assert actions(result) == [(Action.KEEP, "web")]
    assert "failed" in result.steps[0].reason
    # a new image is a change: it is tried
    result = plan({"web": web}, [current], {"web:v1": IMG2}, failed, now=10_000)
    assert actions(result) == [(Action.RECREATE, "web")]


def test_a_failed_create_is_retried_after_its_backoff():
    web = service()
    memory = Memory(failures={"web": Failure(hash_of(web), "name taken", at=0, retry_at=5)})
    assert actions(plan({"web": web}, [], {"web:v1": IMG1}, memory, now=1)) == [(Action.WAIT, "web")]
    assert actions(plan({"web": web}, [], {"web:v1": IMG1}, memory, now=6)) == [(Action.CREATE, "web")]


def test_an_exited_container_is_started_with_backoff():
    web = service()
    exited = container(hash_=hash_of(web), status="exited", exit_code=137)
    result = plan({"web": web}, [exited], {"web:v1": IMG1}, Memory(), 0)
    assert actions(result) == [(Action.START, "web")]
    assert result.steps[0].reason == "exited with code 137"
    memory = Memory(restarts={exited.id: Backoff(attempts=3, next_at=50)})
    assert actions(plan({"web": web}, [exited], {"web:v1": IMG1}, memory, 10)) == [(Action.WAIT, "web")]
    assert actions(plan({"web": web}, [exited], {"web:v1": IMG1}, memory, 51)) == [(Action.START, "web")]


def test_a_leftover_predecessor_is_removed_once_the_current_one_exists():
    web = service()
    actual = [container(hash_=hash_of(web)), container("web.prev", hash_="older", status="exited")]
    result = plan({"web": web}, actual, {"web:v1": IMG1}, Memory(), 0)
    assert actions(result) == [(Action.REMOVE, "web"), (Action.KEEP, "web")]
    assert result.steps[0].container.name == "web.prev"


def test_an_interrupted_update_is_finished_or_rolled_back():
    web = service()
    prev = container("web.prev", hash_="older", status="exited")
    result = plan({"web": web}, [prev], {"web:v1": IMG1}, Memory(), 0)
    assert actions(result) == [(Action.RECREATE, "web")]
    assert result.steps[0].container is prev
    failed = Memory(failures={"web": Failure(hash_of(web), "boom", at=0)})
    result = plan({"web": web}, [prev], {"web:v1": IMG1}, failed, 0)
    assert actions(result) == [(Action.RESTORE, "web")]


D_OLD, D_NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64
IMG_OLD = Image(IMG1.id, ("web:v1",), (f"web@{D_OLD}",))


@pytest.mark.parametrize("image,remote,expected", [
    (None, None, [("web:v1", None)]),                          # missing, registry not asked
    (IMG_OLD, None, []),                                       # present, registry not asked
    (IMG_OLD, Remote(digest=D_OLD), []),                       # up to date: no pull at all
    (IMG_OLD, Remote(digest=D_NEW), [("web:v1", D_NEW)]),      # moved: pull that very digest
    (None, Remote(digest=D_NEW), [("web:v1", D_NEW)]),
    (IMG1, Remote(digest=D_NEW), [("web:v1", D_NEW)]),         # local image without digests
    (IMG_OLD, Remote(digest=D_OLD, error="down"), []),         # registry down: nothing to pull
    (None, Remote(error="down"), []),
    (IMG_OLD, Remote(error="405", fallback=True), [("web:v1", None)]),  # HEAD useless: pull
])
def test_pulls(image, remote, expected):
    web, api = service("web"), service("api", repo="web")  # one image, two services
    remotes = {"web:v1": remote} if remote else {}
    steps = plan_pulls({"web": web, "api": api}, {"web:v1": image}, remotes)
    assert [(step.image_ref, step.digest) for step in steps] == expected
    assert all(step.service == "api, web" for step in steps)


def test_local_digests_only_count_the_same_repository():
    image = Image("sha256:" + "1" * 64, (), (f"web@{D_OLD}", f"other@{D_NEW}",
                                             f"docker.io/library/web@{D_NEW}"))
    assert local_digests("web:v1", image) == {D_OLD, D_NEW}
    assert local_digests("other:v1", image) == {D_NEW}
    assert local_digests("127.0.0.1:5000/web:v1", image) == set()


def test_a_pinned_digest_is_pulled_only_when_missing():
    pinned = parse_definition(
        "name: web\nbash: docker run web\nrepo: web\ndigest: sha256:" + "a" * 64 + "\n", "web.yml")
    ref = pinned.image_ref
    assert ref == "web@sha256:" + "a" * 64
    assert plan_pulls({"web": pinned}, {ref: IMG1}, {ref: Remote(digest=D_NEW)}) == ()
    assert [s.image_ref for s in plan_pulls({"web": pinned}, {ref: None}, {})] == [ref]


STARTED = "2026-11-27T00:00:00.123456789Z"
T0 = Container(id="t", name="t", image_id="", status="running", started_at=STARTED).started


@pytest.mark.parametrize("status,health,restarts,after,expected,fragment", [
    ("running", None, 0, 5, Action.KEEP, "on probation"),
    ("running", "starting", 0, 5, Action.KEEP, "on probation"),
    ("running", None, 0, 11, Action.REMOVE, "proved itself"),
    ("running", "healthy", 0, 11, Action.REMOVE, "proved itself"),
    ("running", "starting", 0, 11, Action.RESTORE, "still starting"),
    ("running", "unhealthy", 0, 5, Action.RESTORE, "turned unhealthy"),
    ("exited", None, 0, 5, Action.RESTORE, "exited with code 1"),
    ("running", None, 2, 5, Action.RESTORE, "restarted 2 time(s)"),
])
def test_probation_is_judged_from_the_containers(status, health, restarts, after, expected,
                                                  fragment):
    web = service()  # health_timeout: the default, 10 s
    new = Container(id="n" * 64, name="web", image_id=IMG1.id, status=status, exit_code=1,
                    health=health, restart_count=restarts, started_at=STARTED,
                    labels={constants.LABEL_SERVICE: "web", constants.LABEL_NODE: NODE,
                            constants.LABEL_HASH: hash_of(web)})
    prev = container("web.prev", hash_="older", status="exited")
    result = plan({"web": web}, [new, prev], {"web:v1": IMG1}, Memory(), T0 + after)
    step = result.steps[0]
    assert step.action is expected and fragment in step.reason
    assert [s.action for s in result.steps[1:]] == ([Action.KEEP] if expected is Action.REMOVE else [])
    if expected is Action.RESTORE:
        assert step.container is prev and step.failed is new
    if expected is Action.REMOVE:
        assert step.container is prev


def test_a_newer_edit_ends_the_probation_early():
    web, newer = service(), service(bash="docker run -p 81:80 web")
    new = container(hash_=hash_of(web))
    new = Container(**{**new.__dict__, "started_at": STARTED})
    prev = container("web.prev", hash_="older", status="exited")
    result = plan({"web": newer}, [new, prev], {"web:v1": IMG1}, Memory(), now=T0 + 5)
    assert [(s.action, s.container.name) for s in result.steps] == [
        (Action.REMOVE, "web.prev"), (Action.RECREATE, "web")]


def test_a_container_under_another_name_stands_in_until_the_new_one_runs():
    web = service()
    old = container("box-1-web", service_name="web", hash_=hash_of(web))
    # a new -name-template: the old container is the predecessor of the new one
    result = plan({"web": web}, [old], {"web:v1": IMG1}, Memory(), 0)
    assert [(s.action, s.container.name) for s in result.steps] == [(Action.RECREATE, "box-1-web")]
    # and while the image is missing, nothing is removed
    result = plan({"web": service(tag="v9")}, [old], {"web:v9": None}, Memory(), 0)
    assert [s.action for s in result.changes] == []


def test_a_container_under_another_name_goes_once_the_service_has_its_own():
    web = service()
    own = container("web", hash_=hash_of(web))
    stray = container("box-1-web", service_name="web", hash_=hash_of(web))
    result = plan({"web": web}, [own, stray], {"web:v1": IMG1}, Memory(), 0)
    assert [(s.action, s.container.name) for s in result.steps] == [
        (Action.REMOVE, "box-1-web"), (Action.KEEP, "web")]
    assert "unexpected name" in result.steps[0].reason


INDEX, PLATFORM = "sha256:" + "f" * 64, "sha256:" + "0" * 64


def test_a_multi_arch_release_is_named_by_the_registrys_digest_never_by_chance():
    image = Image("sha256:" + "1" * 64, ("reg/web:v1",),
                  (f"reg/web@{INDEX}", f"reg/web@{PLATFORM}"))
    assert release_digest("reg/web:v1", image, Remote(digest=INDEX)) == INDEX
    # without the registry's word, two digests name no release: not sorted()[0]
    assert release_digest("reg/web:v1", image, None) is None
    single = Image("sha256:" + "1" * 64, ("reg/web:v1",), (f"reg/web@{PLATFORM}",))
    assert release_digest("reg/web:v1", single, None) == PLATFORM
