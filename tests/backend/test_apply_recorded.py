"""Backend tier: the iptables backends (IptablesBackend = two IptablesTables, IPv4 then IPv6)
with a recording runner. Nothing is run; argv and stdin are recorded and the runner answers
with scripted results, like the iptables tools would. A plan and an apply are one transaction
of both families: both are validated before either is loaded, and a failure of the second puts
the first back."""

from __future__ import annotations

import pytest
from iptables_recorder import (CONFIG, FOREIGN_V4, FOREIGN_V6, LEGACY_VERSION, NFT_VERSION, NO_NFT,
                               Recorder, desired_saved, nft)

from awp.backend import select
from awp.backend.iptables import IptablesBackend
from awp.backend.restore import parse_state, rollback_text
from awp.backend.runner import Result
from awp.compile import KernelState, compile_family, render_restore
from awp.errors import ApplyError, EnvironmentProblem
from awp.lists import parse_simple
from awp.model import Config, Settings


def run_apply(runner: Recorder, config: Config = CONFIG) -> list[int]:
    """Plan and apply on the backend `auto` picks; the families that were loaded."""
    backend = select("auto", runner)
    plan = backend.plan(config)
    backend.apply(plan)
    return [p.table.family for p in plan.steps if p.changed]


# --- variant detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "name", "tools"), [
    (NFT_VERSION, "iptables-nft", ["iptables-nft", "ip6tables-nft"]),
    (LEGACY_VERSION, "iptables-legacy", ["iptables-legacy", "ip6tables-legacy"]),
])
def test_auto_without_nft_detects_the_variant_from_iptables_version(version, name, tools):
    runner = Recorder(version=version)
    backend = select("auto", runner)
    assert backend.name == name and [t.tool for t in backend.tables] == tools
    assert runner.calls == [(["nft", "-c", "add", "table", "inet", "awp"], None), (["iptables", "-V"], None)]


def test_auto_without_the_nft_program_detects_the_variant_too():
    def runner(argv, stdin=None):
        if argv[0] == "nft":
            raise EnvironmentProblem("nft not found")
        return Result(0, LEGACY_VERSION, "")
    assert select("auto", runner).name == "iptables-legacy"


@pytest.mark.parametrize("name", ["iptables-legacy", "iptables-nft"])
def test_explicit_variant_does_not_ask(name):
    runner = Recorder()
    backend = select(name, runner)
    assert backend.name == name and [t.tool for t in backend.tables] == [f"iptables-{name[9:]}",
                                                                         f"ip6tables-{name[9:]}"]
    assert runner.calls == []


@pytest.mark.parametrize("result", [Result(0, "something else v1\n", ""), Result(127, "", "not found")])
def test_unknown_variant_is_an_environment_problem(result):
    def runner(argv, stdin=None):
        return NO_NFT if argv[0] == "nft" else result
    with pytest.raises(EnvironmentProblem) as info:
        select("auto", runner)
    assert info.value.exit_code == 6


# --- a fresh apply ---------------------------------------------------------------------------------


def test_fresh_apply_tests_every_family_before_loading_any():
    runner = nft([FOREIGN_V4], [FOREIGN_V6])
    assert run_apply(runner) == [4, 6]
    kinds = ["test" if "--test" in argv else "load" for argv, _ in runner.restores]
    assert kinds == ["test", "test", "load", "load"]
    assert [argv for argv, _ in runner.tests()] == [
        ["iptables-nft-restore", "--test", "--noflush", "--wait"],
        ["ip6tables-nft-restore", "--test", "--noflush", "--wait"]]
    assert [argv for argv, _ in runner.loads()] == [
        ["iptables-nft-restore", "--noflush", "--wait"],
        ["ip6tables-nft-restore", "--noflush", "--wait"]]
    assert [stdin for _, stdin in runner.tests()] == [stdin for _, stdin in runner.loads()]


@pytest.mark.parametrize("family", [4, 6])
def test_loaded_text_touches_only_awps_chains_and_the_hook(family):
    runner = nft([FOREIGN_V4], [FOREIGN_V6])
    run_apply(runner)
    text = runner.loads()[0 if family == 4 else 1][1]
    assert text == render_restore(compile_family(CONFIG, family), KernelState())
    for line in text.splitlines()[1:-1]:
        assert line.startswith((":AWP-", "-A AWP-")) or line == "-I INPUT 1 -j AWP-INPUT", line
    assert "f2b" not in text


def test_legacy_host_uses_legacy_tools():
    runner = Recorder(version=LEGACY_VERSION,
                      saves={"iptables-legacy-save": [FOREIGN_V4], "ip6tables-legacy-save": [FOREIGN_V6]})
    run_apply(runner)
    assert {argv[0] for argv, _ in runner.restores} == {"iptables-legacy-restore", "ip6tables-legacy-restore"}


# --- nothing to do ---------------------------------------------------------------------------------


