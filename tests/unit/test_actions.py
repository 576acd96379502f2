"""awp.knockd.actions: door commands run with real short programs (true, false, sleep, a
script that floods its output), as argv, as a named user, killed at their timeout, queued
with a bound and coalesced."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from awp.knockd.actions import Command, CommandRunner, Job, run

ME = pwd.getpwuid(os.geteuid()).pw_name


def job(argv, door="22", action="open", src="198.18.0.2", user=ME, timeout=5.0, mode="advanced") -> Job:
    return Job(Command(tuple(argv), user, timeout), door, action, src, 22, mode)


def script(tmp_path, name, body) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def wait_done(runner, n, limit=10.0):
    deadline = time.monotonic() + limit
    while len(runner.done) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return runner.done


def test_true_and_false_give_their_exit_status():
    assert run(job(["/bin/true"])).exit == 0
    assert run(job(["/bin/false"])).exit == 1


def test_environment_names_source_port_door_action_and_mode(tmp_path):
    out = tmp_path / "env"
    prog = script(tmp_path, "env.sh", f'env > "{out}"\n')
    assert run(job([prog], door="7000", action="expire", src="2001:2::7", mode="simple")).exit == 0
    env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert env["AWP_SRC"] == "2001:2::7" and env["AWP_PORT"] == "22" and env["AWP_DOOR"] == "7000"
    assert env["AWP_ACTION"] == "expire" and env["AWP_MODE"] == "simple"
    assert "AWP_ROOT" not in env and env["PATH"].startswith("/usr/local/sbin")


def test_argv_is_never_a_shell(tmp_path):
    marker = tmp_path / "marker"
    prog = script(tmp_path, "args.sh", f'printf "%s|" "$@" > "{marker}"\n')
    evil = f"; touch {tmp_path}/pwned"
    assert run(job([prog, "a b", evil, "$HOME"])).exit == 0
    assert marker.read_text() == f"a b|{evil}|$HOME|"
    assert not (tmp_path / "pwned").exists()


def test_hanging_command_is_killed_with_its_process_group_at_the_timeout(tmp_path):
    pidfile = tmp_path / "child.pid"
    prog = script(tmp_path, "hang.sh", f'sleep 30 & echo $! > "{pidfile}"\nwait\n')
    t0 = time.monotonic()
    outcome = run(job([prog], timeout=0.5))
    assert outcome.killed == "timeout" and outcome.exit is None
    assert time.monotonic() - t0 < 3.0
    child = int(pidfile.read_text())
    assert not alive(child)  # the grandchild went with the group


def alive(pid: int) -> bool:
    """Running, not a zombie (one reparented to a pid 1 that does not reap stays one)."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True


def test_flooding_output_neither_blocks_nor_is_kept(tmp_path):
    prog = script(tmp_path, "flood.sh", "head -c 20000000 /dev/zero | tr '\\0' x; echo; echo last words\n")
    outcome = run(job([prog], timeout=20.0))
    assert outcome.exit == 0
    assert outcome.output_bytes > 20_000_000
    assert outcome.last_line == "last words"


def test_missing_program_is_an_error_not_an_exception(tmp_path):
    outcome = run(job([str(tmp_path / "nope")]))
    assert outcome.exit is None and outcome.error == "no-such-file-or-directory"


def test_unknown_user_is_an_error():
    assert run(job(["/bin/true"], user="no-such-user-awp")).error == "unknown-user"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")
