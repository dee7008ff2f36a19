"""``track: RANGE``: the field, the pass's resolution of it, and what tag/rollback make of it.

The registry here is a stand-in that answers ``list_tags`` from a dict (the
scheduling and memory are pure logic); the real registry's listing, with
pagination and auth, is tested in tests/integration/test_track.py.
"""

from __future__ import annotations

import pytest

from puller.errors import DefinitionError
from puller.images.hooks import Push
from puller.images.registry import RegistryError
from puller.images.tracking import Tracker
from puller.node.container import Image
from puller.node.definitions import definition_fields, parse_definition
from puller.node.history import History, fixed, rollback_fields
from puller.node.planner import Action, Memory, plan
from puller.node.tracked import resolve_services
from puller.node.writer import write_definition

from .test_planner import container

TRACKED = """\
name: web
bash: docker run -p 80:80 reg.example/web   # the image without a tag
repo: reg.example/web
track: ^1.0
node: ''
"""


def tracked(range_="^1.0", name="web"):
    return parse_definition(TRACKED.replace("^1.0", range_).replace("name: web", f"name: {name}"),
                            f"{name}.yml")


# The field -----------------------------------------------------------------------------

def test_a_tracked_definition_has_its_range_and_no_tag_until_resolved():
    service = tracked()
    assert service.track == "^1.0" and service.tag == ""
    assert service.image_ref == "reg.example/web"  # never repo:latest by mistake
    assert definition_fields(service) == {"name": "web", "bash": service.bash,
                                          "repo": "reg.example/web", "track": "^1.0", "node": ""}


@pytest.mark.parametrize("range_", ["~1.2", "1.x", "'>=1.2 <2'", "1.2.3", "'^2.0.0-rc.1'", "'*'"])
def test_npm_ranges_are_accepted(range_):
    assert tracked(range_).track == range_.strip("'")


def test_a_range_yaml_reads_as_a_number_keeps_its_spelling():
    assert tracked("1.10").track == "1.10"  # not the float 1.1
    assert tracked("2").track == "2"


@pytest.mark.parametrize("text, line, fragment", [
    (TRACKED.replace("track: ^1.0", "tag: v1\ntrack: ^1.0"), 5,
     "tag: (line 4) and track: (line 5) both choose the tag"),
    (TRACKED + "digest: sha256:" + "a" * 64 + "\n", 4, "digest: pins one image and track:"),
    (TRACKED.replace("^1.0", "latest"), 4, "track 'latest' is not a semver range"),
    (TRACKED.replace("^1.0", "'>=1.2 garbage'"), 4, "is not a semver range"),
    (TRACKED.replace("^1.0", "''"), 4, "is not a semver range"),
    (TRACKED.replace("run -p 80:80 reg.example/web", "run -p 80:80 reg.example/web:v1"), 2,
     "names a tag, but track: ^1.0 picks the tag"),
])
def test_a_bad_track_names_file_line_and_why(text, line, fragment):
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, "defs/web.yml")
    assert caught.value.line == line and fragment in str(caught.value)
    assert str(caught.value).startswith(f"defs/web.yml:{line}: ")


# Resolution in a pass ------------------------------------------------------------------

class Registry:
    """A stand-in for ``Freshness.list_tags``: tags by repository, or an error."""

    def __init__(self, tags: dict[str, list[str]]):
        self.tags = tags
        self.error: Exception | None = None
        self.asked: list[str] = []

    def list_tags(self, repo, page_size=None):
        self.asked.append(repo)
        if self.error is not None:
            raise self.error
        return list(self.tags.get(repo, []))


@pytest.fixture
def registry():
    return Registry({"reg.example/web": ["latest", "0.9.0", "1.0.0", "1.2.0", "2.0.0",
                                         "1.3.0-rc.1", "sha-1f2e3d"]})


def test_a_tracked_service_runs_the_highest_matching_tag(registry, tmp_path):
    tracker = Tracker(registry, str(tmp_path / "tracking.json"))
    services, waiting = resolve_services({"web": tracked()}, tracker, now=1.0)
    assert waiting == {} and services["web"].tag == "1.2.0"
    assert services["web"].image_ref == "reg.example/web:1.2.0"
    assert definition_fields(services["web"])["tag"] == "1.2.0"  # what the history records


def test_tags_are_listed_on_the_schedule_of_the_digest_checks(registry):
    tracker = Tracker(registry)
    services = {"web": tracked()}
    resolve_services(services, tracker, now=1.0)  # never listed: at once
    resolve_services(services, tracker, now=2.0)  # not due: no request
    assert registry.asked == ["reg.example/web"]
    registry.tags["reg.example/web"].append("1.3.0")
    resolved, _ = resolve_services(services, tracker, now=3.0, pull_due=True)
    assert resolved["web"].tag == "1.3.0"
    registry.tags["reg.example/web"].append("1.4.0")
    resolved, _ = resolve_services(services, tracker, now=4.0, check=["web"])  # puller pull web
    assert resolved["web"].tag == "1.4.0"
    registry.tags["reg.example/web"].append("1.5.0")
    push = Push("web", "1.5.0", host="reg.example")
    resolved, _ = resolve_services(services, tracker, now=5.0, pushes=[push])
    assert resolved["web"].tag == "1.5.0"
    resolve_services(services, tracker, now=6.0, pushes=[Push("other", "1.6.0")])
    assert len(registry.asked) == 4


