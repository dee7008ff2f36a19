"""Registry push notifications (Docker Distribution envelopes, Docker Hub
webhooks) → pushed tags (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puller.images.hooks import HookError, Push, parse_notification

DIGEST = "sha256:" + "5e" * 32
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
HOST = "127.0.0.1:5000"


def event(action="push", media_type=MANIFEST, repository="web", tag="live", digest=DIGEST,
          host=HOST, **target):
    """One event as Distribution 2.8 sends it (fields it leaves out are None here)."""
    fields = {"mediaType": media_type, "size": 528, "digest": digest, "length": 528,
              "repository": repository, "tag": tag,
              "url": f"http://{host}/v2/{repository}/manifests/{digest}", **target}
    return {"id": "d8ad1d4c", "timestamp": "2024-01-01T00:00:00Z", "action": action,
            "target": {k: v for k, v in fields.items() if v is not None},
            "request": {"id": "r1", "addr": "127.0.0.1:40000", "host": host, "method": "PUT",
                        "useragent": "docker/20.10.24"},
            "actor": {}, "source": {"addr": "box:5000", "instanceID": "i1"}}


def envelope(*events):
    return {"events": list(events)}


# Distribution envelopes ----------------------------------------------------------

def test_a_pushed_tag():
    assert parse_notification(envelope(event())) == [Push("web", "live", DIGEST, HOST)]


@pytest.mark.parametrize("media_type", [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    None,  # a registry that does not say
])
def test_every_manifest_type(media_type):
    assert parse_notification(envelope(event(media_type=media_type))) == [
        Push("web", "live", DIGEST, HOST)]


@pytest.mark.parametrize("ignored", [
    pytest.param(event(media_type="application/octet-stream", tag=None), id="blob-push"),
    pytest.param(event(media_type="application/vnd.docker.image.rootfs.diff.tar.gzip", tag=None),
                 id="layer-push"),
    pytest.param(event(tag=None), id="manifest-by-digest"),
    pytest.param(event(tag=""), id="empty-tag"),
    pytest.param(event(action="pull"), id="pull"),
    pytest.param(event(action="delete", tag=None), id="delete"),
    pytest.param(event(action="delete"), id="delete-tag"),
    pytest.param(event(action="mount", tag=None), id="mount"),
    pytest.param(event(repository=None), id="no-repository"),
    pytest.param({"action": "push", "target": "not an object"}, id="bad-target"),
    pytest.param("not an event", id="not-an-object"),
])
def test_ignored_events(ignored):
    assert parse_notification(envelope(ignored)) == []


def test_only_the_tag_pushes_of_a_mixed_envelope():
    body = envelope(
        event(media_type="application/octet-stream", tag=None, digest="sha256:" + "0" * 64),
        event(tag=None, digest="sha256:" + "1" * 64),  # a platform manifest of an index
        event(media_type="application/vnd.oci.image.index.v1+json", digest="sha256:" + "2" * 64),
        event(action="pull"),
        event(repository="team/api", tag="v2", host="registry.example.com"),
    )
    assert parse_notification(body) == [
        Push("web", "live", "sha256:" + "2" * 64, HOST),
        Push("team/api", "v2", DIGEST, "registry.example.com"),
    ]


def test_an_event_without_request_host_or_digest():
    body = envelope({"action": "push", "target": {"repository": "web", "tag": "live"}})
    assert parse_notification(body) == [Push("web", "live", None, None)]


def test_no_events():
    assert parse_notification(envelope()) == []


# Docker Hub webhooks --------------------------------------------------------------

HUB = {
    "callback_url": "https://registry.hub.docker.com/u/team/api/hook/2141b5bi5i5b02bec/",
    "push_data": {"pushed_at": 1417566161, "pusher": "trustedbuilder", "tag": "latest"},
    "repository": {"comment_count": 0, "date_created": 1417494799, "description": "",
                   "is_official": False, "is_private": True, "is_trusted": True,
                   "name": "api", "namespace": "team", "owner": "team",
                   "repo_name": "team/api",
                   "repo_url": "https://registry.hub.docker.com/u/team/api/",
                   "star_count": 0, "status": "Active"},
}


def test_a_docker_hub_webhook():
    assert parse_notification(HUB) == [Push("team/api", "latest", hub=True)]


@pytest.mark.parametrize("body", [
    {"push_data": {}, "repository": {"repo_name": "team/api"}},
    {"push_data": {"tag": "v1"}, "repository": {}},
    {"push_data": {"tag": 1}, "repository": {"repo_name": "team/api"}},
    {"push_data": "v1", "repository": {"repo_name": "team/api"}},
    {"push_data": {"tag": "v1"}, "repository": "team/api"},
])
def test_a_broken_docker_hub_webhook(body):
    with pytest.raises(HookError):
        parse_notification(body)


# Garbage ---------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    None, [], "events", 42, {}, {"hello": "world"}, {"events": "push"}, {"events": {"a": 1}},
    {"push_data": {"tag": "v1"}},  # no repository
])
def test_garbage(body):
    with pytest.raises(HookError) as caught:
        parse_notification(body)
    assert str(caught.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=20)
WORD = st.sampled_from(["push", "pull", "delete", "web", "live", MANIFEST, "", HOST])
EVENTS = st.lists(JSON | st.fixed_dictionaries({}, optional={
    "action": WORD | JSON,
    "target": JSON | st.fixed_dictionaries({}, optional={
        "repository": WORD | JSON, "tag": WORD | JSON, "digest": WORD | JSON,
        "mediaType": WORD | JSON}),
    "request": JSON | st.fixed_dictionaries({}, optional={"host": WORD | JSON}),
}), max_size=4)
BODIES = (JSON
          | st.fixed_dictionaries({"events": EVENTS | JSON})
          | st.fixed_dictionaries({"push_data": JSON | st.fixed_dictionaries(
              {}, optional={"tag": WORD | JSON}),
              "repository": JSON | st.fixed_dictionaries({}, optional={"repo_name": WORD | JSON})}))


@settings(max_examples=300, deadline=None, database=None)
@given(BODIES)
def test_any_json_is_pushes_or_a_hook_error(body):
    try:
        pushes = parse_notification(body)
    except HookError:
        return
    assert isinstance(pushes, list)
    for push in pushes:
        assert isinstance(push, Push)
        assert isinstance(push.repository, str) and push.repository
        assert isinstance(push.tag, str) and push.tag
        assert push.digest is None or isinstance(push.digest, str)
        assert push.host is None or isinstance(push.host, str)
        assert isinstance(push.matches("web:live"), bool)  # never raises either


# Push.matches ---------------------------------------------------------------------

@pytest.mark.parametrize("push, ref, matches", [
    (Push("web", "live"), f"{HOST}/web:live", True),
    (Push("web", "live"), f"{HOST}/web:other", False),
    (Push("web", "live"), f"{HOST}/team/web:live", False),
    (Push("web", "latest"), f"{HOST}/web", True),  # no tag is latest
    (Push("web", "latest"), f"{HOST}/web:latest", True),
    (Push("team/api", "v2"), "registry.example.com:443/team/api:v2", True),
    # Docker Hub: official images live under library/
    (Push("nginx", "latest"), "nginx", True),
    (Push("nginx", "latest"), "docker.io/library/nginx:latest", True),
    (Push("library/nginx", "1.25"), "nginx:1.25", True),
    (Push("nginx", "1.25"), "index.docker.io/nginx:1.25", True),
    (Push("team/api", "latest"), "team/api", True),
    (Push("team/api", "latest"), "docker.io/team/api:latest", True),
    (Push("nginx", "latest"), "team/nginx", False),
    (Push("library/nginx", "latest"), f"{HOST}/nginx", False),  # library/ only on Docker Hub
    (Push("web", "live"), "NOT A REF", False),
    (Push("web", "live"), "", False),
])
def test_matches(push, ref, matches):
    assert push.matches(ref) is matches


def test_a_docker_hub_webhook_matches_only_docker_hub_images():
    [push] = parse_notification({"push_data": {"tag": "v2"},
                                 "repository": {"repo_name": "audit/web"}})
    assert push.matches("audit/web:v2") and push.matches("docker.io/audit/web:v2")
    assert not push.matches("127.0.0.1:5099/audit/web:v2")
    assert not push.matches("ghcr.io/audit/web:v2")
