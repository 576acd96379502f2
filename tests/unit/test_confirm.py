"""awp.snapshot and the state logic of awp.confirm, without a kernel or a timer process (the
real rollback on both backends is tests/netns/test_confirm_netns.py)."""

from __future__ import annotations

import json
import os

import pytest

from awp import confirm, snapshot
from awp.errors import ConfirmPending, NothingToConfirm, UsageError
from awp.paths import Root


@pytest.fixture
def root(tmp_path) -> Root:
    r = Root(tmp_path)
    r.config.parent.mkdir(parents=True)
    r.simple_list.parent.mkdir(parents=True)
    r.config.write_text("old config\n")
    r.advanced_list.write_text("old advanced\n")
    os.chmod(r.advanced_list, 0o600)
    return r


def test_restore_puts_the_old_files_back_and_keeps_the_new_ones(root, tmp_path):
    snapshot.record_applied(root)
    root.config.write_text("new config\n")
    root.simple_list.write_text("new simple\n")
    keep = tmp_path / "kept"
    changed = snapshot.restore(root, snapshot.applied_dir(root), keep)
    assert sorted(changed) == ["config", "simple-portknock-list"]
    assert root.config.read_text() == "old config\n" and not root.simple_list.exists()
    assert (keep / "config").read_text() == "new config\n" and (keep / "simple-portknock-list").exists()
    assert not (keep / "advanced-portknock-list").exists()  # unchanged: not copied
    assert oct(root.advanced_list.stat().st_mode & 0o777) == "0o600"


def test_the_copy_keeps_modes_and_replaces_a_previous_copy(root):
    snapshot.record_applied(root)
    root.config.write_text("second\n")
    snapshot.record_applied(root)
    saved = snapshot.applied_dir(root)
    assert (saved / "config").read_text() == "second\n"
    assert oct((saved / "advanced-portknock-list").stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in saved.parent.iterdir()] == ["applied"]  # no temporary left behind
    snapshot.forget_applied(root)
    assert not saved.exists()


def test_confirm_with_nothing_pending_is_a_usage_error(root):
    with pytest.raises(NothingToConfirm) as info:
        confirm.confirm(root)
    assert info.value.exit_code == 2 and "nothing to confirm" in str(info.value)


@pytest.mark.parametrize("seconds", [0, -1, confirm.MAX_SECONDS + 1])
def test_confirm_seconds_range(seconds):
    with pytest.raises(UsageError):
        confirm.check_seconds(seconds)


def _pending(root, previous="applied"):
    snapshot.record_applied(root)
    confirm._stage(root, previous)
    confirm._write_state(root, {"token": "t", "seconds": 3, "previous": previous, "applied_at": "now",
                                "deadline": 0, "deadline_monotonic": 0})


def test_a_pending_confirmation_with_a_live_timer_refuses_another_apply(root, monkeypatch):
    _pending(root)
    monkeypatch.setattr("awp.knockd.control.running_pid", lambda root, pidfile=None: 4242)
    with pytest.raises(ConfirmPending) as info:
        confirm.before_apply(root)
    assert info.value.exit_code == 4 and "awp confirm" in str(info.value)


def test_a_pending_confirmation_without_its_timer_is_rolled_back_first(root, monkeypatch):
    from awp import workflow

    _pending(root)
    root.config.write_text("unconfirmed\n")
    applied = []
    monkeypatch.setattr(workflow, "load", lambda r: (r.config.read_text(), []))
    monkeypatch.setattr(workflow, "apply", lambda r, config, **kw: applied.append((config, kw)))
    note = confirm.before_apply(root)
    assert "put back" in note
    assert applied == [("old config\n", {"force": True, "ssh_connection": None})]
    assert root.config.read_text() == "old config\n" and confirm.pending(root) is None
    kept = list((snapshot.state_dir(root) / "rolled-back").glob("*/config"))
    assert [k.read_text() for k in kept] == ["unconfirmed\n"]


def test_rolling_back_to_nothing_is_a_remove(root, monkeypatch):
    from awp import workflow

    _pending(root, previous="nothing")
    removed = []
    monkeypatch.setattr(workflow, "remove", lambda r: removed.append(r) or ())
    confirm.before_apply(root)
    assert removed == [root] and confirm.pending(root) is None


def test_confirm_ends_the_pending_state(root):
    _pending(root)
    state = confirm.confirm(root)
    assert state["applied_at"] == "now" and confirm.pending(root) is None


def test_remove_cancels_a_pending_confirmation(root):
    _pending(root)
    assert confirm.cancel(root)["applied_at"] == "now"
    assert confirm.pending(root) is None and confirm.cancel(root) is None


def test_without_a_copy_of_the_applied_files_a_kernel_with_awp_rules_is_refused(root, monkeypatch):
    from awp import workflow
    from awp.errors import ApplyError

    monkeypatch.setattr(workflow, "_holding", lambda runner: [("nftables", None)])
    with pytest.raises(ApplyError, match="without --confirm"):
        confirm._previous(root, None)
    monkeypatch.setattr(workflow, "_holding", lambda runner: [])
    assert confirm._previous(root, None) == "nothing"
    snapshot.record_applied(root)
    assert confirm._previous(root, None) == "applied"
