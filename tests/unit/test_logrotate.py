"""etc/logrotate.d/awp-knockd: logrotate accepts it (`logrotate -d`), and a forced rotation
of a log held open with O_APPEND, as the listener's is (`awp -s -f` opens it once for the
supervisor and its listener), keeps every line and leaves no hole in the live file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNIPPET = REPO / "etc" / "logrotate.d" / "awp-knockd"

WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # as control.start's "ab"
for line in sys.stdin:  # one line to write per line read; bounded by the test's input
    os.write(fd, line.encode())
    print("ok", flush=True)
"""


def logrotate() -> str:
    tool = shutil.which("logrotate") or "/usr/sbin/logrotate"
    assert os.path.exists(tool), "logrotate is in the Makefile's DEB_PKGS"
    return tool


def test_logrotate_accepts_the_snippet():
    result = subprocess.run([logrotate(), "-d", str(SNIPPET)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    assert "/var/awp/var/log/awp-knockd.log" in result.stderr  # -d says what it would rotate


def test_rotation_keeps_every_line_of_a_log_held_open_for_appending(tmp_path):
    logdir = tmp_path / "var" / "log"
    logdir.mkdir(parents=True)
    conf = tmp_path / "awp-knockd"
    conf.write_text(SNIPPET.read_text().replace("/var/awp", str(tmp_path)))
    os.chmod(conf, 0o644)
    log = logdir / "awp-knockd.log"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        def write(line: str) -> None:
            writer.stdin.write(line + "\n")
            writer.stdin.flush()
            assert writer.stdout.readline() == "ok\n"

        for i in range(20):
            write(f"before {i}")
        result = subprocess.run([logrotate(), "-f", "-s", str(tmp_path / "state"), str(conf)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        for i in range(5):
            write(f"after {i}")
    finally:
        writer.stdin.close()
        writer.wait(timeout=10)
    rotated = (logdir / "awp-knockd.log.1").read_text()  # delaycompress: the newest stays plain
    live = log.read_bytes()
    assert rotated == "".join(f"before {i}\n" for i in range(20))
    assert live == "".join(f"after {i}\n" for i in range(5)).encode()  # no NUL hole before it
