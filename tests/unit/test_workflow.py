"""awp.workflow against FakeBackend: apply is atomic with the listener (a listener that cannot
start puts the kernel back), a lockout refusal touches nothing, a backend switch cleans the old
backend, remove empties every backend. No process is started and no program is run: the
backends come from the workflow's one `select`, replaced here by in-memory ones."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from fakes import FakeBackend, FakeControl, describe

from awp import lockout, workflow
from awp.backend import NAMES
from awp.backend import runner as runner_module
from awp.errors import ApplyError, ListenerError, LockoutRefused
from awp.knockd import control
from awp.lists import parse_advanced, parse_simple
from awp.model import Config, Settings
from awp.paths import Root

SIMPLE = parse_simple("22:7481,2203,9127\n", "simple")
OTHER_SIMPLE = parse_simple("80:1201,1999,1100\n", "simple")
ADVANCED = parse_advanced("2222,2000,opensecret1,closesecret1\n", "advanced")
CLIENT = ipaddress.ip_address("198.18.1.2")
SSH = "198.18.1.2 50000 198.18.1.1 22"


def config(simple=SIMPLE, advanced=(), backend="nftables", **settings) -> Config:
    return Config(Settings(enabled=True, advanced=bool(advanced), backend=backend, **settings), simple, advanced)


class Host:
    """Every backend awp knows, in memory (iptables-legacy: tools missing), and a listener."""

    def __init__(self):
        self.backends = {name: FakeBackend(name) for name in NAMES}
        self.backends["iptables-legacy"].usable = False
        self.control = FakeControl()
        self.sessions: set = set()

    def select(self, choice: str, runner=None) -> FakeBackend:
        return self.backends["nftables" if choice == "auto" else choice]

    def __getitem__(self, name: str) -> FakeBackend:
        return self.backends[name]


def _no_program(argv, stdin=None):
    raise AssertionError(f"a unit test ran {argv}")


@pytest.fixture
def host(monkeypatch) -> Host:
    h = Host()
    monkeypatch.setattr(workflow, "select", h.select)
    monkeypatch.setattr(control, "ensure", lambda root: h.control.ensure(root))
    monkeypatch.setattr(control, "stop", lambda root: h.control.stop(root))
    monkeypatch.setattr(control, "running_pid", lambda root, pidfile=None: None if pidfile else h.control.running_pid(root))
    monkeypatch.setattr(lockout, "established_sessions", lambda: h.sessions)
    monkeypatch.setattr(runner_module, "run", _no_program)
    return h


@pytest.fixture
def root(tmp_path) -> Root:
    return Root(tmp_path)


def apply(root: Root, cfg: Config, force: bool = False, ssh: str | None = None):
    return workflow.apply(root, cfg, force=force, ssh_connection=ssh)


# --- apply ----------------------------------------------------------------------------------


def test_apply_loads_the_configuration_into_the_chosen_backend(host, root):
    done = apply(root, config())
    assert host["nftables"].state == describe(config())
    assert (done.plan.backend, done.plan.changed, done.listener, done.removed_from) == ("nftables", True, None, ())


def test_a_second_apply_of_the_same_configuration_changes_nothing(host, root):
    apply(root, config())
    done = apply(root, config())
    assert done.plan.changed is False
    assert host["nftables"].history == [(), describe(config())]


def test_auto_applies_to_the_backend_select_chose(host, root):
    apply(root, config(backend="auto"))
    assert host["nftables"].state == describe(config())


def test_a_refused_load_leaves_kernel_and_listener_as_they_were(host, root):
    host["nftables"].preset(describe(config(OTHER_SIMPLE)))
    host["nftables"].fail = {"apply"}
    with pytest.raises(ApplyError):
        apply(root, config(advanced=ADVANCED))
    assert host["nftables"].state == describe(config(OTHER_SIMPLE))
    assert host.control.pid is None


# --- the listener belongs to the transaction --------------------------------------------------


def test_listener_that_cannot_start_rolls_the_backend_back(host, root):
    before = describe(config(OTHER_SIMPLE))
    host["nftables"].preset(before)
    host["iptables-nft"].preset(("simple 443 tcp 1,2,3",))
    host.control = FakeControl(start_fails=True)
    with pytest.raises(ListenerError) as info:
        apply(root, config(advanced=ADVANCED))
    assert info.value.exit_code == 7
    assert host["nftables"].history == [before, describe(config(advanced=ADVANCED)), before]
    assert host["iptables-nft"].state == ("simple 443 tcp 1,2,3",)  # no backend switch cleanup either


def test_listener_failure_on_a_fresh_kernel_leaves_nothing_installed(host, root):
    host.control = FakeControl(start_fails=True)
    with pytest.raises(ListenerError):
        apply(root, config(advanced=ADVANCED))
    assert host["nftables"].state == ()


def test_advanced_mode_starts_the_listener_then_reloads_it(host, root):
    assert apply(root, config(advanced=ADVANCED)).listener == "started (pid 4242)"
    assert apply(root, config(advanced=ADVANCED)).listener == "reloaded (pid 4242)"


def test_listener_stops_when_advanced_mode_goes_off(host, root):
    host.control.pid = 4242
    assert apply(root, config()).listener == "stopped: advanced mode is off"
    assert host.control.pid is None


# --- lockout and the lock ---------------------------------------------------------------------


def test_lockout_refusal_leaves_the_backend_untouched(host, root):
    host.sessions = {(CLIENT, 50000, 22)}
    host["iptables-nft"].preset(describe(config()))
    with pytest.raises(LockoutRefused) as info:
        apply(root, config(), ssh=SSH)
    assert info.value.exit_code == 5 and "198.18.1.2" in str(info.value)
    assert all(b.history == [b.state] for b in host.backends.values())
    assert host["iptables-nft"].state == describe(config())


def test_force_applies_despite_the_lockout_risk(host, root):
    host.sessions = {(CLIENT, 50000, 22)}
    apply(root, config(), force=True, ssh=SSH)
    assert host["nftables"].state == describe(config())


def test_a_concurrent_apply_is_refused_before_planning(host, root):
    with workflow.exclusive(root.lock):
        with pytest.raises(ApplyError) as info:
            apply(root, config())
    assert "another awp command holds" in str(info.value)
    assert host["nftables"].history == [()]


# --- a switch of backend --------------------------------------------------------------------


def test_switching_backend_removes_awps_rules_from_the_old_one(host, root):
    host["iptables-nft"].preset(describe(config(OTHER_SIMPLE)))
    done = apply(root, config())
    assert done.removed_from == ("iptables-nft",)
    assert (host["nftables"].state, host["iptables-nft"].state) == (describe(config()), ())


def test_old_backend_that_refuses_removal_is_a_warning_not_a_failure(host, root, caplog):
    caplog.set_level(logging.WARNING, logger="awp.workflow")
    host["iptables-nft"].preset(describe(config(OTHER_SIMPLE)))
    host["iptables-nft"].fail = {"apply"}
    done = apply(root, config())
    assert done.removed_from == () and host["nftables"].state == describe(config())
    assert "could not remove awp's rules from backend=iptables-nft" in caplog.text


def test_turning_awp_off_removes_its_rules_from_every_backend(host, root):
    host["nftables"].preset(describe(config()))
    host["iptables-nft"].preset(describe(config(OTHER_SIMPLE)))  # left from before a switch
    done = apply(root, Config(Settings(enabled=False, backend="nftables")))
    assert done.plan.changed and done.removed_from == ("iptables-nft",)
    assert host["nftables"].state == host["iptables-nft"].state == ()


# --- remove, dry run, status ------------------------------------------------------------------


def test_remove_empties_every_backend_that_holds_something(host, root):
    host["nftables"].preset(describe(config()))
    host["iptables-nft"].preset(describe(config(OTHER_SIMPLE)))
    host.control.pid = 4242
    assert workflow.remove(root) == ("nftables", "iptables-nft")
    assert all(b.state == () for b in host.backends.values())
    assert host.control.pid is None


def test_remove_with_nothing_installed_removes_nothing(host, root):
    assert workflow.remove(root) == ()
    assert all(len(b.history) == 1 for b in host.backends.values())


def test_dry_run_plans_and_loads_nothing(host, root):
    plan = workflow.dry_run(config())
    assert plan.changed and plan.text == "\n".join(describe(config()))
    assert host["nftables"].history == [()]


def test_status_is_what_the_backend_inspects(host, root):
    (root.base / "etc" / "firewall").mkdir(parents=True)
    root.config.write_text('FW_PORTKNOCK="yes"\nFW_PORTKNOCK_BACKEND="nftables"\n')
    root.simple_list.write_text("22:7481,2203,9127\n")
    host["nftables"].store.open(2222, CLIENT, 600)
    host.control.pid = 4242
    st = workflow.status(root)
    assert st.config.active_simple[0].port == 22 and st.listener_pid == 4242
    assert [(s.port, s.source, s.state, s.seconds_left) for s in st.inspection.sources] == [
        (2222, "198.18.1.2", "granted", 600)]
    assert (st.inspection.matches, st.inspection.differs) == (False, ("fake table",))


def test_check_refuses_more_doors_than_the_backend_loads(tmp_path, monkeypatch):
    from awp import workflow as wf
    from awp.errors import ConfigError
    from awp.paths import Root

    class Slow(FakeBackend):
        max_doors = 2

    root = tmp_path / "root"
    (root / "etc" / "firewall").mkdir(parents=True)
    (root / "etc" / "config").write_text('FW_PORTKNOCK="yes"\n')
    (root / "etc" / "firewall" / "simple-portknock-list").write_text(
        "22:7481,2203,9127\n23:7482,2204,9128\n24:7483,2205,9129\n")
    monkeypatch.setattr(wf, "select", lambda name, runner=None: Slow("iptables-nft"))
    with pytest.raises(ConfigError, match="3 doors are more than the iptables-nft backend loads"):
        wf.load(Root(root))


def test_status_names_a_backend_that_still_holds_awps_rules(host, root):
    """After a switch of FW_PORTKNOCK_BACKEND by hand, status says where a stale copy is."""
    (root.base / "etc" / "firewall").mkdir(parents=True)
    root.config.write_text('FW_PORTKNOCK="yes"\nFW_PORTKNOCK_BACKEND="nftables"\n')
    root.simple_list.write_text("22:7481,2203,9127\n")
    assert workflow.status(root).elsewhere == ()
    apply(root, config(backend="iptables-nft"))  # what a host switched by hand has
    assert workflow.status(root).elsewhere == ("iptables-nft",)
    apply(root, config(backend="nftables"))
    assert workflow.status(root).elsewhere == ()
