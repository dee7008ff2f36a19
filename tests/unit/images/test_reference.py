"""Image references, parsed and normalised as docker's distribution/reference does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puller.errors import ImageReferenceError
from puller.images.reference import Reference, same_repository

SHA = "sha256:" + "0123456789abcdef" * 4

PARSED = [
    pytest.param("cassandra", "docker.io", "library/cassandra", None, None, "cassandra", id="official"),
    pytest.param("cassandra:3.11", "docker.io", "library/cassandra", "3.11", None, "cassandra", id="official-tag"),
    pytest.param("user/app", "docker.io", "user/app", None, None, "user/app", id="hub-user"),
    pytest.param("docker.io/user/app:v1", "docker.io", "user/app", "v1", None, "user/app", id="hub-explicit"),
    pytest.param("docker.io/redis", "docker.io", "library/redis", None, None, "redis", id="hub-domain-official"),
    pytest.param("index.docker.io/library/redis:7", "docker.io", "library/redis", "7", None, "redis", id="legacy-index"),
    pytest.param("docker.io/library/a/b", "docker.io", "library/a/b", None, None, "library/a/b", id="library-nested"),
    pytest.param("localhost/foo", "localhost", "foo", None, None, "localhost/foo", id="localhost"),
    pytest.param("localhost:5000/foo/bar:1", "localhost:5000", "foo/bar", "1", None, "localhost:5000/foo/bar", id="localhost-port"),
    pytest.param("127.0.0.1:5000/web", "127.0.0.1:5000", "web", None, None, "127.0.0.1:5000/web", id="ip-port"),
    pytest.param("[::1]:5000/app", "[::1]:5000", "app", None, None, "[::1]:5000/app", id="ipv6"),
    pytest.param(f"gcr.io/proj/img@{SHA}", "gcr.io", "proj/img", None, SHA, "gcr.io/proj/img", id="digest"),
    pytest.param(f"nginx:1.25@{SHA}", "docker.io", "library/nginx", "1.25", SHA, "nginx", id="tag-and-digest"),
    pytest.param("europe-docker.pkg.dev/p/r/i:t", "europe-docker.pkg.dev", "p/r/i", "t", None, "europe-docker.pkg.dev/p/r/i", id="artifact-registry"),
    pytest.param("Example.com/app", "Example.com", "app", None, None, "Example.com/app", id="uppercase-domain"),
    pytest.param("Foo/bar", "Foo", "bar", None, None, "Foo/bar", id="uppercase-first-is-domain"),
    pytest.param("a_b__c-d--e/f.g", "docker.io", "a_b__c-d--e/f.g", None, None, "a_b__c-d--e/f.g", id="separators"),
    pytest.param("foo:Tag_1.x-y", "docker.io", "library/foo", "Tag_1.x-y", None, "foo", id="tag-chars"),
    pytest.param("foo:" + "t" * 128, "docker.io", "library/foo", "t" * 128, None, "foo", id="tag-128"),
]


@pytest.mark.parametrize("text, domain, path, tag, digest, familiar", PARSED)
def test_parse(text, domain, path, tag, digest, familiar):
    ref = Reference.parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.name == f"{domain}/{path}"
    assert ref.familiar_name == familiar


INVALID = [
    pytest.param("", "empty", id="empty"),
    pytest.param("Cassandra", "lowercase", id="uppercase-official"),
    pytest.param("user/App", "lowercase", id="uppercase-path"),
    pytest.param("gcr.io/p/Img", "lowercase", id="uppercase-path-with-domain"),
    pytest.param("foo bar", "repository name", id="space"),
    pytest.param("foo/", "repository name", id="trailing-slash"),
    pytest.param("/foo", "repository name", id="leading-slash"),
    pytest.param("foo//bar", "repository name", id="double-slash"),
    pytest.param("foo_", "repository name", id="trailing-separator"),
    pytest.param("-foo", "repository name", id="leading-dash"),
    pytest.param("foo:", "tag", id="empty-tag"),
    pytest.param("foo:-x", "tag", id="tag-dash"),
    pytest.param("foo:.x", "tag", id="tag-dot"),
    pytest.param("foo:" + "t" * 129, "tag", id="tag-too-long"),
    pytest.param("foo:a:b", "tag", id="tag-colon"),
    pytest.param("foo@", "digest", id="empty-digest"),
    pytest.param("foo@sha256:abc", "64", id="short-digest"),
    pytest.param("foo@sha256:" + "A" * 64, "lowercase", id="uppercase-digest"),
    pytest.param("foo@md5:" + "a" * 32, "unsupported", id="unknown-algorithm"),
    pytest.param("a" * 64, "image id", id="bare-id"),
    pytest.param("localhost:abc/foo", "registry", id="bad-port"),
    pytest.param("ex_ample.com/foo", "registry", id="bad-domain"),
    pytest.param("gcr.io/" + "a" * 250, "255", id="name-too-long"),
]


@pytest.mark.parametrize("text, fragment", INVALID)
def test_parse_refuses(text, fragment):
    with pytest.raises(ImageReferenceError) as caught:
        Reference.parse(text)
    assert caught.value.reference == text
    assert fragment in str(caught.value)


def test_with_tag_and_digest_give_familiar_strings():
    assert Reference.parse("docker.io/library/cassandra:3").with_tag("latest") == "cassandra:latest"
    assert Reference.parse("127.0.0.1:5000/web").with_tag("v2") == "127.0.0.1:5000/web:v2"
    assert Reference.parse("user/app:old").with_digest(SHA) == f"user/app@{SHA}"
    with pytest.raises(ImageReferenceError):
        Reference.parse("nginx").with_tag("-bad")
    with pytest.raises(ImageReferenceError):
        Reference.parse("nginx").with_digest("sha256:123")


def test_str_is_the_familiar_form():
    assert str(Reference.parse(f"index.docker.io/library/nginx:1@{SHA}")) == f"nginx:1@{SHA}"


@pytest.mark.parametrize(
    "a, b, same",
    [
        pytest.param("cassandra", "docker.io/library/cassandra:3", True, id="official-forms"),
        pytest.param("user/app", "index.docker.io/user/app", True, id="legacy-domain"),
        pytest.param("nginx", f"nginx@{SHA}", True, id="digest"),
        pytest.param("nginx", "user/nginx", False, id="other-namespace"),
        pytest.param("127.0.0.1:5000/web", "web", False, id="other-registry"),
        pytest.param("localhost:5000/web", "localhost:5001/web", False, id="other-port"),
    ],
)
def test_same_repository(a, b, same):
    assert same_repository(a, b) is same
    assert same_repository(b, a) is same


# --- properties ------------------------------------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_alnum = st.text(_ALNUM, min_size=1, max_size=4)
_domain = st.one_of(
    st.just(""),
    st.sampled_from(
        ["docker.io/", "index.docker.io/", "localhost/", "localhost:5000/", "gcr.io/", "[::1]:5000/"]
    ),
    st.builds("{}.{}:{}/".format, _alnum, _alnum, st.integers(1, 65535)),
)
_tag = st.builds(
    "{}{}".format,
    st.sampled_from(_ALNUM + "_ABCXYZ"),
    st.text(_ALNUM + "_.-XYZ", max_size=12),
)


@st.composite
def _component(draw, *, dots: bool = True) -> str:
    """One path component: alphanumerics joined by separators."""
    separators = ["_", "__", "-", "--"] + (["."] if dots else [])
    parts = draw(st.lists(_alnum, min_size=1, max_size=3))
    text = parts[0]
    for part in parts[1:]:
        text += draw(st.sampled_from(separators)) + part
    return text


@st.composite
def references(draw) -> str:
    """Valid reference strings, in the shapes users write."""
    domain = draw(_domain)
    # Without a domain, a first component with a dot would be read as one.
    first = draw(_component(dots=bool(domain)))
    rest = draw(st.lists(_component(), max_size=2))
    text = domain + "/".join([first, *rest])
    if draw(st.booleans()):
        text += ":" + draw(_tag)
    if draw(st.booleans()):
        text += "@sha256:" + draw(st.text("0123456789abcdef", min_size=64, max_size=64))
    return text


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=80))
def test_parse_raises_only_image_reference_error(text):
    try:
        ref = Reference.parse(text)
    except ImageReferenceError:
        return
    assert Reference.parse(ref.name).name == ref.name


@settings(max_examples=100, deadline=None, database=None)
@given(references(), _tag)
def test_with_tag_reparses_to_the_same_name(text, tag):
    ref = Reference.parse(text)
    tagged = Reference.parse(ref.with_tag(tag))
    assert (tagged.name, tagged.tag, tagged.digest) == (ref.name, tag, None)
    assert Reference.parse(str(ref)) == ref
    assert Reference.parse(ref.familiar_name).name == ref.name
