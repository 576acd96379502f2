"""The shipped systemd units: awp.service loads the rules at boot, before the network is up."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "etc" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((UNITS / name).read_text())
    return parser


def test_boot_unit_applies_once_before_the_network():
    u = unit("awp.service")
    assert u["Service"]["Type"] == "oneshot" and u["Service"]["RemainAfterExit"] == "yes"
    assert u["Service"]["ExecStart"].split()[1:] == ["-s", "-f"]
    assert "ExecStop" not in u["Service"], "stopping the unit must never open a door"
    assert u["Unit"]["DefaultDependencies"] == "no"
    assert "network-pre.target" in u["Unit"]["Before"].split()
    assert "network-pre.target" in u["Unit"]["Wants"].split()
    assert "local-fs.target" in u["Unit"]["After"].split()
    assert u["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("name", ["awp.service", "awp-knockd.service"])
def test_units_pass_systemd_analyze_verify(tmp_path, name):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    text = (UNITS / name).read_text().replace("/usr/local/bin/awp", shutil.which("true"))
    (tmp_path / name).write_text(text)
    r = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / name)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr


def test_listener_unit_has_only_the_capability_it_needs_and_a_sandbox():
    """awp(8), SUPERVISION says why CAP_NET_ADMIN is enough; tests/netns/test_unit_sandbox.py
    runs the listener with exactly this bounding set."""
    s = unit("awp-knockd.service")["Service"]
    assert s["CapabilityBoundingSet"].split() == ["CAP_NET_ADMIN"]
    assert s.get("AmbientCapabilities", "") == "" and "User" not in s
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelModules": "yes",
                       "RestrictNamespaces": "yes", "SystemCallArchitectures": "native"}.items():
        assert s[key] == value, key
    assert s["ReadWritePaths"].split() == ["/var/awp/var"], "DIR/var of the unit's root only"
    assert s["Environment"] == "AWP_ROOT=/var/awp"
    assert set(s["RestrictAddressFamilies"].split()) == {"AF_NETLINK", "AF_UNIX", "AF_INET", "AF_INET6"}
    filters = re.findall(r"^SystemCallFilter=(.*)$", (UNITS / "awp-knockd.service").read_text(), re.M)
    assert filters == ["@system-service", "~@privileged"]


def test_listener_unit_exposure_is_low(tmp_path):
    """systemd-analyze security --offline: the sandbox as systemd itself scores it."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    text = (UNITS / "awp-knockd.service").read_text().replace("/usr/local/bin/awp", shutil.which("true"))
    (tmp_path / "awp-knockd.service").write_text(text)
    r = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(tmp_path / "awp-knockd.service")],
                       capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for awp-knockd.service: ([0-9.]+)", r.stdout)
    assert level, r.stdout + r.stderr
    assert float(level.group(1)) <= 2.5, r.stdout
