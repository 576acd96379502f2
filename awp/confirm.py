"""`awp -s -f --confirm SECONDS` and `awp confirm`: apply, and put the previous firewall back
unless the admin confirms in time (iptables-apply, but the timer outlives the SSH session).

    DIR/var/lib/awp/applied/          the configuration files the kernel holds (every apply)
    DIR/var/lib/awp/pending-confirm/  state.json + previous/ (a copy of applied/ as it was)
    DIR/var/lib/awp/rolled-back/T/    the unconfirmed files a rollback took out of DIR/etc
    DIR/var/run/awp-confirm.pid       the timer's pid, locked while it runs
    DIR/var/log/awp-confirm.log       what the timer did

A rollback puts the previous configuration files back into DIR/etc and applies them through
the normal apply (awp.workflow.apply): every backend's tables come back as that
configuration compiles, another backend's rules are removed after a backend switch, and
the listener reloads the old doors, exactly as a plain `awp -s -f` of those files would; the
next boot applies them too. If nothing of awp's was installed before, a rollback is
`awp remove`. The timer is a detached process (double fork, setsid, SIGHUP ignored), so the
death of the admin's session does not stop it. A second apply while one is pending is
refused (ConfirmPending); one whose timer is gone (a reboot) is rolled back first.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from awp import snapshot
from awp.errors import ApplyError, AwpError, ConfirmPending, NothingToConfirm, UsageError
from awp.paths import Root

log = logging.getLogger("awp.confirm")  # also when run as __main__ (the timer)
MAX_SECONDS = 86400
TIMER_START = 5.0  # seconds the applier waits for the timer to run
LOCK_WAIT = 60.0  # seconds a rollback waits for another awp command to finish


def pending_dir(root: Root) -> Path:
    return snapshot.state_dir(root) / "pending-confirm"


def _timer_pidfile(root: Root) -> Path:
    return root.base / "var" / "run" / "awp-confirm.pid"


def _log_path(root: Root) -> Path:
    return root.base / "var" / "log" / "awp-confirm.log"


def pending(root: Root, timer: bool = True) -> dict | None:
    """The pending confirmation's state, with "seconds_left" and (timer=True) "timer_pid";
    None if none. The timer itself passes timer=False: probing its own pidfile's lock from
    the process that holds it would release it (POSIX record locks are per process)."""
    try:
        state = json.loads((pending_dir(root) / "state.json").read_text())
    except (OSError, ValueError):
        return None
    if timer:
        from awp.knockd.control import running_pid

        state["timer_pid"] = running_pid(root, _timer_pidfile(root))
    if "deadline" in state:
        state["seconds_left"] = max(0, int(state["deadline"] - time.time() + 0.5))
    return state


def check_seconds(seconds: int) -> int:
    if not 1 <= seconds <= MAX_SECONDS:
        raise UsageError(f"--confirm {seconds}: give 1 to {MAX_SECONDS} seconds")
    return seconds


# --- apply with confirm, confirm, cancel --------------------------------------------------


def before_apply(root: Root) -> str | None:
    """Every apply: refuse while a confirmation is pending; one whose timer is gone (a reboot,
    a kill) is rolled back now, and the apply goes on with the restored files."""
    with _locked(root):
        state = pending(root)
        if state is None:
            return None
        if state.get("timer_pid"):
            raise ConfirmPending(f"an apply of {state['applied_at']} waits for awp confirm (it rolls back in "
                                 f"{state.get('seconds_left', '?')} s); confirm it or let it roll back first")
        _rollback(root, state, "its timer is gone (reboot or kill)")
    return "a pending --confirm had lost its timer; the previous configuration was put back first"


def apply(root: Root, config, seconds: int, *, force: bool, ssh_connection: str | None, runner=None):
    """Snapshot, apply, start the timer. Returns (Applied, state)."""
    from awp import workflow

    check_seconds(seconds)
    with _locked(root):
        if pending(root) is not None:
            raise ConfirmPending("another apply already waits for awp confirm")
        previous = _previous(root, runner)
        _stage(root, previous)
        try:
            done = workflow.apply(root, config, force=force, ssh_connection=ssh_connection, runner=runner)
        except BaseException:
            shutil.rmtree(pending_dir(root), ignore_errors=True)
            raise
        state = {"token": secrets.token_hex(8), "seconds": seconds, "previous": previous,
                 "applied_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                 "deadline": time.time() + seconds, "deadline_monotonic": time.monotonic() + seconds}
        _write_state(root, state)
        try:
            _spawn_timer(root, state["token"])
        except AwpError as exc:
            _rollback(root, state, f"the timer did not start ({exc})")
            raise ApplyError(f"the rollback timer did not start ({exc}); the previous firewall is back") from None
    log.info("awp confirm pending seconds=%d previous=%s", seconds, previous)
    return done, state


def confirm(root: Root) -> dict:
    """Keep what the pending apply loaded; the timer sees its state gone and exits."""
    with _locked(root):
        state = pending(root)
        if state is None:
            raise NothingToConfirm("nothing to confirm: no awp -s -f --confirm is pending "
                                   f"(or it rolled back already; see {_log_path(root)})")
        shutil.rmtree(pending_dir(root))
    log.info("awp confirm confirmed applied_at=%r seconds_left=%s", state["applied_at"], state.get("seconds_left"))
    return state


def cancel(root: Root) -> dict | None:
    """`awp remove` while pending: nothing to roll back to any more."""
    with _locked(root):
        state = pending(root)
        if state is not None:
            shutil.rmtree(pending_dir(root), ignore_errors=True)
            log.info("awp confirm cancelled by awp remove")
        return state


# --- snapshot and rollback ---------------------------------------------------------------


def _previous(root: Root, runner) -> str:
    """"applied": DIR/var/lib/awp/applied is what the kernel holds; "nothing": awp holds no
    kernel state, so a rollback removes. Anything else cannot be rolled back to."""
    from awp import workflow

    if snapshot.applied_dir(root).is_dir():
        return "applied"
    if workflow._holding(runner):
        raise ApplyError(f"the kernel holds awp rules but {snapshot.applied_dir(root)} has no copy of the files "
                         "they came from (an apply by an older awp?), so --confirm could not put them back: "
                         "apply once without --confirm, then use --confirm")
    return "nothing"


def _stage(root: Root, previous: str) -> None:
    where = pending_dir(root)
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True, mode=0o700)
    if previous == "applied":
        snapshot.copy_dir(snapshot.applied_dir(root), where / "previous")
    _write_state(root, {"token": "", "previous": previous, "applied_at": "(applying)"})


def _write_state(root: Root, state: dict) -> None:
    path = pending_dir(root) / "state.json"
    tmp = path.with_name(".state.json.tmp")
    with open(tmp, "w") as fh:
        json.dump({k: v for k, v in state.items() if k not in ("timer_pid", "seconds_left")}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _rollback(root: Root, state: dict, why: str) -> None:
    """Caller holds the confirm lock. Put the previous configuration back and apply it."""
    from awp import workflow

    keep = snapshot.state_dir(root) / "rolled-back" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if state.get("previous") == "applied":
        changed = snapshot.restore(root, pending_dir(root) / "previous", keep)
        config, _ = workflow.load(root)
        _retry(lambda: workflow.apply(root, config, force=True, ssh_connection=None))
    else:
        changed = []
        _retry(lambda: workflow.remove(root))
    shutil.rmtree(pending_dir(root), ignore_errors=True)
    log.warning("awp confirm rolled back reason=%r previous=%s restored=%s kept=%s", why, state.get("previous"),
                ",".join(changed) or "-", keep if changed else "-")


def _retry(action):
    """Another awp command may hold the apply lock for a moment."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            return action()
        except ApplyError as exc:
            if "holds" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def _locked(root: Root):
    """The confirm state's own lock (not the apply lock, which workflow.apply takes)."""
    path = root.base / "var" / "run" / "awp-confirm.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ApplyError(f"another awp command holds {path}; try again") from None
                time.sleep(0.1)
        yield


