"""Door commands: run a door's on_open / on_close program without ever blocking the listener.

The listener only calls `CommandRunner.submit(job)`, which takes a lock, looks at a dict
and returns at once ("queued", "coalesced" or "dropped"). A few worker threads take the
pending jobs in order and run each one:

- as argv (never through a shell), with stdin from /dev/null, cwd "/", and a small fixed
  environment: PATH, HOME, USER, LOGNAME, LANG=C, AWP_SRC, AWP_PORT, AWP_DOOR, AWP_ACTION
  (open, close or expire) and AWP_MODE (simple or advanced);
- as the door's run_as user (setgid, initgroups, setuid in the child: Popen's user=,
  group=, extra_groups=), in a new session, so the whole process group can be killed;
- with a timeout: when it passes, the process group gets SIGKILL and the run is logged
  with killed=timeout. Output (stdout and stderr together) is read and thrown away as it
  comes, keeping only its size and last line, so a command that floods its output neither
  blocks nor fills memory. A child the command left running after it exited (a daemon it
  started) is not waited for and not killed.

Each run is logged as ONE line, key=value:

    command door=22 action=open src=198.18.0.2 port=22 mode=advanced user=nobody exit=0 duration_ms=12 output_bytes=0

The same door opening 1,000 times a second: a job whose (door, action, source) is
already pending is coalesced into it (one run); a new job when `max_pending` (64) jobs
already wait is dropped. Both are counted and reported in one summary line at most every
`summary_every` seconds (and at stop):

    commands summary queued=70 coalesced=900 dropped=30 pending=64

A job already running does not absorb a new one: an open that comes after a run started
gets its own run.
"""

from __future__ import annotations

import logging
import os
import pwd
import select
import signal
import subprocess
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)
MAX_PENDING = 64
WORKERS = 2
SUMMARY_EVERY = 10.0
TAIL = 200  # bytes of the output's last line kept (debug log only)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Command:
    """What to run: absolute program path first; as whom; for how long at most."""

    argv: tuple[str, ...]
    user: str = "nobody"
    timeout: float = 10.0


@dataclass(frozen=True)
class Job:
    command: Command
    door: str  # the door's id: its protected port (or the knock port), as text
    action: str  # open, close or expire
    src: str
    port: int  # the protected port
    mode: str  # simple or advanced

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.door, self.action, self.src)


@dataclass(frozen=True)
class Outcome:
    exit: int | None  # None when killed or not started
    duration_ms: int
    killed: str = ""  # "timeout" if the group was killed, "signal-N" if a signal ended it
    error: str = ""  # why it could not start
    output_bytes: int = 0
    last_line: str = ""