def test_a_registry_outage_keeps_the_last_resolution_even_across_a_restart(registry, tmp_path):
    path = str(tmp_path / "tracking.json")
    resolve_services({"web": tracked()}, Tracker(registry, path), now=1.0)
    registry.error = RegistryError("reg.example", "cannot be reached: connection refused")
    tracker = Tracker(registry, path)  # a restart
    resolved, waiting = resolve_services({"web": tracked()}, tracker, now=2.0)
    assert waiting == {} and resolved["web"].tag == "1.2.0"
    assert "cannot list its tags" in tracker.faults()["registry reg.example/web tags"]
    # backing off: not asked again at once, asked again on a trigger
    asked = len(registry.asked)
    resolve_services({"web": tracked()}, tracker, now=2.5, pull_due=True)
    assert len(registry.asked) == asked
    registry.error = None
    resolve_services({"web": tracked()}, tracker, now=3.0, check=["web"])
    assert tracker.faults() == {}


def test_with_nothing_resolved_the_service_waits_and_says_why(registry):
    tracker = Tracker(registry)
    services, waiting = resolve_services({"web": tracked("^3")}, tracker, now=1.0)
    assert services == {} and waiting == {"web": "no tag of reg.example/web matches ^3 yet"}
    registry.error = RegistryError("reg.example", "cannot be reached: connection refused")
    tracker = Tracker(registry)
    _, waiting = resolve_services({"web": tracked()}, tracker, now=1.0)
    assert waiting["web"] == ("cannot resolve track: ^1.0 (registry reg.example: cannot be "
                              "reached: connection refused)")


def test_a_new_range_is_resolved_at_once_and_the_old_one_forgotten(registry, tmp_path):
    path = tmp_path / "tracking.json"
    tracker = Tracker(registry, str(path))
    resolve_services({"web": tracked()}, tracker, now=1.0)
    resolved, _ = resolve_services({"web": tracked("~0.9")}, tracker, now=2.0)
    assert resolved["web"].tag == "0.9.0"
    assert "^1.0" not in path.read_text() and "~0.9" in path.read_text()


def test_untracked_services_pass_through_untouched(registry):
    fixed_one = parse_definition("name: db\nbash: docker run db\nrepo: db\ntag: v1\n", "db.yml")
    services, waiting = resolve_services({"db": fixed_one}, Tracker(registry), now=1.0)
    assert services == {"db": fixed_one} and waiting == {} and registry.asked == []


def test_a_waiting_service_keeps_its_container():
    running = container("web")
    result = plan({}, [running, container("web.prev")], {}, Memory(), 0, defined={"web"},
                  waiting={"web": "no tag of web matches ^3 yet"})
    assert [(s.action, s.service, s.reason) for s in result.steps] == [
        (Action.WAIT, "web", "no tag of web matches ^3 yet")]
    assert result.steps[0].container == running


# puller tag, rollback, history -----------------------------------------------------------

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
T = {"name": "web", "bash": "docker run web", "repo": "web", "track": "^1.0", "node": ""}


def entry(fields, digest, source="file"):
    return {"fields": fields, "at": 0.0, "node": "n1", "source": source, "digest": digest}


def test_a_rollback_returns_to_the_previous_resolution_pinned_and_stops_tracking():
    history = [entry({**T, "tag": "1.2.0"}, D1), entry({**T, "tag": "1.3.0"}, D2, "track")]
    target = rollback_fields(history, T)  # the API reads the file: no tag in it
    assert target == {**fixed(T), "tag": "1.2.0", "digest": D1}
    assert parse_definition(
        "".join(f"{k}: '{v}'\n" for k, v in target.items()), "web.yml").track is None


def test_a_rollback_to_a_tag_or_digest_of_a_tracked_service_is_a_fixed_tag():
    history = [entry({**T, "tag": "1.2.0"}, D1), entry({**T, "tag": "1.3.0"}, D2, "track")]
    assert rollback_fields(history, T, "1.2.0") == {**fixed(T), "tag": "1.2.0", "digest": D1}
    assert rollback_fields(history, T, "1.1.0") == {**fixed(T), "tag": "1.1.0"}
    assert rollback_fields(history, T, D1) == {**fixed(T), "tag": "1.2.0", "digest": D1}


def test_a_new_resolution_is_recorded_as_track_in_the_history(tmp_path):
    history = History(str(tmp_path / "history.json"), "n1")
    history.observe({"web": {**T, "tag": "1.2.0"}}, {"web": D1}, now=1.0)
    history.observe({"web": {**T, "tag": "1.3.0"}}, {"web": D2}, now=2.0)
    assert [(e["source"], e["fields"]["tag"], e["digest"]) for e in history.revisions("web")] == [
        ("file", "1.2.0", D1), ("track", "1.3.0", D2)]


def test_puller_tag_replaces_track_in_the_file_in_place(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text(TRACKED)
    current = definition_fields(parse_definition(TRACKED, str(path)))
    service = write_definition(str(tmp_path), fixed(current, "1.1.0"))
    assert service.tag == "1.1.0" and service.track is None
    assert path.read_text() == TRACKED.replace("track: ^1.0\n", "") + "tag: 1.1.0\n"


def test_a_listed_name_docker_cannot_run_as_a_tag_is_ignored():
    registry = Registry({"reg.example/web": ["1.9.0", "1.10.0+build.1", "1.11.0/x", "v1.2.0"]})
    resolved, _ = resolve_services({"web": tracked()}, Tracker(registry), now=1.0)
    assert resolved["web"].tag == "1.9.0"


def test_an_unreadable_directory_forgets_no_resolution(registry, tmp_path):
    path = tmp_path / "tracking.json"
    tracker = Tracker(registry, str(path))
    resolve_services({"web": tracked()}, tracker, now=1.0)
    resolve_services({}, tracker, now=2.0, prune=False)
    assert "^1.0" in path.read_text()
    resolve_services({}, tracker, now=3.0)  # the service is gone
    assert "^1.0" not in path.read_text()
