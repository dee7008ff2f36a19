"""The control surface against a live daemon: HTTP API, CLI client, history, exact rollback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import yaml

from ..testenv import build_image, fetch, free_port, wait_until, serving




def definition(name: str, repo: str, port: int, label: str, tag: str = "v1") -> dict:
    bash = f"docker run -p 127.0.0.1:{port}:80 --init --label {label} {repo} httpd -f -p 80 -h /www"
    return {"name": name, "bash": bash, "repo": repo, "tag": tag, "health_timeout": 0}


def definitions_in(directory: str) -> list[str]:
    """The visible files of a definitions dir (not the cluster's hidden state file,
    nor the hidden temp file of a write under way)."""
    return sorted(f for f in os.listdir(directory) if not f.startswith("."))


def puller(node, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI as root runs it: the key is found in the daemon's state dir."""
    return subprocess.run([sys.executable, "-m", "puller", f"-api={node.api}",
                           f"-state-dir={node.state_dir}", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_api_services_crud_and_the_originals_paths(live_node, images, cleanup):
    node = live_node()
    port = free_port()
    body = json.dumps(definition("api-a", images.repo, port, cleanup.label)).encode()
    status, answer = node.call("PUT", "/v1/services/api-a", body)
    assert status == 200, answer
    assert answer["runs_here"] and answer["path"].endswith("api-a.yml")
    serving(port, "v1")  # written into -dir, seen by the watcher, deployed

    status, answer = node.call("GET", "/v1/services/api-a")
    assert status == 200 and answer["service"]["tag"] == "v1"
    status, answer = node.call("GET", "/v1/services")
    assert [s["name"] for s in answer["services"]] == ["api-a"]
    status, answer = node.call("GET", "/v1/health")
    assert status == 200 and answer["node"] == node.name

    status, answer = node.call("POST", "/v1/services/api-a/tag", b'{"tag": "v2"}')
    assert status == 200 and answer["service"]["tag"] == "v2"
    serving(port, "v2")

    # the original's bulk PUT: all valid or nothing written
    port_b = free_port()
    good = definition("api-b", images.repo, port_b, cleanup.label)
    bad = {"name": "api-c", "bash": "docker run x ; rm -rf /", "repo": "x"}
    status, answer = node.call("PUT", "/v1/services", json.dumps([good, bad]).encode())
    assert status == 400 and "nothing written" in answer["error"] and "api-c" in answer["error"]
    assert not os.path.exists(os.path.join(node.directory, "api-b.yml"))
    status, answer = node.call("PUT", "/v1/services", json.dumps([good]).encode())
    assert status == 200
    serving(port_b, "v1")

    status, answer = node.call("DELETE", "/v1/services/api-b")
    assert status == 200
    wait_until(lambda: fetch(port_b) is None, timeout=15, what="api-b removed")
    status, answer = node.call("DELETE", "/v1/services/api-b")
    assert status == 404


def test_api_refuses_bad_bodies_with_a_message_and_writes_nothing(live_node, images, cleanup):
    node = live_node()
    cases = [
        (b"{not json: [", 400, "neither YAML nor JSON"),
        (b"[1, 2]", 400, "must be one definition"),
        (json.dumps({"name": "other", "bash": "docker run x", "repo": "x"}).encode(), 400,
         "is not 'bad-a'"),
        (json.dumps({"name": "bad-a", "bash": "docker run x && y", "repo": "x"}).encode(), 400,
         "`&&`"),
        (json.dumps({"name": "bad-a", "repo": "x"}).encode(), 400, "missing field 'bash'"),
        (json.dumps({"name": "bad-a", "bash": "docker run x", "repo": "x", "tga": "v2"}).encode(),
         400, "unknown field(s) tga"),
        (b"x" * (2 << 20), 413, "at most"),
    ]
    for body, code, fragment in cases:
        status, answer = node.call("PUT", "/v1/services/bad-a", body)
        assert status == code and fragment in answer["error"], (body[:40], answer)
    assert definitions_in(node.directory) == []
    status, answer = node.call("POST", "/v1/services/bad-a/tag", b'{"tag": "v2"}')
    assert status == 404
    status, answer = node.call("GET", "/v1/nowhere")
    assert status == 404 and "no such endpoint" in answer["error"]
    status, answer = node.call("DELETE", "/v1/health")
    assert status == 405


def test_api_key_guards_everything_but_health(live_node):
    node = live_node(apikey="s3cret", api_addr="127.0.0.1")
    for key, code in (("", 401), ("wrong", 401), ("s3cret", 200)):
        status, _ = node.call("GET", "/v1/services", key=key)
        assert status == code
    status, _ = node.call("GET", "/v1/health", key="")
    assert status == 200
    result = puller(node, "ls", env={"PULLER_APIKEY": "wrong"})
    assert result.returncode == 1 and "PULLER_APIKEY" in result.stderr


def test_concurrent_puts_of_one_service_leave_one_consistent_file(live_node, images, cleanup):
    node = live_node()
    bodies = [json.dumps(definition("race", images.repo, 20000 + i, cleanup.label,
                                    tag=f"v{1 + i % 2}")).encode() for i in range(16)]
    statuses = []

    def put(body):
        statuses.append(node.call("PUT", "/v1/services/race", body)[0])

    threads = [threading.Thread(target=put, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 16
    with open(os.path.join(node.directory, "race.yml")) as handle:
        written = yaml.safe_load(handle)
    assert any(yaml.safe_load(body) == written for body in bodies)  # one whole body, not a mix
    assert definitions_in(node.directory) == ["race.yml"]
    # temp files exist only while a write is under way (the cluster's state file too)
    wait_until(lambda: not [f for f in os.listdir(node.directory) if f.endswith(".tmp")],
               timeout=5, what="no temp file left")


def test_cli_commands_against_a_live_daemon(live_node, images, cleanup, tmp_path):
    node = live_node()
    port = free_port()
    path = tmp_path / "cli-a.yml"
    path.write_text(yaml.safe_dump(definition("cli-a", images.repo, port, cleanup.label)))
    result = puller(node, "apply", str(path))
    assert result.returncode == 0, result.stderr
    assert "cli-a: written" in result.stdout
    serving(port, "v1")

    result = puller(node, "ls")
    assert result.returncode == 0 and "cli-a" in result.stdout and "SERVICE" in result.stdout
    listed = json.loads(puller(node, "ls", "--json").stdout)
    assert listed["services"][0]["name"] == "cli-a"
    after = subprocess.run([sys.executable, "-m", "puller", "ls", "-json", f"-api={node.api}",
                            f"-state-dir={node.state_dir}"], capture_output=True, text=True,
                           timeout=120)  # the flags after the subcommand
    assert after.returncode == 0 and json.loads(after.stdout) == listed, after.stderr

    wait_until(lambda: node.daemon.status()["services"].get("cli-a", {}).get("state") == "running",
               timeout=10, what="status running")
    result = puller(node, "status")
    assert result.returncode == 0 and node.name in result.stdout and "running" in result.stdout
    status = json.loads(puller(node, "status", "--json").stdout)
    assert status["nodes"][0]["services"]["cli-a"]["state"] == "running"

    result = puller(node, "tag", "cli-a", "v2")
    assert result.returncode == 0 and "now v2" in result.stdout
    serving(port, "v2")

    result = puller(node, "history", "cli-a")
    assert result.returncode == 0 and "v1" in result.stdout and "v2" in result.stdout

    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\nbash: docker run x | y\nrepo: x\n")
    result = puller(node, "apply", str(bad))
    assert result.returncode == 1 and f"{bad}:2: bash:" in result.stderr and "`|`" in result.stderr
    other = tmp_path / "other.yml"
    other.write_text("name: cli-b\nbash: docker run x\nrepo: x\n")
    result = puller(node, "apply", str(other))
    assert result.returncode == 1 and "does not match the file name" in result.stderr
    assert "cli-b.yml" not in definitions_in(node.directory)

    result = puller(node, "rm", "cli-a")
    assert result.returncode == 0
    wait_until(lambda: fetch(port) is None, timeout=15, what="cli-a removed")
    result = puller(node, "rm", "cli-a")
    assert result.returncode == 1 and "no service" in result.stderr


def test_cli_without_a_daemon_says_so_in_one_line():
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "puller", f"-port={port - 1}", "ls"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"no puller daemon at http://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_rollback_is_exact_even_after_the_tag_moved(live_node, registry, cleanup):
    node = live_node()
    repo = f"{registry.host}/rb-{cleanup.run_id}"
    publisher = repo.replace("127.0.0.1", "localhost")
    v1_digest = build_image(f"{publisher}:v1", "first v1")
    build_image(f"{publisher}:v2", "v2")
    port = free_port()
    assert node.call("PUT", "/v1/services/rb", json.dumps(
        definition("rb", repo, port, cleanup.label, tag="v1")).encode())[0] == 200
    serving(port, "first v1")
    wait_until(lambda: any(r.get("digest") == v1_digest
                           for r in node.daemon.history.revisions("rb")),
               timeout=10, what="history to record v1's digest")
    assert node.call("POST", "/v1/services/rb/tag", b'{"tag": "v2"}')[0] == 200
    serving(port, "v2")
    build_image(f"{publisher}:v1", "v1 pushed again, other content")  # the tag moves

    result = puller(node, "rollback", "rb")
    assert result.returncode == 0, result.stderr
    assert v1_digest in result.stdout
    serving(port, "first v1")  # exactly what ran before, not what v1 is now
    with open(os.path.join(node.directory, "rb.yml")) as handle:
        assert yaml.safe_load(handle)["digest"] == v1_digest

    history = json.loads(puller(node, "history", "rb", "--json").stdout)["revisions"]
    assert [r["source"] for r in history] == ["api", "tag", "rollback"]

    # --to a digest, --to a tag, and `puller tag` un-pins
    status, answer = node.call("POST", "/v1/services/rb/rollback", b'{"to": "v2"}')
    assert status == 200 and answer["service"]["tag"] == "v2" and answer["service"]["digest"]
    serving(port, "v2")
    result = puller(node, "tag", "rb", "v1")
    assert result.returncode == 0
    serving(port, "v1 pushed again, other content")
    result = puller(node, "rollback", "rb", "--to", v1_digest)
    assert result.returncode == 0
    serving(port, "first v1")

    # a tag the registry does not have, a malformed digest: refused, nothing changes
    result = puller(node, "rollback", "rb", "--to", "nosuchtag")
    assert result.returncode == 1 and "not in the registry" in result.stderr, result.stderr
    result = puller(node, "rollback", "rb", "-to", "sha256:abc")
    assert result.returncode == 2 and "rb.yml" not in result.stderr, result.stderr
    assert [r["source"] for r in node.daemon.history.revisions("rb")][-1] == "rollback"

    status, answer = node.call("POST", "/v1/services/nothing/rollback")
    assert status == 404