class CommandRunner:
    def __init__(self, max_pending: int = MAX_PENDING, workers: int = WORKERS,
                 summary_every: float = SUMMARY_EVERY, clock: Callable[[], float] = time.monotonic,
                 start: bool = True):
        self.max_pending = max_pending
        self.summary_every = summary_every
        self.clock = clock
        self.pending: OrderedDict[tuple, Job] = OrderedDict()
        self.counts = {"queued": 0, "coalesced": 0, "dropped": 0}
        self.runs = 0  # jobs run (started or not), since the start
        self.running: set[subprocess.Popen] = set()  # their process groups die with stop()
        self.reported = dict(self.counts)
        self.last_summary = clock()
        self.done: list[tuple[Job, Outcome]] = []  # the last few runs, for tests and status
        self._cond = threading.Condition()
        self._stop = False
        self._threads = [threading.Thread(target=self._work, name=f"awp-command-{i}", daemon=True)
                         for i in range(workers)]
        if start:
            self.start()

    def start(self) -> None:
        for t in self._threads:
            if not t.is_alive():
                t.start()

    def submit(self, job: Job) -> str:
        """Never blocks for longer than a dict operation under a lock."""
        with self._cond:
            if job.key in self.pending:
                result = "coalesced"
            elif len(self.pending) >= self.max_pending:
                result = "dropped"
            else:
                self.pending[job.key] = job
                result = "queued"
                self._cond.notify()
            self.counts[result] += 1
        return result

    def stop(self, wait: float = 3.0) -> None:
        """No new runs start (waiting jobs are forgotten); running ones get up to `wait`
        seconds, then their process groups are killed; then the summary line."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        deadline = time.monotonic() + wait
        for t in self._threads:
            if t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = list(self.running)
        for proc in left:
            log.warning("command pid=%d still running at stop: killing its process group", proc.pid)
            _kill_group(proc)
        for t in self._threads:
            if t.is_alive():
                t.join(1.0)
        self.summary(force=True)

    def summary(self, force: bool = False) -> None:
        """One line if anything was coalesced or dropped since the last one."""
        with self._cond:
            now = self.clock()
            changed = (self.counts["coalesced"], self.counts["dropped"]) != (
                self.reported["coalesced"], self.reported["dropped"])
            if not changed or (not force and now - self.last_summary < self.summary_every):
                return
            new = {k: self.counts[k] - self.reported[k] for k in self.counts}
            self.reported = dict(self.counts)
            self.last_summary = now
            pending = len(self.pending)
        log.warning("commands summary queued=%d coalesced=%d dropped=%d pending=%d max_pending=%d",
                    new["queued"], new["coalesced"], new["dropped"], pending, self.max_pending)

    def _started(self, proc: subprocess.Popen | None, done: bool = False) -> None:
        with self._cond:
            (self.running.discard if done else self.running.add)(proc)

    def _take(self) -> Job | None:
        with self._cond:
            while not self.pending and not self._stop:
                self._cond.wait(1.0)
                if not self.pending:
                    break
            if self._stop or not self.pending:
                return None
            return self.pending.popitem(last=False)[1]

    def _work(self) -> None:
        while not self._stop:
            job = self._take()
            self.summary()
            if job is None:
                continue
            try:
                outcome = run(job, self.clock, self._started)
            except Exception as exc:  # a bug here must not end the worker
                log.exception("command door=%s action=%s src=%s not run", job.door, job.action, job.src)
                outcome = Outcome(None, 0, error=exc.__class__.__name__.lower())
            else:
                log_outcome(job, outcome)
            with self._cond:
                self.done = (self.done + [(job, outcome)])[-100:]
                self.runs += 1


# --- one run -------------------------------------------------------------------------------


def environment(job: Job, user: pwd.struct_passwd | None) -> dict[str, str]:
    env = {"PATH": PATH, "LANG": "C", "AWP_SRC": job.src, "AWP_PORT": str(job.port), "AWP_DOOR": job.door,
           "AWP_ACTION": job.action, "AWP_MODE": job.mode}
    if user is not None:
        env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    return env


def identity(name: str) -> tuple[pwd.struct_passwd, dict]:
    """The user and Popen's arguments to become them; {} when we already are them."""
    user = pwd.getpwnam(name)  # KeyError: unknown user
    if os.geteuid() == user.pw_uid and os.getegid() == user.pw_gid:
        return user, {}
    groups = [g for g in os.getgrouplist(user.pw_name, user.pw_gid) if g != user.pw_gid]
    return user, {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": groups}


def run(job: Job, clock: Callable[[], float] = time.monotonic, started=None) -> Outcome:
    """Run one job to its end or its timeout; `started(proc)` and `started(proc, done=True)`
    bracket the child's life (the runner kills what is left at stop)."""
    start = clock()
    cmd = job.command
    try:
        user, become = identity(cmd.user)
        proc = subprocess.Popen(list(cmd.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, cwd="/", env=environment(job, user),
                                start_new_session=True, close_fds=True, **become)
    except KeyError:
        return Outcome(None, _ms(clock() - start), error="unknown-user")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        return Outcome(None, _ms(clock() - start), error=str(reason).replace(" ", "-").lower())
    if started:
        started(proc)
    try:
        size, last, killed = _drain(proc, cmd.timeout)
        code = proc.wait()
        if code < 0 and not killed:  # a signal: at stop, or from elsewhere
            killed = f"signal-{-code}"
    finally:
        if started:
            started(proc, done=True)
    return Outcome(None if killed else code, _ms(clock() - start), killed, "", size, last)


def _drain(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Read the output until the command exits or its time is up; kill the group then."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    size, tail, eof = 0, b"", False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill_group(proc)
                return size, _last_line(tail), "timeout"
            if eof or proc.poll() is not None:
                if proc.poll() is not None:  # exited: take what is buffered, leave its children
                    size, tail = _read_ready(fd, size, tail)
                    return size, _last_line(tail), ""
                try:
                    proc.wait(min(left, 0.5))
                except subprocess.TimeoutExpired:
                    pass
                continue
            if select.select([fd], [], [], min(left, 0.5))[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    eof = True
                size += len(chunk)
                tail = (tail + chunk)[-4096:]
    finally:
        proc.stdout.close()


def _read_ready(fd: int, size: int, tail: bytes) -> tuple[int, bytes]:
    for _ in range(64):  # at most 4 MiB more; a grandchild still writing is not followed
        if not select.select([fd], [], [], 0)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        size += len(chunk)
        tail = (tail + chunk)[-4096:]
    return size, tail


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: its pgid is its pid
    except ProcessLookupError:
        pass


def _last_line(tail: bytes) -> str:
    lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
    text = lines[-1][-TAIL:].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


def log_outcome(job: Job, outcome: Outcome) -> None:
    head = (f"command door={job.door} action={job.action} src={job.src} port={job.port} mode={job.mode} "
            f"user={job.command.user} program={job.command.argv[0]}")
    if outcome.error:
        log.error("%s exit=- error=%s duration_ms=%d", head, outcome.error, outcome.duration_ms)
    elif outcome.killed:
        log.warning("%s exit=- killed=%s duration_ms=%d output_bytes=%d", head, outcome.killed,
                    outcome.duration_ms, outcome.output_bytes)
    else:
        level = logging.INFO if outcome.exit == 0 else logging.WARNING
        log.log(level, "%s exit=%d duration_ms=%d output_bytes=%d", head, outcome.exit, outcome.duration_ms,
                outcome.output_bytes)
    if outcome.last_line:
        log.debug("command output door=%s action=%s last_line=%r", job.door, job.action, outcome.last_line)