# --- the detached timer --------------------------------------------------------------------


def _spawn_timer(root: Root, token: str) -> None:
    """Double fork: the child calls setsid (a new session, no controlling terminal, out of
    the admin's process group), the grandchild execs the timer and is reparented to init."""
    log_path = _log_path(root)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "awp.confirm", str(root.base), token]
    child = os.fork()
    if child == 0:  # pragma: no cover (a forked child)
        try:
            os.setsid()
            if os.fork() > 0:
                os._exit(0)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            null = os.open(os.devnull, os.O_RDONLY)
            out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.chdir("/")
            os.execv(sys.executable, argv)
        finally:
            os._exit(127)
    os.waitpid(child, 0)
    from awp.knockd.control import running_pid

    deadline = time.monotonic() + TIMER_START
    while time.monotonic() < deadline:
        if running_pid(root, _timer_pidfile(root)):
            return
        time.sleep(0.02)
    raise ApplyError(f"no timer within {TIMER_START:.0f} s; see {log_path}")


def run_timer(root: Root, token: str) -> int:
    from awp.knockd.control import take_pidfile

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    lock = take_pidfile(_timer_pidfile(root), "confirm timer")
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
    try:
        state = pending(root, timer=False)
        if state is None or state.get("token") != token:
            return 0
        log.info("timer started pid=%d rollback_in=%ds", os.getpid(), state["seconds"])
        while time.monotonic() < state["deadline_monotonic"]:
            time.sleep(min(0.2, max(0.0, state["deadline_monotonic"] - time.monotonic())))
            if (pending(root, timer=False) or {}).get("token") != token:
                log.info("timer ended: confirmed")
                return 0
        with _locked(root):
            state = pending(root, timer=False)
            if state is None or state.get("token") != token:
                return 0
            _rollback(root, state, f"not confirmed within {state['seconds']} s")
        return 0
    except AwpError as exc:
        log.error("rollback failed: %s; run awp -s -f by hand", exc)
        return 1
    finally:
        os.close(lock)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    return run_timer(Root(Path(argv[0])), argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
