"""Facts parsed from recorded docker output (pure)."""

from __future__ import annotations

import pytest

from puller import constants
from puller.node.container import PS_FIELDS, Container, Image, from_ps_row

# recorded from `docker ps --format PS_FORMAT` (docker 20.10 and 28 clients alike)
RUNNING = ('"96d60b45"\t"web"\t"running"\t"Up 2 seconds (healthy)"\t"web"\t"n1"\t"abc"\t'
           '"sha256:1"\t"web:v1"')


@pytest.mark.parametrize("line,expected", [
    (RUNNING, dict(id="96d60b45", name="web", status="running", exit_code=0, health="healthy",
                   image_id="sha256:1")),
    ('"a"\t"web.prev"\t"exited"\t"Exited (137) 2 seconds ago"\t"web"\t"n1"\t"h"\t"sha256:2"\t""',
     dict(name="web.prev", status="exited", exit_code=137, health=None)),
    ('"a"\t"web"\t"restarting"\t"Restarting (1) 1 second ago"\t"web"\t"n1"\t"h"\t""\t""',
     dict(status="restarting", exit_code=1)),
    ('"a"\t"web"\t"running"\t"Up 3 seconds (health: starting)"\t"web"\t"n1"\t"h"\t""\t""',
     dict(health="starting")),
    ('"a"\t"web"\t"running"\t"Up 1 second (unhealthy)"\t"web"\t"n1"\t"h"\t""\t""',
     dict(health="unhealthy")),
    ('"a"\t"web"\t"created"\t"Created"\t"web"\t"n1"\t"h"\t""\t""', dict(status="created")),
])
def test_a_ps_row_gives_what_the_planner_needs(line, expected):
    container = from_ps_row(line)
    assert container is not None
    for field, value in expected.items():
        assert getattr(container, field) == value
    assert container.service == "web" and container.node == "n1"
    assert container.config_hash in ("abc", "h")


def test_the_ref_a_container_was_made_for_is_read():
    assert from_ps_row(RUNNING).asked_for == "web:v1"
    assert from_ps_row(RUNNING.rsplit("\t", 1)[0] + '\t""').asked_for is None


def test_an_image_s_oci_version_label_is_read():
    data = {"Id": "sha256:1", "Config": {"Labels": {constants.OCI_VERSION_LABEL: "1.2.7"}}}
    assert Image.from_inspect(data).version == "1.2.7"
    assert Image.from_inspect({"Id": "sha256:1", "Config": {"Labels": None}}).version is None
    assert Image.from_inspect({"Id": "sha256:1"}).version is None


def test_a_prev_row_is_recognised_as_a_predecessor():
    row = from_ps_row('"a"\t"web.prev"\t"exited"\t"Exited (0) 1 second ago"\t"web"\t"n"\t"h"\t""\t""')
    assert row.is_previous


@pytest.mark.parametrize("line", ["", "garbage", '"a"\t"b"', RUNNING + '\t"extra"',
                                  '"a"\t""\t"running"\t"Up"\t"web"\t"n1"\t"h"\t""\t""',
                                  '1\t2\t3\t4\t5\t6\t7\t8\t9'])
def test_anything_else_is_not_a_row(line):
    assert from_ps_row(line) is None


def test_the_format_asks_for_puller_s_own_labels():
    assert len(PS_FIELDS) == 9
    for key in (constants.LABEL_SERVICE, constants.LABEL_NODE, constants.LABEL_HASH,
                constants.LABEL_IMAGE, constants.LABEL_REF):
        assert any(key in field for field in PS_FIELDS)


def test_started_parses_docker_timestamps():
    at = Container("i", "n", "x", "running", started_at="2026-11-27T19:57:09.066251072Z").started
    assert at == pytest.approx(1795809429.066251)
    assert Container("i", "n", "x", "running", started_at="0001-01-01T00:00:00Z").started is None
