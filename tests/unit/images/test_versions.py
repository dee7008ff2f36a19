"""The tag a ``track:`` range picks: npm's semantics, through node-semver."""

from __future__ import annotations

import nodesemver
import pytest
from hypothesis import given, strategies as st

from puller.images.registry import Unsupported, next_page, parse_tags
from puller.images.versions import best_tag, satisfies, valid_range, version_of

TAGS = ["latest", "sha-abc123", "1.2", "1.0.0", "1.2.0", "1.2.5", "v1.4.0", "1.3.0-rc.1",
        "1.10.0", "2.0.0", "2.1.0-beta.1", "1.6.0-alpine", "stable"]


@pytest.mark.parametrize("range_, expected", [
    ("^1.2", "1.10.0"),  # 1.10 > 1.4 > 1.2: numeric, not text order
    ("~1.2", "1.2.5"),
    ("1.x", "1.10.0"),
    (">=1.2 <2", "1.10.0"),
    ("1.2.0", "1.2.0"),
    ("^2", "2.0.0"),  # 2.1.0-beta.1 is a pre-release the range does not name
    ("^2.1.0-beta.0", "2.1.0-beta.1"),
    ("~1.3.0-rc", "1.3.0-rc.1"),
    ("^1.3.0-rc.0", "1.10.0"),  # naming a pre-release does not prefer it to a release
    ("1.4", "v1.4.0"),  # a v-prefixed tag counts, and keeps its spelling
    ("^3", None),
    ("1.2 || 2.x", "2.0.0"),
])
def test_the_highest_matching_tag_wins(range_, expected):
    assert valid_range(range_) is not None
    assert best_tag(TAGS, range_) == expected


@pytest.mark.parametrize("text", ["latest", "1.2.3.4", "", "   ", "sha-abc", "^", "x" * 300,
                                  ">=1.2 <2 garbage"])
def test_what_is_not_a_range_is_refused(text):
    assert valid_range(text) is None


def test_tags_that_are_not_versions_are_ignored():
    assert best_tag(["latest", "sha-abc", "1.2", "main", ""], "*") is None
    assert version_of("latest") is None and version_of("1.2") is None
    assert not satisfies("latest", "*")


def test_one_version_spelled_several_ways_picks_one_spelling_whatever_the_order():
    spellings = ["v1.2.3", "1.2.3+build.7", "1.2.3", "1.1.0"]
    assert best_tag(spellings, "^1") == "1.2.3"
    assert best_tag(list(reversed(spellings)), "^1") == "1.2.3"
    assert best_tag(["v1.2.3", "1.2.3+b"], "^1") == "v1.2.3"


# Property: the chosen tag satisfies the range, and no matching tag is higher. -------------

_numbers = st.integers(min_value=0, max_value=12)
_pre = st.one_of(st.none(), st.sampled_from(["alpha", "beta.1", "rc.1", "rc.2", "alpine", "0"]))


@st.composite
def tags(draw):
    major, minor, patch, pre = draw(_numbers), draw(_numbers), draw(_numbers), draw(_pre)
    prefix = draw(st.sampled_from(["", "", "v"]))
    return f"{prefix}{major}.{minor}.{patch}" + (f"-{pre}" if pre else "")


@st.composite
def ranges(draw):
    major, minor, patch = draw(_numbers), draw(_numbers), draw(_numbers)
    pre = draw(_pre)
    pre_text = f"-{pre}" if pre else ""
    return draw(st.sampled_from([
        f"^{major}.{minor}", f"~{major}.{minor}", f"{major}.x", f"{major}.{minor}.x",
        f">={major}.{minor} <{major + 1}", f"{major}.{minor}.{patch}{pre_text}",
        f"^{major}.{minor}.{patch}{pre_text}", f">={major}.{minor}.{patch}{pre_text}", "*",
    ]))


@given(st.lists(st.one_of(tags(), st.sampled_from(["latest", "sha-1f2e", "1.2", "edge"])),
                max_size=25), ranges())
def test_the_choice_satisfies_the_range_and_nothing_matching_is_higher(listed, range_):
    assert valid_range(range_) is not None
    chosen = best_tag(listed, range_)
    matching = [tag for tag in listed if satisfies(tag, range_)]
    if chosen is None:
        assert matching == []
        return
    assert chosen in listed and satisfies(chosen, range_)
    for tag in matching:
        assert nodesemver.compare(tag, chosen, True) <= 0
    assert best_tag(list(reversed(listed)), range_) == chosen  # the order does not matter


@given(st.lists(tags(), max_size=25), st.tuples(_numbers, _numbers))
def test_a_range_without_a_prerelease_never_picks_one(listed, version):
    chosen = best_tag(listed, f"^{version[0]}.{version[1]}")
    assert chosen is None or "-" not in chosen


@given(st.lists(tags(), max_size=25), _numbers, _numbers, _numbers)
def test_a_prerelease_is_picked_only_on_the_version_the_range_names(listed, major, minor, patch):
    chosen = best_tag(listed, f">={major}.{minor}.{patch}-0")
    if chosen is not None and "-" in chosen:
        assert version_of(chosen).version.split("-")[0] == f"{major}.{minor}.{patch}"


# The tags listing's pure parts --------------------------------------------------------

def test_the_next_page_comes_from_the_link_header_made_absolute():
    url = "http://127.0.0.1:5000/v2/web/tags/list?n=2"
    assert next_page(url, '</v2/web/tags/list?last=b&n=2>; rel="next"') == (
        "http://127.0.0.1:5000/v2/web/tags/list?last=b&n=2")
    assert next_page(url, "<https://other.example/v2/web/tags/list?last=b>; rel=next") == (
        "https://other.example/v2/web/tags/list?last=b")
    assert next_page(url, '</v2/web/tags/list?last=b>; rel="prev"') is None
    assert next_page(url, None) is None and next_page(url, "") is None


def test_a_page_of_tags_is_read_and_a_malformed_one_refused():
    assert parse_tags(b'{"name": "web", "tags": ["v1", "1.0.0", 3]}', "r", "web") == ["v1", "1.0.0"]
    assert parse_tags(b'{"name": "web", "tags": null}', "r", "web") == []
    for body in (b"not json", b'{"tags": "v1"}', b"[1, 2]"):
        with pytest.raises(Unsupported, match="tags of web"):
            parse_tags(body, "r", "web")
