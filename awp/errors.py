"""One exception family. Each class carries the exit code the CLI returns for it.

Only awp.cli.main() catches these; everything else raises. Messages name the
file, line and field at fault and never contain a secret.
"""

from __future__ import annotations


class AwpError(Exception):
    """Base of every expected failure."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        return f"{where}{self.message}"


class UsageError(AwpError):
    """Bad command line (argparse uses 2 as well)."""

    exit_code = 2


class ConfigError(AwpError):
    """A settings or list file is missing, unreadable, insecure or invalid."""

    exit_code = 3


class StrictRefused(ConfigError):
    """FW_PORTKNOCK_STRICT turned a warning into a refusal."""


class ApplyError(AwpError):
    """The kernel or a firewall tool refused; the running firewall is unchanged."""

    exit_code = 4


class ConfirmPending(ApplyError):
    """An `awp -s -f --confirm` waits for `awp confirm`; another apply is refused meanwhile."""


class NothingToConfirm(UsageError):
    """`awp confirm` with no `awp -s -f --confirm` pending."""


class LockoutRefused(AwpError):
    """The apply would close the admin's own SSH port to them; --force overrides."""

    exit_code = 5


class EnvironmentProblem(AwpError):
    """Not root, a tool missing, or the kernel lacks a feature awp needs."""

    exit_code = 6


class ListenerError(AwpError):
    """The advanced-mode listener could not start, stop or reload."""

    exit_code = 7


class DoorNotOpen(AwpError):
    """awp knock --wait: the port did not answer in time (the knock may have been lost,
    wrong, or the door closed)."""

    exit_code = 8


EXIT_CODES = {
    0: "success (also: nothing to change)",
    1: "unexpected awp error",
    2: "usage error",
    3: "configuration error (settings or list file)",
    4: "apply failed; the running firewall was left as it was",
    5: "refused: the change would lock out the current SSH session",
    6: "environment problem: not root, a tool missing, kernel feature missing",
    7: "listener error (advanced mode)",
    8: "awp knock --wait: the port did not answer in time",
}
