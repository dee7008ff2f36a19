"""The API's trust model, attacked as issue 9 did: no local user, web page or
webhook sender without the key can make root run a container.

The unprivileged attacks run as uid nobody (``setpriv``) against a daemon
started as root; the browser-style attacks send the headers a browser would.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import yaml

from ..certs import certificate
from ..cluster.conftest import free_port_pair
from ..testenv import build_image, fetch, serving, wait_until
from ..unprivileged import nobody  # noqa: F401  (a fixture)

PWN = "docker run --privileged -v /:/host busybox chroot /host id"


def pwn(name: str) -> dict:
    return {"name": name, "bash": PWN, "repo": "busybox", "tag": "latest"}


def raw(port: int, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None, tls_context=None) -> tuple[int, dict]:
    """One request with exactly these headers (http.client adds Host only when
    none is given), as a browser or a script would send it."""
    if tls_context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30,
                                                 context=tls_context)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, {"raw": data.decode("latin-1")}


def keyed(node, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.daemon.apikey}", **headers}


def api_port(node) -> int:
    return node.daemon.config.port + 1


# 1 and 3: a local user without the key ---------------------------------------------

NOBODY_PUT = """
import http.client, json, sys
port = int(sys.argv[1])
body = json.dumps({"name": "pwn", "bash": sys.argv[2], "repo": "busybox"}).encode()
answers = {}
for method, path, data in (("PUT", "/v1/services/pwn", body), ("GET", "/v1/services", None),
                           ("GET", "/v1/health", None)):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answers[f"{method} {path}"] = [response.status, response.read().decode()]
