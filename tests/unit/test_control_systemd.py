"""awp -s -f hands the listener to systemd when awp-knockd.service is enabled (awp(8),
SUPERVISION): `systemctl reload-or-restart`, never a second, unsupervised listener. The
systemctl calls are recorded (control's subprocess.run), no systemd is needed."""

from __future__ import annotations

import subprocess

import pytest

from awp.knockd import control
from awp.paths import DEFAULT_ROOT, Root


class Systemd:
    """Records systemctl argv; `enabled`: what `systemctl is-enabled` answers."""

    def __init__(self, enabled: bool, running: bool = True):
        self.enabled, self.running, self.calls = enabled, running, []

    def run(self, argv, **kwargs):
        self.calls.append(list(argv))
        code = 0 if ("is-enabled" not in argv or self.enabled) else 1
        return subprocess.CompletedProcess(argv, code, "", "")


@pytest.fixture
def systemd(monkeypatch):
    def make(enabled: bool, running: bool = True) -> Systemd:
        fake = Systemd(enabled)
        monkeypatch.setattr(control.subprocess, "run", fake.run)
        monkeypatch.setattr(control.os.path, "isdir", lambda p: running and p == "/run/systemd/system")
        monkeypatch.setattr(control, "start", lambda root: pytest.fail("started a supervised listener"))
        return fake
    return make


def test_enabled_unit_is_reloaded_or_restarted_not_started_again(systemd):
    fake = systemd(enabled=True)
    said = control.ensure(Root.resolve(DEFAULT_ROOT))
    assert fake.calls == [["systemctl", "is-enabled", "--quiet", "awp-knockd.service"],
                          ["systemctl", "--no-block", "reload-or-restart", "awp-knockd.service"]]
    assert said == "reloaded or restarted by systemd (awp-knockd.service)"


def test_remove_stops_the_unit(systemd, tmp_path, monkeypatch):
    fake = systemd(enabled=True)
    monkeypatch.setattr(control, "running_pid", lambda root, pidfile=None: None)
    control.stop(Root.resolve(DEFAULT_ROOT))
    assert ["systemctl", "stop", "awp-knockd.service"] in fake.calls


@pytest.mark.parametrize("enabled,running,root", [(False, True, DEFAULT_ROOT), (True, False, DEFAULT_ROOT),
                                                   (True, True, "/srv/other-awp-root")])
def test_without_an_enabled_unit_for_this_root_awp_supervises(systemd, monkeypatch, enabled, running, root):
    """Not enabled, systemd not the init, or another root than the unit's: awp's supervisor."""
    fake = systemd(enabled=enabled, running=running)
    started = []
    monkeypatch.setattr(control, "start", lambda r: started.append(r) or 4242)
    monkeypatch.setattr(control, "running_pid", lambda r, pidfile=None: None)
    assert control.ensure(Root.resolve(root)) == "started (pid 4242, supervised)"
    assert started and not [c for c in fake.calls if "reload-or-restart" in c]


def test_a_failing_systemctl_is_a_listener_error(systemd, monkeypatch):
    from awp.errors import ListenerError

    fake = systemd(enabled=True)

    def run(argv, **kwargs):
        fake.calls.append(list(argv))
        if "reload-or-restart" in argv:
            return subprocess.CompletedProcess(argv, 1, "", "Unit awp-knockd.service is masked.")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(control.subprocess, "run", run)
    with pytest.raises(ListenerError, match="masked"):
        control.ensure(Root.resolve(DEFAULT_ROOT))
