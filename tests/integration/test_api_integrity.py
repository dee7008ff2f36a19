"""The API's read-modify-write: no lost update, and a bulk PUT is all or nothing."""

from __future__ import annotations

import json
import os
import threading
import time

from puller.control import services

# an image on a loopback port nothing listens on: no pull ever leaves this machine
WEB = {"name": "web", "bash": "docker run --init 127.0.0.1:9/web httpd -f",
       "repo": "127.0.0.1:9/web", "tag": "v1"}


def read(path) -> str:
    with open(path) as handle:
        return handle.read()


def test_a_put_during_a_tag_change_is_not_lost(live_node, monkeypatch):
    node = live_node()
    assert node.call("PUT", "/v1/services/web", json.dumps(WEB).encode())[0] == 200
    edited = {**WEB, "bash": "docker run --init --read-only 127.0.0.1:9/web httpd -f"}
    put_answers = []
    read_current = services._current

    def slow_read(api, name):
        """The tag handler reads the definition; a PUT arrives right then."""
        service = read_current(api, name)
        thread = threading.Thread(target=lambda: put_answers.append(
            node.call("PUT", "/v1/services/web", json.dumps(edited).encode())))
        thread.start()
        slow_read.thread = thread
        time.sleep(0.5)  # the PUT has all the time it needs to land, unless it must wait
        return service

    monkeypatch.setattr(services, "_current", slow_read)
    status, body = node.call("POST", "/v1/services/web/tag", json.dumps({"tag": "v2"}).encode())
    assert status == 200, body
    slow_read.thread.join(timeout=30)
    assert put_answers and put_answers[0][0] == 200
    # the PUT came after the tag change began: it is applied after it, whole
    assert "--read-only" in read(os.path.join(node.directory, "web.yml"))


def test_a_bulk_put_that_fails_half_way_writes_nothing(live_node):
    node = live_node()
    assert node.call("PUT", "/v1/services/web", json.dumps(WEB).encode())[0] == 200
    before = read(os.path.join(node.directory, "web.yml"))
    # db.yml cannot be written: a directory of that name is in the way
    os.makedirs(os.path.join(node.directory, "db.yml", "in-the-way"))
    items = [{**WEB, "tag": "v2"}, {**WEB, "name": "db", "bash": "docker run 127.0.0.1:9/db", "repo": "127.0.0.1:9/db"}]
    status, body = node.call("PUT", "/v1/services", json.dumps(items).encode())
    assert status == 500 and body["error"].startswith("nothing written"), body
    assert read(os.path.join(node.directory, "web.yml")) == before
    assert sorted(os.listdir(node.directory)) == [".puller-state.json", "db.yml", "web.yml"]


def test_a_bulk_put_takes_yaml_like_the_single_put(live_node):
    import urllib.request

    node = live_node()
    body = """- name: web
  bash: docker run 127.0.0.1:9/web   # YAML, comments and all
  repo: 127.0.0.1:9/web
- name: db
  bash: docker run 127.0.0.1:9/db
  repo: 127.0.0.1:9/db
"""
    request = urllib.request.Request(
        node.api + "/v1/services", data=body.encode(), method="PUT",
        headers={"Content-Type": "application/yaml",
                 "Authorization": f"Bearer {node.daemon.apikey}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200
        assert [w["service"]["name"] for w in json.loads(answer.read())["written"]] == \
            ["web", "db"]
    assert sorted(f for f in os.listdir(node.directory) if f.endswith(".yml")) == \
        ["db.yml", "web.yml"]
