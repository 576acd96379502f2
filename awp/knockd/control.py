"""Start, reload and stop the listener of one awp root, found through its locked pidfile.

Without systemd, the listener runs under awp's supervisor (awp.knockd.supervisor), which
restarts it if it dies or stalls. Where systemd runs and the awp-knockd unit is enabled for
the default root, `awp -s -f` hands over to the unit instead of starting a second copy.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import time

from awp.errors import ListenerError
from awp.paths import Root

log = logging.getLogger(__name__)
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


UNIT = "awp-knockd.service"


def running_pid(root: Root, pidfile=None) -> int | None:
    """The listener's (or, with `pidfile`, the supervisor's) pid if it holds its pidfile
    lock, else None."""
    try:
        fd = os.open(pidfile or root.pidfile, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        return None
    finally:
        os.close(fd)


def supervisor_pid(root: Root) -> int | None:
    return running_pid(root, root.supervisor_pidfile)


def take_pidfile(path, what: str) -> int:
    """Lock `path` for this process (the pid is written once it is ready), or refuse."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise ListenerError(f"another {what} already runs for {path.parents[2]} (pid {other or '?'})") from None
    os.ftruncate(fd, 0)
    return fd


def ensure(root: Root) -> str:
    """Reload a running listener, or start one (under systemd or the supervisor)."""
    if _systemd_unit(root):
        _systemctl("reload-or-restart", "--no-block")
        return f"reloaded or restarted by systemd ({UNIT})"
    pid = running_pid(root)
    if pid:
        os.kill(pid, signal.SIGHUP)
        log.info("listener reloaded pid=%d", pid)
        return f"reloaded (pid {pid})"
    pid = start(root)
    return f"started (pid {pid}, supervised)"


def start(root: Root) -> int:
    """Start the supervisor, which starts the listener; return once the listener is ready."""
    root.listener_log.parent.mkdir(parents=True, exist_ok=True)
    if supervisor_pid(root):  # restarting its listener right now: wait for it
        return _wait_ready(root, None)
    argv = [sys.executable, "-m", "awp", "--root", str(root.base), "supervise"]
    with open(root.listener_log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    return _wait_ready(root, proc)


def _wait_ready(root: Root, proc) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ListenerError(f"listener exited with code {proc.returncode}; see {root.listener_log}")
        pid = running_pid(root)
        if pid:
            log.info("listener started pid=%d", pid)
            return pid
        time.sleep(0.05)
    if proc is not None:
        _stop_pid(proc.pid, lambda: proc.poll() is None)
    raise ListenerError(f"listener did not start within {START_TIMEOUT:.0f} s; see {root.listener_log}")


def stop(root: Root) -> int | None:
    """Stop the supervisor (which stops its listener), else a lone listener."""
    if _systemd_unit(root):
        _systemctl("stop")
    pid = running_pid(root)
    sup = supervisor_pid(root)
    if sup:
        _stop_pid(sup, lambda: supervisor_pid(root) == sup)
    if running_pid(root):
        _stop_pid(running_pid(root), lambda: running_pid(root) == pid)
    if pid:
        log.info("listener stopped pid=%d", pid)
    return pid


def _stop_pid(pid: int, alive) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and alive():
        time.sleep(0.05)
    if alive():
        os.kill(pid, signal.SIGKILL)


def _systemd_unit(root: Root) -> bool:
    """systemd is the init, the unit is enabled, and it serves this root (the default)."""
    from awp.paths import DEFAULT_ROOT

    if not os.path.isdir("/run/systemd/system") or str(root.base) != DEFAULT_ROOT:
        return False
    return subprocess.run(["systemctl", "is-enabled", "--quiet", UNIT], check=False).returncode == 0


def _systemctl(verb: str, *flags: str) -> None:
    """--no-block where awp -s -f runs inside awp.service at boot: the listener's unit is
    ordered after the network, which waits for awp.service, so waiting would deadlock."""
    result = subprocess.run(["systemctl", *flags, verb, UNIT], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ListenerError(f"systemctl {verb} {UNIT} failed: {result.stderr.strip()}")