def test_unchanged_kernel_runs_no_restore_at_all():
    runner = nft([desired_saved(4, FOREIGN_V4)], [desired_saved(6, FOREIGN_V6)])
    assert run_apply(runner) == []
    assert runner.restores == []


def test_only_the_changed_family_is_tested_and_loaded():
    runner = nft([desired_saved(4, FOREIGN_V4)], [FOREIGN_V6])
    assert run_apply(runner) == [6]
    assert [argv[0] for argv, _ in runner.restores] == ["ip6tables-nft-restore"] * 2


def test_disabled_on_a_clean_kernel_is_a_no_op():
    runner = nft([FOREIGN_V4], [FOREIGN_V6])
    assert run_apply(runner, Config(Settings(enabled=False))) == []
    assert runner.restores == []


def test_disabled_removes_what_awp_installed():
    runner = nft([desired_saved(4, FOREIGN_V4)], [desired_saved(6, FOREIGN_V6)])
    run_apply(runner, Config(Settings(enabled=False)))
    for _, text in runner.loads():
        assert "-D INPUT -j AWP-INPUT" in text and "-X AWP-INPUT" in text
        assert not any(line.startswith(("-A ", "-I ")) for line in text.splitlines())


# --- failures and rollback ----------------------------------------------------------------------

V6_LOAD_FAILS = {("ip6tables-nft-restore", "load"): Result(1, "", "ip6tables-restore v1.8.9 (nf_tables): "
                                                                     "line 42 failed\n")}


def test_ipv6_load_failure_rolls_ipv4_back_to_a_kernel_without_awp():
    after_v4 = desired_saved(4, FOREIGN_V4)
    runner = nft([FOREIGN_V4, after_v4], [FOREIGN_V6], fail=V6_LOAD_FAILS)
    with pytest.raises(ApplyError) as info:
        run_apply(runner)
    assert "IPv6" in str(info.value) and "line 42 failed" in str(info.value)
    assert info.value.exit_code == 4

    loads = runner.loads()
    assert [argv[0] for argv, _ in loads] == ["iptables-nft-restore", "ip6tables-nft-restore",
                                               "iptables-nft-restore"]
    argv, rollback = loads[-1]
    assert argv == ["iptables-nft-restore", "--noflush", "--wait"]
    assert rollback == rollback_text(FOREIGN_V4, parse_state(after_v4))
    lines = rollback.splitlines()
    assert "-D INPUT -j AWP-INPUT" in lines
    assert {line for line in lines if line.startswith("-X ")} == {
        f"-X {name}" for name in parse_state(after_v4).chains}
    assert not any(line.startswith(("-A ", "-I ")) for line in lines)
    assert "f2b" not in rollback


def test_ipv6_load_failure_restores_the_previous_awp_rules_of_ipv4():
    old = Config(Settings(enabled=True), parse_simple("80:1201,1999,1100\n", "simple"))
    before_v4 = desired_saved(4, FOREIGN_V4, old)
    after_v4 = desired_saved(4, FOREIGN_V4)
    runner = nft([before_v4, after_v4], [desired_saved(6, FOREIGN_V6, old)], fail=V6_LOAD_FAILS)
    with pytest.raises(ApplyError):
        run_apply(runner)

    rollback = runner.loads()[-1][1]
    lines = rollback.splitlines()
    old_rules = [line for line in before_v4.splitlines() if line.startswith("-A AWP-")]
    assert old_rules and [line for line in lines if line.startswith("-A ")] == old_rules
    for name in parse_state(before_v4).chains:
        assert f":{name} - [0:0]" in lines
    new_only = parse_state(after_v4).chains - parse_state(before_v4).chains
    assert {line for line in lines if line.startswith("-X ")} == {f"-X {n}" for n in new_only}
    assert not any(line.startswith(("-D ", "-I ")) for line in lines)  # hooked before and after


def test_ipv6_test_failure_loads_nothing():
    fail = {("ip6tables-nft-restore", "test"): Result(2, "", "ip6tables-restore: line 7: bad argument\n")}
    runner = nft([FOREIGN_V4], [FOREIGN_V6], fail=fail)
    with pytest.raises(ApplyError) as info:
        run_apply(runner)
    assert "IPv6" in str(info.value)
    assert runner.loads() == []


def test_ipv4_load_failure_loads_no_ipv6_and_needs_no_rollback():
    fail = {("iptables-nft-restore", "load"): Result(4, "", "iptables-restore: unable to initialize table\n")}
    runner = nft([FOREIGN_V4], [FOREIGN_V6], fail=fail)
    with pytest.raises(ApplyError) as info:
        run_apply(runner)
    assert "IPv4" in str(info.value)
    assert [argv[0] for argv, _ in runner.loads()] == ["iptables-nft-restore"]


