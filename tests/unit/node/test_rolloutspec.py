"""The ``rollout:`` field: parsed with its line, waves cut from the sorted node names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from puller.errors import DefinitionError
from puller.node.definitions import definition_fields, parse_definition, render_definition
from puller.node.rolloutspec import RolloutSpec, fixed_host_ports

BASE = "name: web\nbash: docker run {options} web\nrepo: web\ntag: v1\n"


def parse(rollout: str, options: str = "") -> object:
    return parse_definition(BASE.format(options=options) + rollout, "defs/web.yml")


def test_without_the_field_a_service_has_no_rollout():
    assert parse("").rollout is None


def test_every_key_is_read():
    service = parse("rollout:\n  canary: 1\n  parallel: 2\n  pause: 5\n  on_failure: halt\n"
                    "  order: start-first\n  node_timeout: 30\n")
    assert service.rollout == RolloutSpec(canary=1, parallel=2, pause=5.0, on_failure="halt",
                                          order="start-first", node_timeout=30.0)


def test_defaults_are_those_of_the_contract():
    spec = parse("rollout: {canary: 1}\n").rollout
    assert (spec.parallel, spec.pause, spec.on_failure, spec.order, spec.node_timeout) == (
        None, 0.0, "rollback", "stop-first", 120.0)


@pytest.mark.parametrize("rollout, why", [
    ("rollout: 3\n", "must be a mapping"),
    ("rollout: {canary: -1}\n", "canary must be a whole number"),
    ("rollout: {canary: 1.5}\n", "canary must be a whole number"),
    ("rollout: {parallel: 0}\n", "parallel must be a whole number of nodes, at least 1"),
    ("rollout: {pause: -2}\n", "pause must be between 0"),
    ("rollout: {pause: yes}\n", "pause must be a number"),
    ("rollout: {node_timeout: 0}\n", "node_timeout must be between more than 0"),
    ("rollout: {on_failure: explode}\n", "on_failure must be rollback or halt, not 'explode'"),
    ("rollout: {order: sideways}\n", "order must be stop-first or start-first"),
    ("rollout: {canaries: 1}\n", "unknown key 'canaries'"),
])
def test_a_bad_rollout_names_its_line_and_why(rollout, why):
    with pytest.raises(DefinitionError) as error:
        parse(rollout)
    assert why in str(error.value)
    assert error.value.line == 5


@pytest.mark.parametrize("options", ["-p 8080:80", "--publish=127.0.0.1:8080:80",
                                     "-p [::1]:8080:80/udp", "--network host", "--net=host"])
def test_start_first_refuses_a_fixed_host_port(options):
    with pytest.raises(DefinitionError) as error:
        parse("rollout: {order: start-first}\n", options)
    assert "fixed host port" in str(error.value) and error.value.line == 5


@pytest.mark.parametrize("options", ["-p 80", "-p :80", "-p 127.0.0.1::80", "--network web"])
def test_start_first_takes_ports_docker_picks(options):
    assert parse("rollout: {order: start-first}\n", options).rollout.order == "start-first"


def test_stop_first_keeps_fixed_ports():
    assert parse("rollout: {canary: 1}\n", "-p 8080:80").rollout.canary == 1


def test_fixed_host_ports_reads_chained_short_flags():
    assert fixed_host_ports(["-dp", "8080:80"]) == ["-p 8080:80"]


def test_the_field_survives_a_render_and_a_parse():
    service = parse("rollout:\n  canary: 1\n  on_failure: halt\n")
    text = render_definition(definition_fields(service))
    assert parse_definition(text, "defs/web.yml").rollout == service.rollout


names = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), unique=True, max_size=12)


@given(names, st.integers(0, 5), st.one_of(st.none(), st.integers(1, 5)))
def test_waves_cover_every_node_once_in_name_order(nodes, canary, parallel):
    waves = RolloutSpec(canary=canary, parallel=parallel).waves(nodes)
    assert [node for wave in waves for node in wave] == sorted(nodes)
    assert all(waves)
    if canary and nodes:
        assert waves[0] == sorted(nodes)[:canary]
    rest = waves[1:] if canary else waves
    if parallel:
        assert all(len(wave) <= parallel for wave in rest)
    else:
        assert len(rest) <= 1
