"""The install path the README gives works verbatim on Debian 12, and the unit runs what it installs."""

from __future__ import annotations

import configparser
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_install_script_installs_the_command_the_systemd_unit_runs(tmp_path):
    env = {**os.environ, "PULLER_PREFIX": str(tmp_path / "opt"),
           "PULLER_BIN": str(tmp_path / "bin"), "PULLER_UNIT_DIR": str(tmp_path / "units")}
    (tmp_path / "units").mkdir()
    result = subprocess.run(["bash", os.path.join(ROOT, "scripts", "install")], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    command = tmp_path / "bin" / "puller"
    assert os.path.realpath(command) == str(tmp_path / "opt" / "bin" / "puller")
    shown = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "-node" in shown.stdout, shown.stderr
    # the unit runs the command where the script links it by default
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(tmp_path / "units" / "puller.service")
    with open(os.path.join(ROOT, "scripts", "install")) as handle:
        default_bin = re.search(r"bin=\$\{PULLER_BIN:-([^}]+)\}", handle.read()).group(1)
    assert unit["Service"]["ExecStart"].split()[0] == f"{default_bin}/puller"
