"""Prometheus metrics of one node, from each pass's report, on a registry of its own.

``Metrics.observe`` folds a report in (no I/O); ``Metrics.serve`` starts the
``/metrics`` HTTP server, whose thread ``close()`` stops. Labels carry service
names, image references, versions and registry hosts: never a credential.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..errors import ImageReferenceError, PullerError
from ..images.reference import Reference
from ..node.planner import Action
from ..node.report import PassReport
from .notify import running_versions

log = logging.getLogger(__name__)

PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def parse_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (or ``:PORT``, on 127.0.0.1) → (address, port)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise PullerError(f"-metrics {text!r} is not ADDR:PORT (e.g. 127.0.0.1:9947)")
    return host, int(port)


def registry_of(ref: str) -> str:
    try:
        return Reference.parse(ref).domain
    except ImageReferenceError:
        return "unknown"


class Metrics:
    """The node's metrics; its own ``CollectorRegistry``, not the global one."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.registry = registry = CollectorRegistry()
        self.service_up = Gauge("puller_service_up", "1 when the service's container runs",
                                ["service"], registry=registry)
        self.service_info = Gauge("puller_service_info", "What each service runs (always 1)",
                                  ["service", "image", "version", "digest"], registry=registry)
        self.deploys = Counter("puller_deploys", "Deploys (create, recreate) by result",
                               ["service", "result"], registry=registry)
        self.rollbacks = Counter("puller_rollbacks", "Previous releases put back",
                                 ["service"], registry=registry)
        self.checks = Counter("puller_registry_checks", "Registry tag checks by result",
                              ["registry", "result"], registry=registry)
        self.pass_seconds = Histogram("puller_pass_seconds", "Duration of a reconcile pass",
                                      buckets=PASS_BUCKETS, registry=registry)
        self.docker_calls = Counter("puller_docker_calls", "docker CLI calls made by passes",
                                    registry=registry)
        self.peers = Gauge("puller_peers", "Peers this node knows", registry=registry)
        self.last_pass = Gauge("puller_last_pass_timestamp_seconds",
                               "When the latest pass ran (Unix time)", registry=registry)
        self._server = None
        self._thread = None

    def observe(self, report: PassReport, seconds: float, peers: int) -> None:
        """Fold one pass in."""
        self.pass_seconds.observe(seconds)
        self.docker_calls.inc(report.docker_calls)
        self.peers.set(peers)
        self.last_pass.set(report.at)
        for outcome in report.outcomes:
            step = outcome.step
            if step.action in (Action.CREATE, Action.RECREATE):
                self.deploys.labels(step.service, "ok" if outcome.ok else "failed").inc()
                if outcome.restored:
                    self.rollbacks.labels(step.service).inc()
            elif step.action is Action.RESTORE and outcome.ok:
                self.rollbacks.labels(step.service).inc()
        for ref, remote in report.remotes.items():
            if remote.checked_at and remote.checked_at >= report.at:  # asked in this pass
                result = "ok" if remote.digest and not remote.error else "error"
                self.checks.labels(registry_of(ref), result).inc()
        self._services(report)

    def _services(self, report: PassReport) -> None:
        running = {c.service for c in report.containers
                   if c.service and c.running and not c.is_aside}
        versions = running_versions(report)
        self.service_up.clear()
        self.service_info.clear()
        for name, service in report.scan.services.items():
            if not service.matches(self.node):
                continue
            self.service_up.labels(name).set(1 if name in running else 0)
            version = versions.get(name)
            if version is not None:
                self.service_info.labels(name, service.image_ref, version.label(),
                                         version.digest or "").set(1)

    def serve(self, address: str) -> tuple[str, int]:
        """Serve ``/metrics`` on ``ADDR:PORT``; the bound address."""
        if self._server is not None:
            return self._server.server_address[:2]
        host, port = parse_address(address)
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise PullerError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                              "(-metrics picks another address)") from None
        bound = self._server.server_address[:2]
        log.info("metrics on http://%s:%d/metrics", *bound)
        return bound

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)

