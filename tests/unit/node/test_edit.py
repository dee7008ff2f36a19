"""Changing a file in place: only the changed field's text changes, every other byte stays."""

from __future__ import annotations

import os

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from puller.errors import DefinitionError
from puller.node.definitions import definition_fields, parse_definition, read_definition
from puller.node.writer import write_definition
from puller.node.edit import edit_text, retag_image_token

PERSON = """# the web front; ask Ann before changing the port
name: web     # keep me

bash:   'docker run -p 80:80 --init web httpd -f -h /www'
repo: "web"
tag: v1        # the release we run
health_timeout: 2
"""


def read(path) -> str:
    with open(path) as handle:
        return handle.read()


def write(tmp_path, text: str, name: str = "web") -> str:
    path = tmp_path / f"{name}.yml"
    path.write_text(text)
    return str(path)


def test_a_tag_change_touches_only_the_tag(tmp_path):
    path = write(tmp_path, PERSON)
    fields = definition_fields(read_definition(path))
    write_definition(str(tmp_path), {**fields, "tag": "v2"})
    assert read(path) == PERSON.replace("tag: v1 ", "tag: v2 ")


def test_a_pin_is_one_line_added_and_an_unpin_removes_it(tmp_path):
    path = write(tmp_path, PERSON)
    digest = "sha256:" + "a" * 64
    fields = definition_fields(read_definition(path))
    write_definition(str(tmp_path), {**fields, "digest": digest})
    assert read(path) == PERSON + f"digest: {digest}\n"
    fields = definition_fields(read_definition(path))
    write_definition(str(tmp_path), {key: v for key, v in fields.items() if key != "digest"})
    assert read(path) == PERSON


def test_the_image_token_follows_the_tag_in_the_same_edit(tmp_path):
    path = write(tmp_path, PERSON.replace("--init web httpd", "--init web:v1 httpd"))
    fields = definition_fields(read_definition(path))
    service = write_definition(str(tmp_path), {**fields, "tag": "v2"})
    assert service.run.image == "web:v2" and service.tag == "v2"
    text = read(path)
    assert "--init web:v2 httpd" in text and "# keep me" in text and "health_timeout: 2\n" in text


def test_a_run_line_whose_image_contradicts_the_tag_is_refused():
    text = "name: web\nbash: docker run web:v1\nrepo: web\ntag: v2\n"
    with pytest.raises(DefinitionError, match=r"web.yml:2: bash: the image `web:v1` names tag "
                                              r"v1, but tag: is v2"):
        parse_definition(text, "web.yml")
    parse_definition("name: web\nbash: docker run web:v1\nrepo: web\ntag: v1\n", "web.yml")
    parse_definition("name: web\nbash: docker run web:latest\nrepo: web\n", "web.yml")


def test_a_flow_mapping_cannot_be_edited_in_place():
    with pytest.raises(DefinitionError, match="not a block mapping"):
        edit_text("{name: web, tag: v1}", {"tag": "v2"}, "web.yml")


def test_retagging_needs_the_token_exactly_once():
    assert retag_image_token("docker run web:v1 echo", "web:v1", "web:v2") == \
        "docker run web:v2 echo"
    assert retag_image_token("docker run web:v1 echo web:v1", "web:v1", "web:v2") is None
    assert retag_image_token("docker run myweb:v1", "web:v1", "web:v2") is None


comments = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20).map(
    lambda s: s.replace("\n", " "))
spacing = st.sampled_from([" ", "  ", "    "])
quote = st.sampled_from(["", "'", '"'])


@settings(max_examples=150, deadline=None)
@given(order=st.permutations(["name", "bash", "repo", "tag", "health_timeout"]),
       notes=st.lists(comments, min_size=6, max_size=6), gaps=st.lists(spacing, min_size=5,
                                                                     max_size=5),
       quotes=st.lists(quote, min_size=5, max_size=5), blank=st.booleans(),
       new_tag=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True))
def test_any_comments_order_and_quoting_survive_a_tag_change(order, notes, gaps, quotes, blank,
                                                             new_tag):
    values = {"name": "web", "bash": "docker run --init web httpd", "repo": "web", "tag": "v1",
              "health_timeout": "2"}
    lines = [f"# {notes[0]}"]
    for key, gap, q, note in zip(order, gaps, quotes, notes[1:]):
        value = values[key]
        written = f"{q}{value}{q}" if key != "health_timeout" else value
        lines.append(f"{key}:{gap}{written}  # {note}")
        if blank:
            lines.append("")
    text = "\n".join(lines) + "\n"
    edited = edit_text(text, {"tag": new_tag}, "web.yml")
    assert yaml.safe_load(edited)["tag"] == new_tag
    assert parse_definition(edited, "web.yml").tag == new_tag
    before = [line for line in text.splitlines() if not line.startswith("tag:")]
    after = [line for line in edited.splitlines() if not line.startswith("tag:")]
    assert before == after  # every other line byte for byte
    [old_line] = [line for line in text.splitlines() if line.startswith("tag:")]
    [new_line] = [line for line in edited.splitlines() if line.startswith("tag:")]
    assert new_line.split("#", 1)[1:] == old_line.split("#", 1)[1:]  # its comment too


def test_files_puller_creates_are_private(tmp_path):
    write_definition(str(tmp_path), {"name": "new", "bash": "docker run new", "repo": "new"})
    assert os.stat(tmp_path / "new.yml").st_mode & 0o777 == 0o600
