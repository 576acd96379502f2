"""What the commands do, between the CLI (which parses and prints) and the backend.

    load -> check -> lockout -> plan -> apply (one backend transaction) -> listener
    (and, after a backend switch, removal of what another backend still holds)

Nothing here prints; results go back to awp.cli as values.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from awp import snapshot
from awp.backend import NAMES, Backend, Inspection, Plan, select
from awp.errors import ApplyError, AwpError, ConfigError, EnvironmentProblem, ListenerError, LockoutRefused
from awp.load import load_and_check, load_config
from awp.lockout import lockout_risk
from awp.model import Config, Settings, needs_listener
from awp.paths import Root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    config: Config
    plan: Plan
    listener: str | None = None  # what was done to the listener, if anything
    removed_from: tuple[str, ...] = ()  # other backends whose awp state was removed


@dataclass(frozen=True)
class Status:
    config: Config
    inspection: Inspection
    listener_pid: int | None
    supervisor_pid: int | None = None
    listener_state: dict | None = None  # what the listener last wrote (replay cache trust, decisions)
    elsewhere: tuple[str, ...] = ()  # other backends that still hold awp state
    confirm: dict | None = None  # a pending awp -s -f --confirm (awp.confirm.pending)


def dry_run(config: Config, runner=None) -> Plan:
    backend = select(config.settings.backend, runner)
    return backend.plan(resolve_stealth(config, backend))


def resolve_stealth(config: Config, backend: Backend) -> Config:
    """FW_PORTKNOCK_STEALTH="auto": answer as the host's unused ports do, as the other
    tables show it (awp(8), STEALTH)."""
    if config.settings.stealth != "auto" or not config.settings.enabled:
        return config
    try:
        answer = backend.unused_port_answer()
    except AwpError as exc:
        log.warning("stealth: cannot read the host's firewall (%s); knock ports drop", exc)
        answer = "drop"
    log.info("stealth auto: unused ports of this host %s, so knock ports do too",
             "are dropped" if answer == "drop" else "answer (reset, port unreachable)")
    return dataclasses.replace(config, settings=dataclasses.replace(config.settings, stealth=answer))


def apply(root: Root, config: Config, *, force: bool, ssh_connection: str | None, runner=None) -> Applied:
    """Apply `config` atomically, then start, reload or stop the listener; if the listener
    cannot start, the kernel is put back as it was."""
    risk = lockout_risk(config, ssh_connection)
    if risk and not force:
        raise LockoutRefused(risk)
    backend = select(config.settings.backend, runner)
    config = resolve_stealth(config, backend)
    with exclusive(root.lock):
        plan = backend.plan(config)
        backend.apply(plan)
        listener = _sync_listener(root, config, backend, plan)
        removed = _remove_others(backend, runner)
        _remember(root, snapshot.record_applied)
    return Applied(config, plan, listener, removed)


def _remember(root: Root, what) -> None:
    """The copy of the applied files that `--confirm` rolls back to (awp.snapshot)."""
    try:
        what(root)
    except OSError as exc:
        log.warning("cannot record the applied configuration under %s: %s", snapshot.applied_dir(root), exc)


def remove(root: Root, runner=None) -> tuple[str, ...]:
    """Stop the listener and remove awp's state from every backend that holds some."""
    from awp.knockd import control

    with exclusive(root.lock):
        control.stop(root)
        removed = []
        for backend, plan in _holding(runner):
            backend.apply(plan)
            log.info("removed awp's state backend=%s", backend.name)
            removed.append(backend.name)
        _remember(root, snapshot.forget_applied)
        return tuple(removed)


def status(root: Root, runner=None) -> Status:
    from awp.knockd import control

    config = load_config(root)
    backend = select(config.settings.backend, runner)
    inspection = backend.inspect(resolve_stealth(config, backend))
    inspection = dataclasses.replace(inspection, sources=_hand_grants(root, inspection.sources))
    pid = control.running_pid(root)
    elsewhere = tuple(b.name for b, _ in _holding(runner, skip=backend.name))
    from awp.confirm import pending

    return Status(config, inspection, pid, control.supervisor_pid(root), _listener_state(root) if pid else None,
                  elsewhere, pending(root))


def _hand_grants(root: Root, sources):
    import time

    from awp.grant import label_hand_grants, records

    found = records(root)
    return label_hand_grants(sources, found, time.time()) if found else sources


STATE_MAX = 1 << 20  # the listener's state file: a few hundred bytes per door


