"""Helpers for test_commands.py and test_commands_flood.py: scripts a door command runs
(root-owned, reachable by nobody), the door options file, markers and `awp knock`."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from advanced_helpers import write_private
from harness import awp_command, wait_for

SEQ = (7481, 2203, 9127)
SIMPLE_PORT = 22
SIMPLE_DOOR = f"{SIMPLE_PORT}:{','.join(map(str, SEQ))}\n"
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)


@pytest.fixture
def scripts():
    """Root-owned scripts in a 0755 directory under /tmp (pytest's tmp is root-only, and
    awp check refuses a program nobody cannot reach), and an output directory of nobody's."""
    base = Path(tempfile.mkdtemp(prefix="awp-doorcmd-", dir="/tmp"))
    base.chmod(0o755)
    out = base / "out"
    out.mkdir()
    os.chown(out, NOBODY.pw_uid, NOBODY.pw_gid)

    def script(name: str, body: str) -> str:
        path = base / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return str(path)

    marker = script("marker.sh", f'echo "$AWP_ACTION $AWP_SRC $AWP_PORT $AWP_DOOR $AWP_MODE $(id -u)" '
                                 f'>> "{out}/marker"\n')
    hang = script("hang.sh", f'echo started >> "{out}/hang"\nexec sleep 60\n')
    fail = script("fail.sh", "echo failing on purpose\nexit 3\n")
    yield {"marker": marker, "hang": hang, "fail": fail, "out": out}
    shutil.rmtree(base, ignore_errors=True)


def with_doors(srv, text: str) -> None:
    write_private(Path(srv.root) / "etc" / "firewall" / "portknock-doors", text)


def marker_lines(out: Path) -> list[str]:
    try:
        return (out / "marker").read_text().splitlines()
    except FileNotFoundError:
        return []


def wait_marker(out: Path, pattern: str, timeout: float = 10.0, log=None) -> str:
    regex = re.compile(pattern)
    found: list[str] = []

    def seen() -> bool:
        found[:] = [l for l in marker_lines(out) if regex.search(l)]
        return bool(found)

    try:
        wait_for(seen, timeout, f"marker /{pattern}/")
    except RuntimeError:
        raise AssertionError(f"no marker /{pattern}/ within {timeout}s: {marker_lines(out)}; log:\n"
                             f"{log.text()[-3000:] if log else ''}") from None
    return found[0]


def awp_knock(client, *args: str, timeout: float = 60):
    cmd, extra = awp_command()
    env = {**os.environ, **extra} if extra else None
    return client.run([*cmd, "knock", *args], env=env, check=False, timeout=timeout)
