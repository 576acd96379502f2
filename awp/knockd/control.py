"""Start, reload and stop the listener of one awp root, found through its locked pidfile."""

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


def running_pid(root: Root) -> int | None:
    """The listener's pid if one holds the pidfile lock, else None."""
    try:
        fd = os.open(root.pidfile, os.O_RDONLY)
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


def ensure(root: Root) -> str:
    """Reload a running listener, or start one. Returns what was done."""
    pid = running_pid(root)
    if pid:
        os.kill(pid, signal.SIGHUP)
        log.info("listener reloaded pid=%d", pid)
        return f"reloaded (pid {pid})"
    pid = start(root)
    return f"started (pid {pid})"


def start(root: Root) -> int:
    root.listener_log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "awp", "--root", str(root.base), "knockd"]
    with open(root.listener_log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ListenerError(f"listener exited with code {proc.returncode}; see {root.listener_log}")
        if running_pid(root) == proc.pid:
            log.info("listener started pid=%d", proc.pid)
            return proc.pid
        time.sleep(0.05)
    proc.kill()
    raise ListenerError(f"listener did not start within {START_TIMEOUT:.0f} s; see {root.listener_log}")


def stop(root: Root) -> int | None:
    pid = running_pid(root)
    if not pid:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and running_pid(root) == pid:
        time.sleep(0.05)
    if running_pid(root) == pid:
        os.kill(pid, signal.SIGKILL)
    log.info("listener stopped pid=%d", pid)
    return pid
