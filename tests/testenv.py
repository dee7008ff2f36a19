"""Real parts for tests and benchmarks: a Docker engine, a registry, test images.

Nothing here is mocked. ``Engine.ensure()`` uses the running engine or starts
``dockerd`` (and stops it again); ``Registry`` runs Docker Distribution
(``docker-registry``) on a free loopback port with storage in a temp dir;
``build_image`` makes a busybox image whose ``/www/index.html`` tells its
version, so a test can see which image a container runs by fetching a page.
For registries that want credentials: ``write_htpasswd`` (Basic auth),
``TokenServer`` (Distribution's token auth, and Google's OAuth endpoint for a
``service_account_file``), ``docker_login`` into a docker config of the test's.
"""

from __future__ import annotations

import base64
import http.server
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

BUSYBOX_APPLETS = ("sh", "sleep", "httpd", "cat", "echo", "false", "true", "ls", "wget")
TEST_LABEL = "puller-test.run"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def docker(*args: str, check: bool = True, timeout: float = 120, input: str | None = None
           ) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          timeout=timeout, input=input)


def stop_process(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM, and SIGKILL if it is still there after ``grace`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def fetch(port: int, path: str = "/", timeout: float = 1.0) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return None  # refused, reset, or cut mid-answer by a container going away


def serving(port: int, text: str, timeout: float = 15) -> bool:
    """Wait until http://127.0.0.1:port/ answers ``text`` (which image version runs)."""
    return wait_until(lambda: fetch(port) == text, timeout=timeout,
                      what=f"port {port} to serve {text!r}")


class Engine:
    """A reachable Docker engine: the running one, or a ``dockerd`` started here."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.log_path: str | None = None

    @staticmethod
    def reachable() -> bool:
        try:
            return docker("info", check=False, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def ensure(self) -> "Engine":
        if self.reachable():
            return self
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise RuntimeError("no Docker engine is reachable and dockerd is not installed: "
                               "install docker.io (bash .ci/run does)")
        handle, self.log_path = tempfile.mkstemp(prefix="puller-dockerd-", suffix=".log")
        self.process = subprocess.Popen([dockerd, "--iptables=false"], stdout=handle,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        os.close(handle)
        try:
            wait_until(self.reachable, timeout=60, interval=0.5, what="dockerd to answer")
        except AssertionError:
            self.close()
            raise
        return self

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, grace=30)


@dataclass
class Registry:
    """Docker Distribution on a free port of 127.0.0.1, storage in a temp dir."""

    extra_config: str = ""
    host: str = ""
    root: str = ""
    process: subprocess.Popen | None = None

    def start(self) -> "Registry":
        """Start (or start again, on the same port and storage)."""
        binary = shutil.which("docker-registry") or shutil.which("registry")
        if binary is None:
            raise RuntimeError("docker-registry is not installed: apt-get install docker-registry")
        if not self.root:
            self.root = tempfile.mkdtemp(prefix="puller-registry-")
            self.host = f"127.0.0.1:{free_port()}"
        config = os.path.join(self.root, "config.yml")
        with open(config, "w") as handle:
            handle.write(
                "version: 0.1\n"
                "log: {level: info}\n"
                f"storage: {{filesystem: {{rootdirectory: {self.root}/data}}, delete: {{enabled: true}}}}\n"
                f"http: {{addr: {self.host}}}\n" + self.extra_config
            )
        log = open(os.path.join(self.root, "registry.log"), "a")
        self.process = subprocess.Popen([binary, "serve", config], stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(lambda: self._answers(), timeout=20, what="the registry to answer")
        return self

    def stop(self) -> None:
        """Stop the registry process; its storage stays for a restart."""
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)

    def log(self) -> str:
        with open(os.path.join(self.root, "registry.log")) as handle:
            return handle.read()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False

    def close(self) -> None:
        self.stop()
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


def build_image(ref: str, content: str, cmd: str = '["/bin/sh"]', push: bool = True,
                labels: dict[str, str] | None = None) -> str:
    """Import a busybox image whose /www/index.html is ``content`` (with image
    ``labels``); push it. Returns the pushed digest (or the image id when not pushed)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    with tempfile.TemporaryDirectory(prefix="puller-image-") as root:
        os.makedirs(os.path.join(root, "bin"))
        os.makedirs(os.path.join(root, "www"))
        os.makedirs(os.path.join(root, "tmp"))
        shutil.copy2(busybox, os.path.join(root, "bin", "busybox"))
        for applet in BUSYBOX_APPLETS:
            os.symlink("busybox", os.path.join(root, "bin", applet))
        with open(os.path.join(root, "www", "index.html"), "w") as handle:
            handle.write(content)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        changes = [f"CMD {cmd}", *(f"LABEL {key}={value}" for key, value in (labels or {}).items())]
        subprocess.run(["docker", "import", *(arg for change in changes for arg in ("-c", change)),
                        "-", ref], stdin=tar.stdout,
                       check=True, capture_output=True, timeout=120)
        tar.stdout.close()
        tar.wait()
    if not push:
        return docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    out = docker("push", ref).stdout
    for word in out.split():
        if word.startswith("sha256:"):
            return word
    raise AssertionError(f"no digest in docker push output: {out}")


@dataclass
class Cleanup:
    """Removes, even after a failure, every container a test made (by label)."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    nodes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{TEST_LABEL}={self.run_id}"

    def node(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.nodes.append(name)
        return name

    def close(self) -> None:
        filters = [f"label={self.label}"] + [f"label=io.puller.node={n}" for n in self.nodes]
        ids: set[str] = set()
        for flt in filters:
            ids.update(docker("ps", "-aq", "--filter", flt, check=False).stdout.split())
        if ids:
            docker("rm", "-f", *sorted(ids), check=False)
        # images of the test's own repositories (named after the run id), and any recorded;
        # one a moved tag left untagged goes by its id
        listed = docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}",
                        check=False).stdout
        rows = [line.split() for line in listed.splitlines() if self.run_id in line]
        mine = sorted({image if ref.endswith(":<none>") else ref
                       for ref, image in (row for row in rows if len(row) == 2)})
        if self.images or mine:
            docker("image", "rm", "-f", *self.images, *mine, check=False)


def image_id(ref: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def inspect(name: str) -> dict | None:
    result = docker("container", "inspect", name, check=False)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)[0]


# Authenticated registries ------------------------------------------------------


def write_htpasswd(path, users: dict[str, str]) -> None:
    """Write an htpasswd file of bcrypt lines, atomically: Distribution reads a
    replaced file again without a restart."""
    import bcrypt

    salt = bcrypt.gensalt(rounds=4)  # the cheapest cost: the registry checks every request
    lines = "".join(f"{user}:{bcrypt.hashpw(password.encode(), salt).decode()}\n"
                    for user, password in users.items())
    with open(f"{path}.tmp", "w") as handle:
        handle.write(lines)
    os.replace(f"{path}.tmp", path)


def htpasswd_config(path) -> str:
    """The registry config lines for Basic auth against an htpasswd file."""
    return f"auth:\n  htpasswd:\n    realm: test\n    path: {path}\n"


def docker_login(host: str, user: str, password: str, config_dir) -> None:
    """``docker login`` into ``config_dir`` (never the user's own config)."""
    docker("--config", str(config_dir), "login", "--username", user, "--password-stdin",
           f"https://{host}", input=password, timeout=60)


def rsa_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def base64_std(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(key, header: dict, claims: dict) -> str:
    """A compact RS256 JWS of ``claims``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header = {"typ": "JWT", "alg": "RS256", **header}
    signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     _b64url(json.dumps(claims, separators=(",", ":")).encode()))
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64url(signature)


def jwt_claims(token: str) -> dict:
    """The claims of a compact JWT, unverified."""
    return json.loads(_unb64url(token.split(".")[1]))


def self_signed_certificate(key, name: str = "puller test token issuer"):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def service_account_file(path, token_uri: str,
                         email: str = "puller-test@example.iam.gserviceaccount.com") -> str:
    """A Google service-account key file (a fresh RSA key) whose token_uri is
    ``token_uri``: google-auth then asks that endpoint for access tokens."""
    from cryptography.hazmat.primitives import serialization

    pem = rsa_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "puller-test",
            "private_key_id": uuid.uuid4().hex, "private_key": pem, "client_email": email,
            "client_id": "1234567890", "token_uri": token_uri}
    with open(path, "w") as handle:
        json.dump(info, handle)
    return str(path)


@dataclass
class TokenRequest:
    method: str
    user: str | None  # the Basic user, or the service account (iss) of a JWT grant
    scopes: tuple[str, ...]
    agent: str


class TokenServer:
    """A token server on a free port of 127.0.0.1, served by a thread of this process.

    - ``GET /token``: Docker Distribution token auth. Checks the Basic
      credentials against ``users`` (401 otherwise) and grants every scope
      asked (``repository:NAME:pull,push``) in an RS256 JWT whose header
      carries the signing certificate (``x5c``); ``rootcertbundle`` is that
      certificate, for the registry's config (``registry_auth_config``).
    - ``POST /token``: Google's OAuth endpoint for a service account's JWT
      bearer grant: answers ``google_token``.

    ``requests`` records what was asked. ``close()`` stops the thread and
    removes the files; usable as a context manager.
    """

    def __init__(self, users: dict[str, str] | None = None, google_token: str | None = None,
                 service: str = "test-registry", issuer: str = "test-issuer",
                 expires_in: int = 300):
        self.users = dict(users or {})
        self.google_token = google_token
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.requests: list[TokenRequest] = []
        self.root = ""
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def realm(self) -> str:
        return self.url + "/token"

    @property
    def rootcertbundle(self) -> str:
        return os.path.join(self.root, "token-cert.pem")

    def registry_auth_config(self) -> str:
        return ("auth:\n  token:\n"
                f"    realm: {self.realm}\n    service: {self.service}\n"
                f"    issuer: {self.issuer}\n    rootcertbundle: {self.rootcertbundle}\n")

    def start(self) -> "TokenServer":
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> "TokenServer":
        from cryptography.hazmat.primitives import serialization

        self.root = tempfile.mkdtemp(prefix="puller-tokens-")
        self._key = rsa_key()
        certificate = self_signed_certificate(self._key)
        self._x5c = base64_std(certificate.public_bytes(serialization.Encoding.DER))
        with open(self.rootcertbundle, "wb") as handle:
            handle.write(certificate.public_bytes(serialization.Encoding.PEM))
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server._registry_token(self)

            def do_POST(self):  # noqa: N802
                server._google_token(self)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="test-token-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(timeout=10)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "TokenServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def google_requests(self) -> list[TokenRequest]:
        return [r for r in self.requests if r.method == "POST"]

    # Handlers ---------------------------------------------------------------

    @staticmethod
    def _answer(handler, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _registry_token(self, handler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(url.query)
        scopes = tuple(query.get("scope", []))
        user = None
        authorization = handler.headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            except ValueError:
                user, password = None, None
            if user not in self.users or self.users[user] != password:
                user = None
        self.requests.append(TokenRequest("GET", user, scopes,
                                          handler.headers.get("User-Agent", "")))
        if url.path != "/token":
            return self._answer(handler, 404, {"errors": [{"message": "not found"}]})
        if user is None:
            return self._answer(handler, 401, {"errors": [{"code": "UNAUTHORIZED"}]},
                                {"WWW-Authenticate": 'Basic realm="test-tokens"'})
        access = []
        for scope in scopes:
            for item in scope.split(" "):
                kind, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind and name:
                    access.append({"type": kind, "name": name,
                                   "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user, "aud": self.service,
                  "exp": now + self.expires_in, "nbf": now - 1, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        token = sign_jwt(self._key, {"x5c": [self._x5c]}, claims)
        self._answer(handler, 200, {"token": token, "access_token": token,
                                    "expires_in": self.expires_in})

    def _google_token(self, handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(handler.rfile.read(length).decode())
        assertion = (form.get("assertion") or [""])[0]
        try:
            issuer = jwt_claims(assertion).get("iss")
        except (ValueError, IndexError):
            issuer = None
        self.requests.append(TokenRequest("POST", issuer, (),
                                          handler.headers.get("User-Agent", "")))
        grant = (form.get("grant_type") or [""])[0]
        if (handler.path != "/token" or self.google_token is None or issuer is None
                or grant != "urn:ietf:params:oauth:grant-type:jwt-bearer"):
            return self._answer(handler, 400, {"error": "invalid_grant"})
        self._answer(handler, 200, {"access_token": self.google_token, "expires_in": 3599,
                                    "token_type": "Bearer"})
