"""`puller tag` and `puller rollback` of a tracked service, through the API's
handlers, on real files: a fixed tag replaces track:, the file edited in place."""

from __future__ import annotations

import json
import threading

from puller.control.routing import Request
from puller.control.services import rollback, set_tag
from puller.node.directory import DefinitionDir
from puller.node.history import History

TRACKED = """\
# web follows the 1.x releases
name: web
bash: docker run reg.example/web
repo: reg.example/web
track: ^1.0   # newest 1.x
"""
D12, D13 = "sha256:" + "2" * 64, "sha256:" + "3" * 64


class Node:
    node = "n1"

    def __init__(self, directory):
        self.directory = str(directory)
        self.history = History(str(directory / "history.json"), "n1")

    def scan(self):
        return DefinitionDir(self.directory).scan()

    def wake(self):
        pass


class Api:
    def __init__(self, directory):
        self.node = Node(directory)
        self.write_lock = threading.RLock()


def post(handler, api, action, body):
    return handler(api, Request("POST", f"/v1/services/web/{action}", {"name": "web"},
                                json.dumps(body).encode(), {}))


def test_puller_tag_replaces_track_by_the_fixed_tag_in_place(tmp_path):
    (tmp_path / "web.yml").write_text(TRACKED)
    status, answer = post(set_tag, Api(tmp_path), "tag", {"tag": "1.2.7"})
    assert status == 200 and answer["service"]["tag"] == "1.2.7"
    assert "track" not in answer["service"]
    assert (tmp_path / "web.yml").read_text() == (
        TRACKED.replace("track: ^1.0   # newest 1.x\n", "") + "tag: 1.2.7\n")


def test_a_rollback_returns_to_the_previous_resolution_pinned(tmp_path):
    (tmp_path / "web.yml").write_text(TRACKED)
    api = Api(tmp_path)
    fields = {"name": "web", "bash": "docker run reg.example/web", "repo": "reg.example/web",
              "tag": "1.2.0", "track": "^1.0", "node": ""}
    api.node.history.observe({"web": fields}, {"web": D12}, now=1.0)
    api.node.history.observe({"web": {**fields, "tag": "1.3.0"}}, {"web": D13}, now=2.0)
    status, answer = rollback(api, Request("POST", "/v1/services/web/rollback", {"name": "web"},
                                           b"", {}))
    assert status == 200
    assert (answer["service"]["tag"], answer["service"]["digest"]) == ("1.2.0", D12)
    text = (tmp_path / "web.yml").read_text()
    assert "track:" not in text and text.startswith("# web follows the 1.x releases\n")
    assert text.endswith(f"tag: 1.2.0\ndigest: {D12}\n")
