"""Where the listener's lines go (awp(8), LOGGING).

- Under systemd (the awp-knockd unit), standard error is a journal stream: each line gets a
  `<N>` priority prefix (sd-daemon(3); journald reads it, SyslogLevelPrefix= defaults to on)
  and no time stamp (the journal has one). The unit sets SyslogIdentifier=awp-knockd, which
  fail2ban's journal backend matches.
- Started by `awp -s -f`, standard error is DIR/var/log/awp-knockd.log (awp.knockd.control),
  each line stamped with the local time, which fail2ban's file backend reads.
- With FW_PORTKNOCK_SYSLOG="yes", also to syslog through /dev/log: ident awp-knockd, facility
  authpriv (a knock is an authentication decision; Debian's rsyslog files authpriv with sshd's
  lines in /var/log/auth.log, readable by root only, where fail2ban already looks).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import stat

log = logging.getLogger(__name__)
SYSLOG_ADDRESS = "/dev/log"
IDENT = "awp-knockd"
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def journal_stderr() -> bool:
    """Standard error is the journal stream systemd gave us (JOURNAL_STREAM names its
    device and inode; a child whose stderr was redirected elsewhere does not match)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return dev.isdigit() and ino.isdigit() and (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """`<4>awp.knockd.decisionlog: knock rejected ...`: the journal's priority prefix."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>" + super().format(record)


def stderr_formatter(daemon: bool) -> logging.Formatter:
    """The formatter of standard error: time-stamped for the daemons unless the journal
    stamps them, priority-prefixed for the journal."""
    if daemon and journal_stderr():
        return JournalFormatter("%(name)s: %(message)s")
    return logging.Formatter(("%(asctime)s " if daemon else "") + "%(name)s: %(message)s")


class _SyslogHandler(logging.handlers.SysLogHandler):
    """awp's own syslog handler (a reload finds and replaces it). A line syslog cannot take
    (syslogd restarting) is dropped without a traceback on standard error: the journal or the
    log file has it anyway."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def use_settings(settings, address: str = SYSLOG_ADDRESS, logger: logging.Logger | None = None) -> None:
    """Add or drop the syslog handler as FW_PORTKNOCK_SYSLOG says (at start and on reload)."""
    target = logger or logging.getLogger("awp")
    ours = [h for h in target.handlers if isinstance(h, _SyslogHandler)]
    if ours and settings.syslog:
        return
    for handler in ours:
        target.removeHandler(handler)
        handler.close()
    if not settings.syslog:
        return
    try:
        if not stat.S_ISSOCK(os.stat(address).st_mode):
            raise OSError(0, "not a socket")
        handler = _SyslogHandler(address=address, facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV)
    except OSError as exc:
        log.error("FW_PORTKNOCK_SYSLOG=yes but syslog is not reachable at %s: %s", address, exc.strerror)
        return
    handler.ident = f"{IDENT}[{os.getpid()}]: "
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    target.addHandler(handler)
