"""Metrics: a pass report folded into Prometheus text, on a registry of its own."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import REGISTRY, generate_latest

from puller.control.metrics import Metrics, parse_address
from puller.errors import PullerError
from puller.images.freshness import Remote
from puller.node.executor import Outcome
from puller.node.planner import Action, Step

from .test_notify import D2, container, deploy, image, report, service


def sample(metrics: Metrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_pass_moves_the_counters_and_shows_what_runs():
    metrics = Metrics("box-1")
    v2 = image("v2", D2)
    svc = service("v2")
    done = report(svc, v2, [deploy(svc, v2)], remote=Remote(digest=D2, checked_at=5.0))
    done = done.__class__(**{**done.__dict__, "at": 5.0, "docker_calls": 4})
    metrics.observe(done, 0.3, peers=2)
    failed = report(svc, v2, [deploy(svc, v2, error="boom", restored=True)])
    metrics.observe(failed, 0.2, peers=2)
    assert sample(metrics, "puller_deploys_total", service="web", result="ok") == 1
    assert sample(metrics, "puller_deploys_total", service="web", result="failed") == 1
    assert sample(metrics, "puller_rollbacks_total", service="web") == 1
    assert sample(metrics, "puller_registry_checks_total", registry="registry.example:5000",
                  result="ok") == 1
    assert sample(metrics, "puller_docker_calls_total") == 4
    assert sample(metrics, "puller_pass_seconds_count") == 2
    assert sample(metrics, "puller_peers") == 2
    assert sample(metrics, "puller_service_up", service="web") == 1
    assert sample(metrics, "puller_service_info", service="web", image=svc.image_ref,
                  version="v2", digest=D2) == 1
    assert b"puller_" not in generate_latest(REGISTRY)  # not the global registry


def test_a_put_back_counts_as_a_rollback():
    metrics = Metrics("box-1")
    v1 = image("v1", D2)
    restore = Step(Action.RESTORE, "web", "failed its probation", container=container(v1))
    metrics.observe(report(service(), v1, [Outcome(restore)]), 0.1, peers=0)
    assert sample(metrics, "puller_rollbacks_total", service="web") == 1


def test_metrics_are_served_over_http_and_the_server_closes():
    metrics = Metrics("box-1")
    host, port = metrics.serve("127.0.0.1:0")
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            assert b"puller_pass_seconds_bucket" in response.read()
    finally:
        metrics.close()
        metrics.close()


@pytest.mark.parametrize("text", ["9947x", "host:", "host:70000", "host:-1"])
def test_a_bad_address_is_refused_with_the_flag_named(text):
    with pytest.raises(PullerError, match="-metrics"):
        parse_address(text)
