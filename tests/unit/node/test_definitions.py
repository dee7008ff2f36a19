"""Definition files: validation with file, line and reason; the last good one stays in force."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puller import constants
from puller.node.definitions import parse_definition, read_definition
from puller.node.writer import remove_definition
from puller.node.directory import DefinitionDir
from puller.errors import DefinitionError

GOOD = """\
name: cassa
bash: docker run -p=66:55 -restart=always cassandra /bin/sh
repo: cassandra
tag: latest
node: box-*
"""

GOOD_WEB = "name: web\nbash: docker run web\nrepo: web\ntag: v1\n"


def test_the_seed_definition_is_valid():
    service = parse_definition(GOOD, "dir/cassa.yml")
    assert service.name == "cassa"
    assert service.repo == "cassandra"
    assert service.tag == "latest"
    assert service.image_ref == "cassandra:latest"
    assert service.run.options == ("-p=66:55", "--restart=always")
    assert service.run.args == ("/bin/sh",)


@pytest.mark.parametrize("node,name,matches", [
    ("box-*", "box-1", True),   # searched, as the original did: "box-*" is found in "box-1"
    ("box-*", "xob-2", False),
    ("^box-[0-9]+$", "box-12", True),
    ("^box-[0-9]+$", "box-12a", False),
    ("box", "my-box-1", True),  # anywhere in the name, not only at its start
    ("(?i)^BOX-", "box-1", True),
    ("", "anything", True),
])
def test_node_regexp_is_searched_in_the_node_name(node, name, matches):
    service = parse_definition(GOOD.replace("node: box-*", f"node: '{node}'"), "cassa.yml")
    assert service.matches(name) is matches


@pytest.mark.parametrize("node,fragment", [
    (r"'(box)-\1'", r"invalid escape sequence: \1"),  # a backreference
    ("box(?=-)", "invalid perl operator: (?="),  # lookahead
    ('"\\ud800"', "surrogates not allowed"),  # not valid text
])
def test_a_node_pattern_re2_cannot_run_names_file_line_and_why(node, fragment):
    text = f"name: web\nbash: docker run nginx\nrepo: nginx\nnode: {node}\n"
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, "defs/web.yml")
    message = str(caught.value)
    assert caught.value.line == 4 and message.startswith("defs/web.yml:4: node ")
    assert "RE2" in message and fragment in message


def test_a_catastrophic_node_pattern_cannot_hang_the_loop():
    # Python's re backtracks: ^(.+)+z took 2.5 s on 26 characters, doubling with each one.
    service = parse_definition(GOOD.replace("node: box-*", "node: '^(.+)+z'"), "cassa.yml")
    start = time.monotonic()
    assert not service.matches("a" * 26)
    assert service.matches("a" * 26 + "z")
    assert time.monotonic() - start < 0.5


def test_missing_tag_and_node_default_to_latest_and_every_node():
    text = "name: web\nbash: docker run nginx\nrepo: nginx\n"
    service = parse_definition(text, "web.yaml")
    assert service.tag == "latest"
    assert service.matches("any-node")


def test_integer_tag_is_accepted_as_text():
    service = parse_definition("name: web\nbash: docker run nginx\nrepo: nginx\ntag: 3\n", "web.yml")
    assert service.image_ref == "nginx:3"


@pytest.mark.parametrize("text,line,fragment", [
    ("name: [unclosed\n", 1, "flow sequence started on line 1"),
    ("name: web\n  bad: indent\n", 2, "not valid YAML"),
    ("- a\n- b\n", 1, "expected a mapping"),
    ("just a string\n", 1, "expected a mapping"),
    ("", None, "empty"),
    ("bash: docker run nginx\nrepo: nginx\n", None, "missing field 'name'"),
    ("name: web\nrepo: nginx\n", None, "missing field 'bash'"),
    ("name: web\nbash: docker run nginx\n", None, "missing field 'repo'"),
    ("name: web\nbash: docker run nginx\nrepo: nginx\nport: 80\n", 4, "unknown field 'port'"),
    ("name: web\nbash: docker run nginx\nrepo: nginx\ntag: 1.10\n", 4, 'quote it: tag: "1.10"'),
    ("name: web\nbash: docker run nginx\nrepo: nginx\ntag: true\n", 4, 'quote it: tag: "true"'),
    ("name: web\nbash: docker run nginx\nrepo: nginx\ntag: 1.10  # pinned\n", 4,
     'quote it: tag: "1.10")'),
    ("name: web\nbash: [docker, run]\nrepo: nginx\n", 2, "'bash' must be a string"),
    ("name: web\nbash: docker run nginx\nrepo: nginx\nnode: 'box-('\n", 4, "not a valid regular expression"),
    ("name: other\nbash: docker run nginx\nrepo: nginx\n", 1, "does not match the file name"),
    ("name: web\nbash: docker run nginx; rm -rf /\nrepo: nginx\n", 2, "bash:"),
    ("name: web\nbash: docker run redis\nrepo: nginx\n", 2, "bash:"),
    ("name: web\nbash: docker run nginx\nrepo: nginx:1.2\n", 3, "put the bare repository"),
    ("name: web\nbash: docker run nginx\nrepo: nginx\nname: web\n", 4, "appears twice"),
    ("name: web\nbash: docker run nginx\nrepo: nginx\ndigest: sha256:abc\n", 4, "digest must look like"),
    ("name: web\nbash: docker run nginx\nrepo: nginx\nhealth_timeout: soon\n", 4, "health_timeout"),
])
def test_each_problem_names_file_line_and_reason(text, line, fragment):
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, "defs/web.yml")
    error = caught.value
    assert error.path == "defs/web.yml"
    assert error.line == line
    assert fragment in str(error)
    assert str(error).startswith(f"defs/web.yml:{line}:" if line else "defs/web.yml:")


def test_unreadable_and_undecodable_files_are_definition_errors(tmp_path):
    with pytest.raises(DefinitionError, match="cannot read"):
        read_definition(str(tmp_path / "absent.yml"))
    (tmp_path / "bin.yml").write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(DefinitionError, match="not UTF-8"):
        read_definition(str(tmp_path / "bin.yml"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_service_or_a_definition_error(text):
    try:
        parse_definition(text, "x.yml")
    except DefinitionError:
        pass


def write(path, text):
    path.write_text(text)
    # distinct mtimes even on coarse clocks: the directory caches by stat
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_a_bad_file_keeps_the_last_good_definition_in_force(tmp_path):
    defs = DefinitionDir(str(tmp_path))
    write(tmp_path / "cassa.yml", GOOD)
    first = defs.scan()
    assert set(first.services) == {"cassa"} and not first.errors

    write(tmp_path / "cassa.yml", GOOD + "bogus: [\n")
    second = defs.scan()
    assert second.services["cassa"] == first.services["cassa"]
    assert len(second.errors) == 1 and "cassa.yml" in second.errors[0].path

    write(tmp_path / "cassa.yml", GOOD.replace("latest", "'3.11'"))
    third = defs.scan()
    assert third.services["cassa"].tag == "3.11" and not third.errors


def test_bad_files_do_not_stop_the_others_and_are_left_untouched(tmp_path):
    bad = {"bad1.yml": "name: [\n", "bad2.yaml": "name: bad2\nbash: ls\nrepo: x\n",
           "other.yml": GOOD}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
    write(tmp_path / "cassa.yml", GOOD)
    (tmp_path / "notes.txt").write_text("not a definition")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    scan = DefinitionDir(str(tmp_path)).scan()
    assert set(scan.services) == {"cassa"}
    assert sorted(os.path.basename(e.path) for e in scan.errors) == ["bad1.yml", "bad2.yaml", "other.yml"]
    assert scan.broken == {"bad1", "bad2", "other"}
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_deleted_file_removes_its_service_once_it_stays_away(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "DELETE_GRACE", 0.2)
    defs = DefinitionDir(str(tmp_path))
    write(tmp_path / "cassa.yml", GOOD)
    assert "cassa" in defs.scan().services
    (tmp_path / "cassa.yml").unlink()
    scan = defs.scan()  # an editor saving by rename: the file is away for a moment
    assert "cassa" in scan.services and scan.recheck_in == 0.2 and not scan.errors
    time.sleep(0.25)
    scan = defs.scan()
    assert scan.services == {} and scan.complete and scan.recheck_in is None


def test_a_file_back_within_the_grace_keeps_its_service(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "DELETE_GRACE", 0.2)
    defs = DefinitionDir(str(tmp_path))
    write(tmp_path / "cassa.yml", GOOD)
    defs.scan()
    (tmp_path / "cassa.yml").unlink()
    defs.scan()
    write(tmp_path / "cassa.yml", GOOD.replace("latest", "'3.11'"))
    time.sleep(0.25)
    assert defs.scan().services["cassa"].tag == "3.11"


@pytest.mark.parametrize("text,fragment", [
    ("name: web\nbash: docker run nginx\nrepo: nginx\ntag: v\u00e9\n", "not a valid image tag"),
    ("name: web\nbash: docker run nginx\nrepo: nginx\nhealth_timeout: 1" + "9" * 400 + "\n",
     "health_timeout must be between"),
    ("name: web\nbash: docker run nginx\nrepo: nginx\nhealth_timeout: .inf\n",
     "health_timeout must be between"),
    ("name: web\nbash: docker run nginx\nrepo: nginx\nhealth_timeout: .nan\n",
     "health_timeout must be between"),
    ("name: " + "[" * 5000 + "\n", "not valid YAML"),
])
def test_hostile_values_are_definition_errors(text, fragment):
    with pytest.raises(DefinitionError, match=fragment.replace("(", r"\(")):
        parse_definition(text, "web.yml")


def test_a_fifo_is_reported_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.yml")
    write(tmp_path / "cassa.yml", GOOD)
    scan = DefinitionDir(str(tmp_path)).scan()  # must not block
    assert set(scan.services) == {"cassa"}
    assert "not a regular file" in str(scan.errors[0])


def test_an_unreadable_directory_removes_nothing(tmp_path):
    defs = DefinitionDir(str(tmp_path / "defs"))
    (tmp_path / "defs").mkdir()
    write(tmp_path / "defs" / "cassa.yml", GOOD)
    assert "cassa" in defs.scan().services
    (tmp_path / "defs" / "cassa.yml").unlink()
    (tmp_path / "defs").rmdir()
    scan = defs.scan()
    assert not scan.complete
    assert "cannot list the directory" in str(scan.errors[0])


def test_remove_definition_never_removes_what_is_not_a_definition(tmp_path):
    (tmp_path / "notes.yml").write_text("just: some notes\n")
    with pytest.raises(DefinitionError, match="not a valid definition of notes"):
        remove_definition(str(tmp_path), "notes")
    assert (tmp_path / "notes.yml").exists()
    (tmp_path / "web.yml").write_text(GOOD_WEB)
    assert remove_definition(str(tmp_path), "web") == [str(tmp_path / "web.yml")]
    assert remove_definition(str(tmp_path), "web") == []


def test_yml_and_yaml_side_by_side_are_reported_and_the_last_good_stays(tmp_path):
    (tmp_path / "web.yml").write_text(GOOD_WEB)
    directory = DefinitionDir(str(tmp_path))
    assert directory.scan().services["web"].tag == "v1"
    (tmp_path / "web.yaml").write_text(GOOD_WEB.replace("v1", "v9"))
    scan = directory.scan()
    assert scan.services["web"].tag == "v1"
    [error] = scan.errors
    assert "web.yml and web.yaml" in str(error)
    with pytest.raises(DefinitionError, match="defined twice"):
        remove_definition(str(tmp_path), "web")
    assert sorted(os.listdir(tmp_path)) == ["web.yaml", "web.yml"]
    fresh = DefinitionDir(str(tmp_path)).scan()  # never good: left alone, not removed
    assert "web" not in fresh.services and "web" in fresh.broken


def test_notify_adds_a_services_own_destinations():
    service = parse_definition(GOOD_WEB + "notify: [json://127.0.0.1:9/a, 'ntfy://topic']\n",
                               "dir/web.yml")
    assert service.notify == ("json://127.0.0.1:9/a", "ntfy://topic")
    assert parse_definition(GOOD_WEB, "dir/web.yml").notify == ()


@pytest.mark.parametrize("value", ["json://host/a", "[1, 2]", "['']", "{a: b}"])
def test_notify_must_be_a_list_of_urls(value):
    with pytest.raises(DefinitionError, match="notify must be a list") as info:
        parse_definition(GOOD_WEB + f"notify: {value}\n", "dir/web.yml")
    assert info.value.line == 5