def test_runs_as_the_named_unprivileged_user():
    tmp_path = Path(tempfile.mkdtemp(prefix="awp-actions-", dir="/tmp"))  # pytest's is root-only
    tmp_path.chmod(0o777)
    marker = tmp_path / "marker"
    prog = script(tmp_path, "whoami.sh", f'id -u > "{marker}"; id -G >> "{marker}"\n')
    os.chmod(prog, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    nobody = pwd.getpwnam("nobody")
    try:
        assert run(job([prog], user="nobody")).exit == 0
        uid, groups = marker.read_text().splitlines()
        owner = marker.stat().st_uid
    finally:
        shutil.rmtree(tmp_path)
    assert int(uid) == nobody.pw_uid and owner == nobody.pw_uid
    assert "0" not in groups.split()  # root's groups are not inherited


def test_runner_logs_one_line_per_run(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="awp.knockd.actions")
    runner = CommandRunner(workers=1)
    runner.submit(job(["/bin/true"]))
    runner.submit(job(["/bin/false"], action="close"))
    runner.submit(job(["/bin/sleep", "5"], action="expire", timeout=0.3))
    wait_done(runner, 3)
    runner.stop()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("command ")]
    assert len(lines) == 3
    assert "action=open" in lines[0] and " exit=0 " in lines[0] and "duration_ms=" in lines[0]
    assert "action=close" in lines[1] and " exit=1 " in lines[1]
    assert "action=expire" in lines[2] and "killed=timeout" in lines[2]
    assert all("door=22" in l and "src=198.18.0.2" in l for l in lines)


def test_submit_never_blocks_while_commands_hang():
    runner = CommandRunner(workers=2)
    try:
        t0 = time.monotonic()
        results = [runner.submit(job(["/bin/sleep", "3"], src=f"198.18.0.{i}", timeout=0.5)) for i in range(200)]
        assert time.monotonic() - t0 < 0.5
        assert results.count("queued") <= 64 + 2
    finally:
        runner.stop()


def test_a_thousand_opens_a_second_are_bounded_and_coalesced(caplog):
    """1,000 opens of one door: 900 from 10 sources (coalesced to 10 runs), 100 from 100
    new sources (54 queued, the rest dropped at the bound of 64)."""
    caplog.set_level(logging.INFO, logger="awp.knockd.actions")
    clock = [100.0]
    runner = CommandRunner(max_pending=64, workers=1, start=False, clock=lambda: clock[0])
    results = []
    for i in range(900):
        results.append(runner.submit(job(["/bin/true"], src=f"198.18.0.{i % 10}")))
    for i in range(100):
        results.append(runner.submit(job(["/bin/true"], src=f"198.18.1.{i}")))
    assert results.count("queued") == 64 and results.count("coalesced") == 890
    assert results.count("dropped") == 46
    assert len(runner.pending) == 64
    runner.summary()  # the fake clock has not moved: no line yet
    assert not [r for r in caplog.records if "summary" in r.getMessage()]
    clock[0] += 11
    runner.summary()
    line, = [r.getMessage() for r in caplog.records if "summary" in r.getMessage()]
    assert "queued=64 coalesced=890 dropped=46 pending=64 max_pending=64" in line
    runner.start()
    assert len(wait_done(runner, 64)) == 64
    runner.stop()
    assert runner.summary() is None  # nothing new: no second line
    assert len([r for r in caplog.records if "summary" in r.getMessage()]) == 1


def test_a_running_job_does_not_absorb_a_new_one(tmp_path):
    runner = CommandRunner(workers=1)
    try:
        assert runner.submit(job(["/bin/sleep", "0.3"])) == "queued"
        deadline = time.monotonic() + 5
        while runner.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.submit(job(["/bin/sleep", "0.3"])) == "queued"  # the first one is running
        assert len(wait_done(runner, 2)) == 2
    finally:
        runner.stop()


def test_a_worker_survives_a_job_it_cannot_run(caplog):
    runner = CommandRunner(workers=1)
    try:
        runner.submit(Job(Command(("/bin/true",), ME, 1.0), "22", "open", object(), 22, "advanced"))  # not a str
        runner.submit(job(["/bin/true"], action="close"))
        done = wait_done(runner, 2)
        assert [o.exit for _, o in done] == [None, 0]
    finally:
        runner.stop()


def test_stop_kills_what_still_runs(tmp_path):
    pidfile = tmp_path / "pid"
    prog = script(tmp_path, "long.sh", f'echo $$ > "{pidfile}"\nexec sleep 30\n')
    runner = CommandRunner(workers=1)
    runner.submit(job([prog], timeout=60))
    deadline = time.monotonic() + 5
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    runner.stop(wait=0.2)
    assert time.monotonic() - t0 < 3
    assert not alive(int(pidfile.read_text()))
    assert runner.done[-1][1].killed == "signal-9"
