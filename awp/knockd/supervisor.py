"""`awp supervise`: keeps the listener alive when no service manager does.

`awp -s -f` starts this supervisor (unless systemd runs the awp-knockd unit), and it starts
the listener as its child. The first listener failing before it gets ready (a bad configuration,
a busy NFLOG group) ends the supervisor with its exit code, so `awp -s -f` reports it and
puts the firewall back. Later, a listener that exits is started again after 1 s if it had
got ready, else after a back-off of 1, 2, 4 ... 30 s, so a start that keeps failing costs
little; one that stalls (its pidfile, which
it touches every second, is older than STALL_SECONDS) is killed and started again. Each
restart is one log line. SIGTERM stops the listener, then the supervisor; SIGHUP is passed
on to the listener (reload).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from awp.knockd.control import running_pid, take_pidfile
from awp.paths import Root

log = logging.getLogger(__name__)
STALL_SECONDS = 10.0
BACKOFF_MAX = 30.0
POLL = 0.25
STOP_GRACE = 5.0


class Supervisor:
    def __init__(self, root: Root):
        self.root = root
        self.child: subprocess.Popen | None = None
        self.backoff = 1.0
        self.started_at = 0.0
        self.stop = False
        self.ready = False
        self.ever_ready = False
        self.failed: int | None = None
        self.restarts = 0

    def spawn(self) -> None:
        argv = [sys.executable, "-m", "awp", "--root", str(self.root.base), "knockd"]
        self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)  # output: the supervisor's
        self.started_at = time.monotonic()
        self.ready = False
        log.info("supervisor started listener pid=%d", self.child.pid)

    def watch(self) -> None:
        """One poll: restart an exited or stalled listener."""
        child = self.child
        if child is None:
            return
        code = child.poll()
        if code is None and not self.ready and running_pid(self.root) == child.pid:
            self.ready = self.ever_ready = True
        if code is None and self._stalled(child.pid):
            log.error("listener stalled pid=%d: no heartbeat for %.0f s; killing it", child.pid, STALL_SECONDS)
            child.kill()
            code = child.wait()
        if code is None:
            return
        if not self.ready and self._wrote_pid(child.pid):  # got ready between two polls
            self.ready = self.ever_ready = True
        if not self.ready and self.restarts == 0 and not self.ever_ready:
            log.error("listener exited pid=%d code=%s before it got ready; not restarting it", child.pid, code)
            self.failed = code  # a start that fails (a bad configuration, a busy NFLOG group) is
            self.stop = True    # reported to awp -s -f, which puts the firewall back
            return
        if self.ready:
            self.backoff = 1.0
        self.restarts += 1
        log.error("listener exited pid=%d code=%s; restart %d in %.0f s", child.pid, code, self.restarts,
                  self.backoff)
        self._sleep(self.backoff)
        self.backoff = min(BACKOFF_MAX, self.backoff * 2)
        if not self.stop:
            self.spawn()

    def _wrote_pid(self, pid: int) -> bool:
        """A listener writes its pid once it can receive; the file keeps it after it died."""
        try:
            return self.root.pidfile.read_text().strip() == str(pid)
        except OSError:
            return False

    def _stalled(self, pid: int) -> bool:
        if running_pid(self.root) != pid:  # not ready yet (or starting): judged by its start time
            return time.monotonic() - self.started_at > STALL_SECONDS * 2
        try:
            age = time.time() - os.stat(self.root.pidfile).st_mtime
        except OSError:
            return False
        return age > STALL_SECONDS

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop and time.monotonic() < deadline:
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))

    def shutdown(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_supervisor(root: Root) -> int:
    lock = take_pidfile(root.supervisor_pidfile, "supervisor")
    sup = Supervisor(root)
    signal.signal(signal.SIGTERM, lambda *_: setattr(sup, "stop", True))
    signal.signal(signal.SIGINT, lambda *_: setattr(sup, "stop", True))
    signal.signal(signal.SIGHUP, lambda *_: _forward(sup, signal.SIGHUP))
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
    log.info("supervisor started pid=%d", os.getpid())
    try:
        sup.spawn()
        while not sup.stop:
            sup.watch()
            time.sleep(POLL)
    finally:
        sup.shutdown()
        log.info("supervisor stopped pid=%d restarts=%d", os.getpid(), sup.restarts)
        os.close(lock)
    return sup.failed or 0


def _forward(sup: Supervisor, sig: int) -> None:
    if sup.child is not None and sup.child.poll() is None:
        sup.child.send_signal(sig)
