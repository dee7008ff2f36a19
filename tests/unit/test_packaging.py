"""Packaging: the systemd unit is one that systemd accepts."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(ROOT, "contrib", "systemd", "puller.service")


def unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def test_unit_runs_the_daemon_in_the_foreground_after_docker():
    parsed = unit()
    assert "docker.service" in parsed["Unit"]["After"]
    assert "docker.service" in parsed["Unit"]["Requires"]
    assert parsed["Service"]["Restart"] == "always"
    assert parsed["Service"]["Type"] == "simple"
    assert parsed["Service"]["ExecStart"].split()[1:] == ["-d"]


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing; scripts/install-deps installs systemd")
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart exists: point it at the installed command
    installed = shutil.which("puller")
    assert installed, "puller is not installed: pip install ."
    with open(UNIT) as handle:
        text = handle.read()
    text = text.replace("/usr/local/bin/puller", installed)
    copy = tmp_path / "puller.service"
    copy.write_text(text)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "puller.service" not in result.stderr, result.stderr


def test_the_package_version_is_the_one_in_setup_cfg():
    from puller import __version__

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(os.path.join(ROOT, "setup.cfg"))
    assert parser["metadata"]["version"] == __version__


def test_setup_cfg_declares_the_runtime_packages_and_every_wing():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    requires = parser["options"]["install_requires"]
    for package in ("sh", "pyyaml", "watchdog", "zeroconf", "click", "google-auth",
                    "node-semver"):
        assert package in requires, f"{package} missing from [options] install_requires"
    assert parser["options"]["python_requires"] == ">=3.11"
    assert parser["options.packages.find"]["include"].split(", ") == ["puller", "puller.*"]