print(json.dumps(answers))
"""


def test_nobody_cannot_put_a_definition_over_raw_http(live_node, nobody):
    node = live_node()
    result = nobody.run("-c", NOBODY_PUT, str(api_port(node)), PWN)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert answers["PUT /v1/services/pwn"][0] == 401, answers
    assert answers["GET /v1/services"][0] == 401, answers  # run lines carry secrets
    assert answers["GET /v1/health"][0] == 200
    assert "API key" in answers["PUT /v1/services/pwn"][1]
    assert not os.path.exists(os.path.join(node.directory, "pwn.yml"))


def test_nobody_cannot_apply_with_the_cli(live_node, nobody):
    node = live_node()
    path = nobody.write("pwn3.yml", yaml.safe_dump(pwn("pwn3")))
    env = {"PULLER_PORT": str(node.daemon.config.port)}
    # the daemon's key file exists, and nobody may not read it
    result = nobody.puller("apply", path, env={**env,
                                               "PULLER_STATE_DIR": node.daemon.config.state_dir})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "permission denied reading the API key" in result.stderr, result.stderr
    assert "run as root or set PULLER_APIKEY" in result.stderr
    assert "Traceback" not in result.stderr
    # no key file at all (a state dir of nobody's own): the daemon says 401
    result = nobody.puller("apply", path, env={**env, "PULLER_STATE_DIR": nobody.path("empty")})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "401" in result.stderr and "API key" in result.stderr, result.stderr
    result = nobody.puller("apply", path, env={**env, "PULLER_APIKEY": "guessed"})
    assert result.returncode == 1 and "401" in result.stderr, result.stderr
    assert not os.path.exists(os.path.join(node.directory, "pwn3.yml"))


# 2: a web page in the node's browser -------------------------------------------------


def keep_service(node) -> None:
    node.write("keep", bash="'docker run busybox true'", repo="busybox", tag="v1",
               node="'^nowhere$'")
    wait_until(lambda: "keep" in node.daemon.scan().services, timeout=10, what="keep defined")


def tag_of(node, name: str) -> str:
    with open(os.path.join(node.directory, f"{name}.yml")) as handle:
        return yaml.safe_load(handle)["tag"]


def test_dns_rebinding_is_refused(live_node):
    node = live_node()
    port = api_port(node)
    keep_service(node)
    for key in (True, False):
        headers = keyed(node) if key else {}
        status, answer = raw(port, "GET", "/v1/services", headers={
            "Host": f"evil.example:{port}", **headers})
        assert status == 403 and "evil.example" in answer["error"], answer
        status, answer = raw(port, "PUT", "/v1/services/pwn2", json.dumps(pwn("pwn2")).encode(),
                             headers={"Host": f"evil.example:{port}",
                                      "Content-Type": "application/json", **headers})
        assert status == 403, answer
    assert not os.path.exists(os.path.join(node.directory, "pwn2.yml"))
    # this node's own names pass
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        status, answer = raw(port, "GET", "/v1/services", headers=keyed(node, Host=host))
        assert status == 200, (host, answer)


def test_a_cross_site_simple_request_cannot_change_a_tag(live_node):
    node = live_node()
    port = api_port(node)
    keep_service(node)
    simple = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    for headers in (simple, keyed(node, **simple),
                    {"Content-Type": "application/json", "Origin": "http://evil.example"},
                    keyed(node, **{"Content-Type": "text/plain"})):
        status, answer = raw(port, "POST", "/v1/services/keep/tag", b'{"tag": "v2"}', headers)
        assert status in (401, 403, 415), (headers, answer)
        assert tag_of(node, "keep") == "v1"
    status, answer = raw(port, "POST", "/v1/services/keep/tag", b'{"tag": "v2"}',
                         keyed(node, **{"Content-Type": "text/plain"}))
    assert status == 415 and "Content-Type" in answer["error"]
    status, answer = raw(port, "POST", "/v1/services/keep/tag", b'{"tag": "v2"}',
                         keyed(node, **{"Content-Type": "text/plain", "Origin": "null"}))
    assert status == 403
    # the same request from the node's own tools goes through
    status, answer = raw(port, "POST", "/v1/services/keep/tag", b'{"tag": "v2"}',
                         keyed(node, **{"Content-Type": "application/json; charset=utf-8"}))
    assert status == 200, answer
    assert tag_of(node, "keep") == "v2"


# Root's CLI finds the key by itself ---------------------------------------------------


def test_roots_cli_needs_nothing_but_the_port(live_node, tmp_path):
    node = live_node()
    keep_service(node)
    env = {**os.environ, "PULLER_STATE_DIR": node.daemon.config.state_dir}
    env.pop("PULLER_APIKEY", None)
    for argv, extra in (([f"-port={node.daemon.config.port}", "ls"], {}),
                        (["ls"], {"PULLER_PORT": str(node.daemon.config.port)})):
        result = subprocess.run([sys.executable, "-m", "puller", *argv], capture_output=True,
                                text=True, timeout=60, env={**env, **extra})
        assert result.returncode == 0, result.stderr
        assert "keep" in result.stdout
    path = tmp_path / "rooted.yml"
    path.write_text("name: rooted\nbash: docker run busybox true\nrepo: busybox\n"
                    "node: '^nowhere$'\n")
    result = subprocess.run([sys.executable, "-m", "puller",
                             f"-state-dir={node.daemon.config.state_dir}",
                             f"-port={node.daemon.config.port}", "apply", str(path)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert os.path.exists(os.path.join(node.directory, "rooted.yml"))


# Size and modes of what the API writes ------------------------------------------------


def test_a_definition_over_the_file_cap_is_refused(live_node):
    node = live_node()
    port = api_port(node)
    big = (yaml.safe_dump(pwn("big")) + "#" * 300_000 + "\n").encode()
    status, answer = raw(port, "PUT", "/v1/services/big", big,
                         keyed(node, **{"Content-Type": "application/yaml"}))
    assert status == 413, answer
    assert not os.path.exists(os.path.join(node.directory, "big.yml"))
    items = json.dumps([{**pwn("big"), "bash": PWN + " " + "x" * 300_000}]).encode()
    status, answer = raw(port, "PUT", "/v1/services", items,
                         keyed(node, **{"Content-Type": "application/json"}))
    assert status == 413, answer
    assert not os.path.exists(os.path.join(node.directory, "big.yml"))


def test_definitions_the_api_writes_are_0600(live_node):
    node = live_node()
    fields = {"name": "small", "bash": "docker run busybox true", "repo": "busybox",
              "node": "^nowhere$"}
    status, answer = node.call("PUT", "/v1/services/small", json.dumps(fields).encode())
    assert status == 200, answer
    path = os.path.join(node.directory, "small.yml")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    status, answer = node.call("POST", "/v1/services/small/tag", b'{"tag": "v2"}')
    assert status == 200, answer
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# The registry webhook ------------------------------------------------------------------


def test_a_hooks_digest_is_only_a_hint_the_registry_decides(live_node, registry, cleanup):
    node = live_node()
    path = f"hint-{cleanup.run_id}"
    publisher = registry.host.replace("127.0.0.1", "localhost")
    build_image(f"{publisher}/{path}:live", "one")
    other = build_image(f"{publisher}/{path}:other", "two")  # in the registry, not at live
    port = node.web("hint", f"{registry.host}/{path}", tag="live")
    node.daemon.wake()
    serving(port, "one")
    body = json.dumps({"events": [{"action": "push", "target": {
        "repository": path, "tag": "live", "digest": other,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json"},
        "request": {"host": registry.host}}]}).encode()
    before = node.daemon.last_report
    heads = node.daemon.freshness.client.requests
    status, answer = raw(api_port(node), "POST", "/v1/hooks/registry", body, keyed(
        node, **{"Content-Type": "application/vnd.docker.distribution.events.v1+json"}))
    assert status == 202 and answer == {"accepted": 1}, answer
    wait_until(lambda: node.daemon.last_report is not before, timeout=20,
               what="the pass the hook asked for")
    time.sleep(0.5)
    assert fetch(port) == "one"
    assert node.daemon.freshness.client.requests > heads  # the registry was asked


def test_query_strings_never_reach_the_log(live_node, caplog):
    import uuid

    caplog.set_level(logging.DEBUG, logger="puller")
    secret = uuid.uuid4().hex
    node = live_node(apikey="api-key-" + secret, api_addr="127.0.0.1")
    hub = json.dumps({"push_data": {"tag": "x"}, "repository": {"repo_name": "none"}}).encode()
    for key in (node.daemon.config.apikey, "wrong-key-" + secret):
        raw(api_port(node), "POST", f"/v1/hooks/registry?key={key}", hub,
            {"Content-Type": "application/json"})
    assert "/v1/hooks/registry" in caplog.text  # requests are logged at -verbose ...
    assert secret not in caplog.text  # ... without their query


def test_a_hook_key_opens_the_hook_and_nothing_else(live_node, cleanup):
    node = live_node(hook_key="hook-" + cleanup.run_id)
    port = api_port(node)
    hub = json.dumps({"push_data": {"tag": "x"}, "repository": {"repo_name": "none"}}).encode()
    bearer = {"Authorization": f"Bearer hook-{cleanup.run_id}"}
    status, _ = raw(port, "POST", "/v1/hooks/registry", hub,
                    {**bearer, "Content-Type": "application/json"})
    assert status == 202
    status, _ = raw(port, "POST", f"/v1/hooks/registry?key=hook-{cleanup.run_id}", hub,
                    {"Content-Type": "application/json"})
    assert status == 202
    status, _ = raw(port, "GET", "/v1/services", headers=bearer)
    assert status == 401
    status, _ = raw(port, "PUT", "/v1/services/pwn5", json.dumps(pwn("pwn5")).encode(),
                    {**bearer, "Content-Type": "application/json"})
    assert status == 401
    assert not os.path.exists(os.path.join(node.directory, "pwn5.yml"))


# TLS beyond loopback --------------------------------------------------------------------


@pytest.fixture
def daemon_process(tmp_path, cleanup):
    """Factory: ``puller -d`` in a process of its own, with its log."""
    processes = []

    def start(*extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        index = len(processes)
        directory = tmp_path / f"defs-{index}"
        directory.mkdir()
        log_path = tmp_path / f"puller-{index}.log"
        with open(log_path, "a") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "puller", "-d", f"-node={cleanup.node('tls')}",
                 f"-dir={directory}", f"-port={free_port_pair()}",
                 f"-state-dir={tmp_path / f'state-{index}'}", "-zeroconf=false", *extra],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        process.log = lambda: log_path.read_text()
        process.state_dir = str(tmp_path / f"state-{index}")
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def api_port_of(process) -> int:
    port = next(arg for arg in process.args if arg.startswith("-port="))
    return int(port.split("=", 1)[1]) + 1


def test_an_api_beyond_loopback_without_tls_refuses_to_start(daemon_process):
    process = daemon_process("-api-addr=0.0.0.0", env={"PULLER_APIKEY": "a-key"})
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the daemon serves 0.0.0.0 without TLS:\n{process.log()}")
    assert code == 1
    assert "without TLS" in process.log() and "-api-cert" in process.log(), process.log()


def test_an_api_beyond_loopback_is_served_over_tls(daemon_process, tmp_path):
    import ssl

    cert, key = certificate(tmp_path)
    process = daemon_process("-api-addr=0.0.0.0", f"-api-cert={cert}", f"-api-cert-key={key}")
    wait_until(lambda: "HTTP API on https://" in process.log() or process.poll() is not None,
               timeout=20, what="the API to listen")
    assert process.poll() is None, process.log()
    port = api_port_of(process)
    base = [sys.executable, "-m", "puller", f"-api=https://127.0.0.1:{port}",
            f"-state-dir={process.state_dir}", "ls"]
    result = subprocess.run(base, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PULLER_API_CA": cert})
    assert result.returncode == 0, result.stderr
    assert "SERVICE" in result.stdout
    result = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "certificate" in result.stderr, result.stderr
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        raw(port, "GET", "/v1/health")  # plain HTTP to the TLS port
    context = ssl.create_default_context(cafile=cert)
    status, answer = raw(port, "GET", "/v1/health", tls_context=context)
    assert status == 200 and answer["status"] == "ok"
    assert process.poll() is None


def test_api_insecure_opens_plain_http_loudly(daemon_process):
    process = daemon_process("-api-addr=0.0.0.0", "-api-insecure")
    wait_until(lambda: "HTTP API on http://" in process.log() or process.poll() is not None,
               timeout=20, what="the API to listen")
    assert process.poll() is None, process.log()
    assert "WARNING" in process.log() and "-api-insecure" in process.log()
    status, answer = raw(api_port_of(process), "GET", "/v1/health")
    assert status == 200
