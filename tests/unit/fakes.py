"""In-memory stand-ins for the kernel side of the backend seam (awp.backend.Backend, Grants)
and for the listener's process control, so the workflow and the listener run in unit tests.

FakeBackend keeps what "the kernel" holds as a tuple of door descriptions; `history` is every
state it held, so a test can see that an apply happened and was undone."""

from __future__ import annotations

from awp.backend import Inspection, Plan, SourceState
from awp.errors import ApplyError, EnvironmentProblem, ListenerError
from awp.model import Config


class FakeGrants:
    """Grants in a dict: (port, source) -> seconds left. `calls` records what was asked, with
    the source as given (an ipaddress object)."""

    def __init__(self):
        self.held: dict[tuple[int, str], int] = {}
        self.calls: list[tuple] = []

    def open(self, port: int, src, ttl: int) -> None:
        self.calls.append(("open", port, src, ttl))
        self.held[(port, str(src))] = ttl

    def close(self, port: int, src) -> bool:
        self.calls.append(("close", port, src))
        return self.held.pop((port, str(src)), None) is not None

    def list(self) -> list[tuple[int, str, int]]:
        return sorted((port, src, left) for (port, src), left in self.held.items())


def describe(config: Config) -> tuple[str, ...]:
    """What a backend would install for `config`; () is nothing at all."""
    simple = [f"simple {d.port} tcp {','.join(map(str, d.knocks))}" for d in config.active_simple]
    advanced = [f"advanced {d.port} udp {d.knock_port}" for d in config.active_advanced]
    return tuple(sorted(simple + advanced))


class FakeBackend:
    """A Backend whose kernel is `self.state`. fail: {"plan", "apply"} makes those raise;
    usable=False is a host without this backend's tools (plan raises EnvironmentProblem)."""

    max_doors = None

    def unused_port_answer(self) -> str:
        return "drop"

    def __init__(self, name: str = "nftables", *, state: tuple[str, ...] = (), usable: bool = True,
                 fail: set[str] | frozenset[str] = frozenset()):
        self.name = name
        self.state = state
        self.usable = usable
        self.fail = set(fail)
        self.history: list[tuple[str, ...]] = [state]
        self.store = FakeGrants()

    def preset(self, state: tuple[str, ...]) -> FakeBackend:
        """What the kernel holds before the test begins."""
        self.state, self.history = state, [state]
        return self

    def plan(self, config: Config) -> Plan:
        if not self.usable:
            raise EnvironmentProblem(f"{self.name} is not usable on this host")
        if "plan" in self.fail:
            raise ApplyError(f"{self.name}: cannot read the kernel")
        desired = describe(config)
        return Plan(self.name, desired != self.state, "\n".join(desired), (self.state, desired))

    def apply(self, plan: Plan) -> None:
        if not plan.changed:
            return
        if "apply" in self.fail:
            raise ApplyError(f"{self.name}: the kernel refused the ruleset")
        self._hold(plan.steps[1])

    def rollback(self, plan: Plan) -> None:
        if plan.changed:
            self._hold(plan.steps[0])

    def grants(self, config: Config) -> FakeGrants:
        return self.store

    def inspect(self, config: Config) -> Inspection:
        sources = tuple(SourceState(port, src, "granted", left) for port, src, left in self.store.list())
        matches = describe(config) == self.state
        return Inspection(self.name, sources, {}, {}, matches, () if matches else ("fake table",))

    def _hold(self, state: tuple[str, ...]) -> None:
        self.state = state
        self.history.append(state)


class FakeControl:
    """awp.knockd.control without processes: ensure() starts or reloads, stop() stops."""

    def __init__(self, *, pid: int | None = None, start_fails: bool = False):
        self.pid = pid
        self.start_fails = start_fails

    def ensure(self, root) -> str:
        if self.pid:
            return f"reloaded (pid {self.pid})"
        if self.start_fails:
            raise ListenerError("listener exited with code 7; see var/log/awp-knockd.log")
        self.pid = 4242
        return f"started (pid {self.pid})"

    def stop(self, root) -> int | None:
        pid, self.pid = self.pid, None
        return pid

    def running_pid(self, root) -> int | None:
        return self.pid
