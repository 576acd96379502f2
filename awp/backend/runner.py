"""Running external programs. The runner is passed in, so tests can record argv and stdin."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from typing import Protocol

from awp.errors import EnvironmentProblem

log = logging.getLogger(__name__)
PACKAGES = {"nft": "nftables"}  # the Debian package of a program; the others come with iptables


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    def __call__(self, argv: list[str], stdin: str | None = None) -> Result: ...


def run(argv: list[str], stdin: str | None = None, timeout: float = 120) -> Result:
    """The real runner: no shell, text in and out, bounded in time."""
    log.debug("run %s", " ".join(argv))
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        package = PACKAGES.get(argv[0], "iptables")
        raise EnvironmentProblem(f"{argv[0]} not found; install the {package} package") from None
    except subprocess.TimeoutExpired:
        return Result(124, "", f"{argv[0]} timed out after {timeout} s")
    return Result(proc.returncode, proc.stdout, proc.stderr)