def fleet_key_note(root: Root, config: Config) -> str | None:
    """`awp check` in fleet mode: whether DIR/etc/fleet.key is the key that signed the
    fleet's newest grant messages. ConfigError if it verifies none of them; else a line to
    print (None without a fleet). Only `awp check` asks the store: an apply never waits on it."""
    from awp.fleet.node import KEY_CHECK_TIMEOUT, compare_key, fleet_settings

    fs = fleet_settings(root, config.settings)
    if fs is None:
        return None
    verdict, verified, read = compare_key(fs)
    if verdict == "differs":
        raise ConfigError(f"{root.fleet_key}: fleet key differs from the fleet's: none of the {read} newest "
                          f"grant messages in the store verifies under it (this node would ignore every grant "
                          f"of the fleet); copy {root.fleet_key} from a node of the fleet")
    return {"agrees": f"fleet key agrees with the fleet's ({verified} of the {read} newest grant messages verify)",
            "no-messages": "fleet key not compared: the fleet's store holds no grant message yet",
            "unreachable": f"fleet key not compared: the fleet's store did not answer within {KEY_CHECK_TIMEOUT:g} s"}[verdict]


def new_fleet_key(root: Root, force: bool) -> Path:
    """`awp fleet-key`: a new random DIR/etc/fleet.key (copy it to every node)."""
    from awp.fleet.keys import write_key

    path = root.fleet_key
    if path.exists() and not force:
        raise ConfigError("fleet key exists; every node of the fleet needs the same one, so replacing it "
                          "cuts this node off until the new key is on all of them (say --force)", path=str(path))
    write_key(path)
    log.info("fleet key written path=%s", path)
    return path


def _listener_state(root: Root) -> dict | None:
    import json

    try:
        with open(root.listener_state, "rb") as fh:
            return json.loads(fh.read(STATE_MAX))
    except (OSError, ValueError):
        return None


def _sync_listener(root: Root, config: Config, backend: Backend, plan: Plan) -> str | None:
    from awp.knockd import control

    try:
        if needs_listener(config):  # advanced doors, or simple doors with commands
            return control.ensure(root)
        if control.stop(root):
            return "stopped: advanced mode is off"
    except ListenerError:
        backend.rollback(plan)
        raise
    return None


def _holding(runner, skip: str | None = None) -> list[tuple[Backend, Plan]]:
    """The backends this host can run, other than `skip`, that hold awp state, each with the
    plan that removes it."""
    off = Config(Settings(enabled=False))
    found = []
    for name in NAMES:
        if name == skip:
            continue
        try:
            backend = select(name, runner)
            plan = backend.plan(off)
        except AwpError:
            continue
        if plan.changed:
            found.append((backend, plan))
    return found


def _remove_others(chosen: Backend, runner) -> tuple[str, ...]:
    """After a switch of backend (say, iptables-nft to nftables): the new one protects the
    ports already, so the old one's rules can go."""
    removed = []
    for backend, plan in _holding(runner, skip=chosen.name):
        try:
            backend.apply(plan)
            log.info("removed awp's state backend=%s", backend.name)
            removed.append(backend.name)
        except (ApplyError, EnvironmentProblem) as exc:
            log.warning("could not remove awp's rules from backend=%s: %s", backend.name, exc)
    return tuple(removed)


def load(root: Root, runner=None):
    """Settings and lists, checked; plus, as root, warnings about other tables that block
    or divert a protected port (those need the kernel, so a non-root `awp check` skips them)."""
    from awp.checks import Finding

    config, findings = load_and_check(root)
    if needs_listener(config):
        from awp.knockd.replay import path_problem

        problem = path_problem(root.replay_cache)
        if problem:
            raise ConfigError(f"advanced mode's replay cache: {problem}")
    _refuse_too_many_doors(config, runner)
    if config.settings.fleet:
        from awp.fleet.node import fleet_settings

        fleet_settings(root, config.settings)  # the key and credentials: ConfigError names the file
    if os.geteuid() == 0 and config.settings.enabled:
        try:
            backend = select(config.settings.backend, runner)
            advice = backend.advice(config) + _stealth_advice(config, backend)
        except AwpError as exc:
            log.debug("no coexistence check: %s", exc)
            advice = []
        findings = [*findings, *(Finding(None, text) for text in advice)]
    return config, findings


def _stealth_advice(config: Config, backend: Backend) -> list[str]:
    chosen = config.settings.stealth
    if chosen == "auto":
        return []
    seen = backend.unused_port_answer()
    if seen == chosen:
        return []
    return [f'FW_PORTKNOCK_STEALTH="{chosen}", but unused ports of this host are '
            f'{"dropped" if seen == "drop" else "answered"}: a port scan shows the knock ports apart '
            f'(use "auto" or "{seen}")']


def _refuse_too_many_doors(config: Config, runner) -> None:
    """Refuse in `awp check` what `awp -s -f` could not load in reasonable time."""
    doors = len(config.active_simple) + len(config.active_advanced)
    if not doors:
        return
    try:
        backend = select(config.settings.backend, runner)
    except AwpError:
        return  # the apply will say what is missing
    if backend.max_doors is not None and doors > backend.max_doors:
        raise ConfigError(f"{doors} doors are more than the {backend.name} backend loads in reasonable time "
                          f"(at most {backend.max_doors}; the nftables backend has no such limit)")


@contextmanager
def exclusive(lock_path: Path):
    """One apply at a time per awp root (flock on DIR/var/run/awp.lock)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ApplyError(f"another awp command holds {lock_path}; try again") from None
        yield