def test_save_failure_is_an_apply_error_before_any_restore():
    def runner(argv, stdin=None):
        return Result(1, "", "iptables-nft-save: cannot open table\n") if argv[0].endswith("-save") else \
            Result(0, NFT_VERSION, "")
    with pytest.raises(ApplyError):
        IptablesBackend("nft", runner).plan(CONFIG)


def test_rollback_of_an_applied_plan_puts_both_families_back():
    """What the workflow does when the listener cannot start after a successful apply."""
    after = {4: desired_saved(4, FOREIGN_V4), 6: desired_saved(6, FOREIGN_V6)}
    runner = nft([FOREIGN_V4, after[4]], [FOREIGN_V6, after[6]])
    backend = IptablesBackend("nft", runner)
    plan = backend.plan(CONFIG)
    backend.apply(plan)
    del runner.calls[:]
    backend.rollback(plan)
    loads = runner.loads()
    assert [argv[0] for argv, _ in loads] == ["ip6tables-nft-restore", "iptables-nft-restore"]
    assert loads[1][1] == rollback_text(FOREIGN_V4, parse_state(after[4]))
    assert loads[0][1] == rollback_text(FOREIGN_V6, parse_state(after[6]))
    assert runner.tests() == [] and not any("f2b" in text for _, text in loads)


def test_rollback_of_an_unchanged_plan_runs_nothing():
    runner = nft([desired_saved(4, FOREIGN_V4)], [desired_saved(6, FOREIGN_V6)])
    backend = IptablesBackend("nft", runner)
    backend.rollback(backend.plan(CONFIG))
    assert runner.restores == []


def test_failed_rollback_is_logged_and_the_first_error_is_raised(caplog):
    v4_loads = [Result(0, "", ""), Result(1, "", "iptables-restore: line 3 failed\n")]  # load, rollback
    runner = nft([FOREIGN_V4, desired_saved(4, FOREIGN_V4)], [FOREIGN_V6],
                 fail={**V6_LOAD_FAILS, ("iptables-nft-restore", "load"): v4_loads})
    with pytest.raises(ApplyError) as info:
        run_apply(runner)
    assert "IPv6" in str(info.value) and "line 42 failed" in str(info.value)
    assert "rollback failed family=ipv4" in caplog.text


def test_rollback_deletes_the_nft_filter_table_its_own_load_created():
    empty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    runner = nft(["", desired_saved(4, empty), empty], [FOREIGN_V6], fail=V6_LOAD_FAILS)
    with pytest.raises(ApplyError):
        run_apply(runner)
    assert (["nft", "delete", "table", "ip", "filter"], None) in runner.calls
    assert not any(argv[-1] == "ip6" for argv, _ in runner.calls if argv[0] == "nft")


def test_rollback_on_a_host_without_the_nft_program_still_reports_the_load_error(caplog):
    """iptables-nft hosts need not have nft installed: the empty filter table then stays."""
    empty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    recorder = nft(["", desired_saved(4, empty), empty], [FOREIGN_V6], fail=V6_LOAD_FAILS)

    def runner(argv, stdin=None):
        if argv[0] == "nft" and argv[1] != "list":
            raise EnvironmentProblem("nft not found")
        return recorder(argv, stdin)
    with pytest.raises(ApplyError) as info:
        run_apply(runner)
    assert "IPv6" in str(info.value) and "line 42 failed" in str(info.value)
    assert "could not delete the empty ip filter table" in caplog.text
    assert len(recorder.loads()) == 3  # IPv4, IPv6 (refused), IPv4 rollback


# --- IPv6 off, dry-run text ----------------------------------------------------------------------

NO_IP6TABLES = Result(1, "", "ip6tables-nft-save: Failed to initialize nft: Protocol not supported\n")


def test_ipv6_off_tolerates_a_host_without_ip6tables():
    runner = nft([FOREIGN_V4], [NO_IP6TABLES])
    config = Config(Settings(enabled=True, ipv6=False), CONFIG.simple)
    assert run_apply(runner, config) == [4]
    assert {argv[0] for argv, _ in runner.restores} == {"iptables-nft-restore"}


def test_ipv6_on_needs_ip6tables():
    runner = nft([FOREIGN_V4], [NO_IP6TABLES])
    with pytest.raises(ApplyError) as info:
        run_apply(runner)
    assert "ip6tables-nft-save" in str(info.value) and info.value.exit_code == 4
    assert runner.restores == []


def test_plan_text_is_each_changed_table_under_its_tool():
    runner = nft([desired_saved(4, FOREIGN_V4)], [FOREIGN_V6])
    plan = IptablesBackend("nft", runner).plan(CONFIG)
    v6 = render_restore(compile_family(CONFIG, 6), KernelState())
    assert plan.backend == "iptables-nft" and plan.changed
    assert plan.text.startswith("# iptables-nft-restore --noflush (no change)\n")
    assert plan.text.endswith(f"# ip6tables-nft-restore --noflush\n{v6}")
