"""Image retention (pure): which pulled images may go, and when a run is due."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from puller.node.container import Container, Image
from puller.node.definitions import parse_definition
from puller.node.executor import Outcome
from puller.node.planner import Action, Step, Target
from puller.node.pulled import PulledImages
from puller.node.pruner import proved_itself
from puller.node.retention import foreign_tags, kept_releases, releases_of, removable

REPO = "127.0.0.1:5000/web"
NAME = "127.0.0.1:5000/web"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def image_id(n: int) -> str:
    return f"sha256:{n + 1000:064x}"


def image(n: int, tags=(), repo: str = REPO) -> Image:
    """Release n of ``repo``: pulled by its digest, carrying ``tags``."""
    return Image(image_id(n), tuple(f"{repo}:{t}" for t in tags), (f"{repo}@{digest(n)}",))


def revision(n: int, tag: str | None = None, repo: str = REPO) -> dict:
    fields = {"name": "web", "bash": "docker run web", "repo": repo, "tag": tag or f"v{n}"}
    return {"fields": fields, "at": float(n), "digest": digest(n)}


def test_the_last_n_releases_of_each_service_are_kept():
    history = {"web": [revision(n) for n in range(1, 6)],
               "api": [revision(7, repo="127.0.0.1:5000/api")]}
    assert kept_releases(history, 2) == {(NAME, digest(5)), (NAME, digest(4)),
                                         ("127.0.0.1:5000/api", digest(7))}
    assert kept_releases(history, 0) == frozenset()


def test_releases_are_distinct_digests_and_revisions_that_never_ran_do_not_count():
    entries = [revision(1), revision(2), {**revision(3), "digest": None},
               {**revision(2), "fields": {**revision(2)["fields"], "tag": "again"}}]
    # v2 twice (a rollback, say) is one release; v3 never ran
    assert kept_releases({"web": entries}, 2) == {(NAME, digest(2)), (NAME, digest(1))}


def test_a_malformed_history_entry_is_skipped_not_fatal():
    entries = [revision(1), {"fields": {"repo": "NOT A REPO"}, "digest": digest(9)}, {}, "x"]
    assert kept_releases({"web": entries}, 3) == {(NAME, digest(1))}


def test_the_story_of_the_contract():
    """v1..v5 pulled; v5 runs; keep 2: v1..v3 go, except the one a stopped
    container uses, the one a person tagged, and the one a definition names."""
    local = {image_id(n): image(n, tags=[f"v{n}"]) for n in range(1, 6)}
    local[image_id(1)] = image(1, tags=["v1", "mine"])  # a person's docker tag
    pulled = {image_id(n): [f"{REPO}:v{n}"] for n in range(1, 6)}
    kept = kept_releases({"web": [revision(n) for n in range(1, 6)]}, 2)
    assert removable(pulled, local, set(), set(), kept, 2) == (image_id(2), image_id(3))
    assert removable(pulled, local, {image_id(2)}, set(), kept, 2) == (image_id(3),)
    assert removable(pulled, local, set(), {image_id(3)}, kept, 2) == (image_id(2),)
    assert removable(pulled, local, set(), set(), kept, 0) == ()  # off


def test_a_moved_tag_leaves_an_untagged_pulled_image_that_may_go():
    old = Image(image_id(1), (), (f"{REPO}@{digest(1)}",))  # latest moved on
    assert removable({old.id: [f"{REPO}:latest"]}, {old.id: old}, set(), set(),
                     frozenset(), 1) == (old.id,)


def test_an_unreadable_or_foreign_tag_keeps_an_image():
    assert foreign_tags(image(1, tags=["v1"]), [f"{REPO}:v1"]) is False
    assert foreign_tags(image(1, tags=["v1"]), [f"{REPO}@{digest(1)}"]) is True
    assert foreign_tags(Image(image_id(1), ("Bad Tag",), ()), [REPO]) is True
    # docker's familiar names and puller's normalised ones are the same tag
    assert foreign_tags(Image(image_id(1), ("busybox:latest",), ()),
                        ["docker.io/library/busybox"]) is False


def test_a_record_that_names_another_image_is_not_trusted():
    pulled = {image_id(1): [f"{REPO}:v1"]}
    assert removable(pulled, {image_id(1): image(2)}, set(), set(), frozenset(), 1) == ()


# Property: whatever the facts, never an in-use, foreign, current or kept image ---------

IDS = st.integers(min_value=1, max_value=8)
TAGS = st.lists(st.sampled_from(["v1", "v2", "latest", "mine"]), max_size=2, unique=True)


@st.composite
def facts(draw):
    local = {}
    for n in draw(st.sets(IDS, max_size=8)):
        local[image_id(n)] = image(n, tags=draw(TAGS))
    pulled = {image_id(n): [f"{REPO}:{t}" for t in draw(TAGS)]
              for n in draw(st.sets(IDS, max_size=8))}
    in_use = {image_id(n) for n in draw(st.sets(IDS, max_size=3))}
    current = {image_id(n) for n in draw(st.sets(IDS, max_size=3))}
    history = {"web": [revision(n) for n in draw(st.lists(IDS, max_size=8))]}
    keep = draw(st.integers(min_value=0, max_value=4))
    return pulled, local, in_use, current, history, keep


@settings(max_examples=400, deadline=None)
@given(facts())
def test_never_an_in_use_foreign_current_or_kept_image(case):
    pulled, local, in_use, current, history, keep = case
    kept = kept_releases(history, keep)
    chosen = removable(pulled, local, in_use, current, kept, keep)
    for image_id_ in chosen:
        assert image_id_ in pulled and image_id_ in local  # puller pulled it, it is here
        assert image_id_ not in in_use and image_id_ not in current
        assert not releases_of(local[image_id_]) & kept
        assert not foreign_tags(local[image_id_], pulled[image_id_])
    if keep <= 0:
        assert chosen == ()
    # and it is not empty for want of trying: every image that breaks no rule goes
    for image_id_, refs in pulled.items():
        free = (keep > 0 and image_id_ in local and image_id_ not in in_use | current
                and not releases_of(local[image_id_]) & kept
                and not foreign_tags(local[image_id_], refs))
        assert (image_id_ in chosen) == free


@settings(max_examples=100, deadline=None)
@given(st.lists(IDS, min_size=1, max_size=12), st.integers(min_value=1, max_value=5))
def test_the_newest_release_is_always_kept(runs, keep):
    kept = kept_releases({"web": [revision(n) for n in runs]}, keep)
    assert (NAME, digest(runs[-1])) in kept
    assert len(kept) == min(keep, len(set(runs)))


# When a run is due --------------------------------------------------------------------


def service(health_timeout: str) -> object:
    text = (f"name: web\nbash: docker run {REPO}\nrepo: {REPO}\ntag: v1\n"
            f"health_timeout: {health_timeout}\n")
    return parse_definition(text, "/defs/web.yml")


def container(name: str) -> Container:
    return Container("c" * 64, name, image_id(1), "exited", labels={"io.puller.service": "web"})


def test_a_run_is_due_when_a_deploy_proved_itself():
    prev = Step(Action.REMOVE, "web", "proved itself", container=container("web.prev"))
    orphan = Step(Action.REMOVE, "web", "deleted", container=container("web"))
    at_once = Step(Action.RECREATE, "web", "tag", container=container("web"),
                   target=Target(service("0"), image(1), "h"))
    on_probation = Step(Action.RECREATE, "web", "tag", container=container("web"),
                        target=Target(service("10"), image(1), "h"))
    assert proved_itself([Outcome(prev)]) and proved_itself([Outcome(at_once)])
    assert not proved_itself([Outcome(prev, error="no")])
    assert not proved_itself([Outcome(orphan), Outcome(on_probation)])
    assert not proved_itself([])


# The record of pulls ------------------------------------------------------------------


def test_the_record_keeps_only_what_a_pull_brought(tmp_path):
    path = str(tmp_path / "pulled.json")
    record = PulledImages(path)
    record.note(image_id(1), f"{REPO}:v1", fresh=True)
    record.note(image_id(2), f"{REPO}:v2", fresh=False)  # it was there before: not ours
    record.note(image_id(1), f"{REPO}:latest", fresh=False)  # ours, one more name
    assert PulledImages(path).snapshot() == {image_id(1): (f"{REPO}:v1", f"{REPO}:latest")}
    record.forget({image_id(1)})
    assert PulledImages(path).snapshot() == {}


def test_a_bad_record_is_reported_and_a_new_one_started(tmp_path, caplog):
    path = tmp_path / "pulled.json"
    path.write_text("{not json")
    assert PulledImages(str(path)).snapshot() == {}
    assert "cannot be read" in caplog.text and f"kept as {path}.unreadable" in caplog.text
    assert (tmp_path / "pulled.json.unreadable").read_text() == "{not json"  # nothing lost
    path.write_text(json.dumps({image_id(1): {"refs": [REPO]}, "junk": 3,
                                image_id(2): {"refs": "x"}}))
    assert PulledImages(str(path)).snapshot() == {image_id(1): (REPO,)}
