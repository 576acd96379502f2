"""Backend tier: NftablesBackend with a recording runner that answers like nft 1.0.6
(nft_recorder.FakeNft). One `nft -f -` per apply, nothing when nothing changed; a re-apply
flushes the table and keeps the sets; a size change moves the elements with the time they
had left; off deletes the table; a refused load runs nothing more; rollback."""

from __future__ import annotations

import dataclasses

import pytest
from nft_recorder import NO_NF_TABLES, FakeNft, golden_config, sample

from awp.backend import select
from awp.backend.nftables import NftablesBackend, TableState, render_transaction
from awp.backend.runner import Result
from awp.compile.nftables import compile_nft
from awp.errors import ApplyError, EnvironmentProblem
from awp.lists import parse_simple
from awp.model import Config, Settings

CONFIG = golden_config("advanced")  # the configuration nft_samples/ was captured from
FEWER_KNOCKS = dataclasses.replace(CONFIG, simple=parse_simple("22:7481,2203,9127\n", "simple"))
MORE_DOORS = dataclasses.replace(CONFIG, simple=parse_simple("22:7481,2203,9127,4410\n80:1201,1999,1100\n", "s"))
OFF = Config(Settings(enabled=False))
NFT_F = ["nft", "-f", "-"]
REFUSED = Result(1, "", "/dev/stdin:40:1-3: Error: Could not process rule: No such file or directory\n"
                        "add rule inet awp knock_udp udp length 72-73 log group 4748 snaplen 256 drop\n^^^\n")


def sized(config: Config, size: int) -> Config:
    return dataclasses.replace(config, settings=dataclasses.replace(config.settings, set_size=size))


def plan_apply(nft: FakeNft, config: Config = CONFIG):
    backend = NftablesBackend(nft)
    plan = backend.plan(config)
    backend.apply(plan)
    return plan


def writes(nft: FakeNft) -> list[list[str]]:
    """Every call that is not a read (`nft list ...`, `nft -j ... list ...`) or the check-mode
    probe (`nft -c ...`, which the kernel validates and never applies)."""
    return [argv for argv, _ in nft.calls if "list" not in argv and "-c" not in argv]


# --- apply ----------------------------------------------------------------------------------


def test_first_apply_is_one_nft_f_that_creates_the_table():
    nft = FakeNft()
    plan = plan_apply(nft)
    assert writes(nft) == [NFT_F]
    assert nft.scripts == [plan.text] == [render_transaction(compile_nft(CONFIG), TableState(), {})]
    assert plan.text.splitlines()[:2] == ["add table inet awp", "flush table inet awp"]
    assert not [line for line in plan.text.splitlines() if line.startswith(("delete", "add element"))]


def test_reapply_of_the_same_configuration_runs_no_nft_f():
    nft = FakeNft(compile_nft(CONFIG))
    plan = plan_apply(nft)
    assert (plan.changed, plan.text) == (False, "")
    assert writes(nft) == []


def test_changed_configuration_flushes_the_table_and_keeps_the_sets():
    grant = {"grant4": [(("198.18.0.4", 2222), None, 900, 898)]}
    nft = FakeNft(compile_nft(CONFIG), elements=grant)
    plan_apply(nft, FEWER_KNOCKS)
    assert writes(nft) == [NFT_F]
    lines = nft.scripts[0].splitlines()
    assert "flush table inet awp" in lines
    assert not [line for line in lines if line.startswith(("delete set", "delete map", "delete table", "flush set"))]
    gone = [line.split()[-1] for line in lines if line.startswith("delete chain")]
    assert gone and all(name.startswith(("advance_", "at_", "last_")) for name in gone)  # per position only
    assert not any(line.startswith("add element") for line in lines)
    assert not any(argv[3] in ("set", "map") for argv, _ in nft.calls if argv[:3] == ["nft", "-j", "list"])


ELEMENTS = {
    "grant4": [(("198.18.0.4", 2222), None, 900, 898)],
    "progress4": [("198.18.0.2", 0x00160002, 15, 13)],
    "open6": [(("2001:2::3", 22), None, 30, 0)],  # about to expire: kept for one second
}


def test_set_size_change_recreates_the_sets_and_moves_elements_with_their_time_left():
    nft = FakeNft(compile_nft(CONFIG), elements=ELEMENTS)
    plan_apply(nft, sized(CONFIG, 4096))
    assert writes(nft) == [NFT_F]
    lines = nft.scripts[0].splitlines()
    for s in compile_nft(CONFIG).sets:
        kind = "map" if s.data else "set"
        deleted = lines.index(f"delete {kind} inet awp {s.name}")
        created = next(i for i, line in enumerate(lines) if line.startswith(f"add {kind} inet awp {s.name} "))
        assert deleted < created and "size 4096;" in lines[created]
    moved = [line for line in lines if line.startswith("add element")]
    assert moved == ["add element inet awp grant4 { 198.18.0.4 . 2222 timeout 898s }",
                     "add element inet awp open6 { 2001:2::3 . 22 timeout 1s }",
                     "add element inet awp progress4 { 198.18.0.2 timeout 13s : 0x00160002 }"]
    assert lines.index(moved[0]) > max(i for i, line in enumerate(lines) if line.startswith(("add set", "add map")))
    assert "delete table inet awp" not in lines


def test_disabling_deletes_the_table():
    nft = FakeNft(compile_nft(CONFIG))
    plan_apply(nft, OFF)
    assert nft.scripts == ["delete table inet awp\n"]


def test_disabled_on_a_host_without_the_table_is_a_no_op():
    nft = FakeNft()
    assert plan_apply(nft, OFF).changed is False
    assert writes(nft) == []


@pytest.mark.parametrize("table", [None, compile_nft(CONFIG)], ids=["absent", "present"])
def test_refused_load_is_an_apply_error_and_nothing_else_runs(table):
    nft = FakeNft(table, load=REFUSED)
    backend = NftablesBackend(nft)
    plan = backend.plan(MORE_DOORS)
    planned = len(nft.calls)
    with pytest.raises(ApplyError) as info:
        backend.apply(plan)
    assert info.value.exit_code == 4
    assert "Could not process rule" in str(info.value) and "unchanged" in str(info.value)
    assert [argv for argv, _ in nft.calls[planned:]] == [NFT_F]


# --- the backend setting --------------------------------------------------------------------


def _nft_missing(argv, stdin=None):
    raise EnvironmentProblem(f"{argv[0]} not found")


@pytest.mark.parametrize("runner", [FakeNft(usable=False), _nft_missing], ids=["no-nf_tables", "no-nft"])
def test_nftables_chosen_where_nft_fails_names_the_setting(runner):
    backend = select("nftables", runner)
    assert isinstance(backend, NftablesBackend)
    with pytest.raises(EnvironmentProblem) as info:
        backend.plan(CONFIG)
    assert info.value.exit_code == 6
    assert 'FW_PORTKNOCK_BACKEND="nftables"' in str(info.value) and "nf_tables" in str(info.value)


def test_auto_picks_nftables_where_nft_works():
    nft = FakeNft()
    assert select("auto", nft).name == "nftables"
    assert [argv for argv, _ in nft.calls] == [["nft", "-c", "add", "table", "inet", "awp"]]


def test_listing_error_other_than_a_missing_table_is_an_apply_error():
    def runner(argv, stdin=None):
        return Result(0, "", "") if "-c" in argv else NO_NF_TABLES
    with pytest.raises(ApplyError) as info:
        NftablesBackend(runner).plan(CONFIG)
    assert "Operation not supported" in str(info.value)


# --- rollback -------------------------------------------------------------------------------


def test_rollback_of_a_plan_made_on_an_absent_table_deletes_the_table():
    nft = FakeNft()
    backend = NftablesBackend(nft)
    plan = backend.plan(CONFIG)
    backend.apply(plan)
    nft.table = compile_nft(CONFIG)  # what that load put there
    backend.rollback(plan)
    assert nft.scripts == [plan.text, "delete table inet awp\n"]


def test_rollback_when_the_new_table_is_already_gone_loads_nothing():
    nft = FakeNft()
    backend = NftablesBackend(nft)
    plan = backend.plan(CONFIG)
    backend.apply(plan)
    backend.rollback(plan)
    assert nft.scripts == [plan.text]


SIMPLE_ONLY = dataclasses.replace(CONFIG, advanced=())


def test_rollback_of_a_reapply_loads_the_previous_table_back():
    """Applying the advanced door adds a chain; the rollback deletes it and loads the listing
    taken before (its sets are not in it: they and their elements stay)."""
    nft = FakeNft(compile_nft(SIMPLE_ONLY), listing=sample("advanced-table.nft"))
    backend = NftablesBackend(nft)
    plan = backend.plan(CONFIG)
    backend.apply(plan)
    nft.table = compile_nft(CONFIG)
    backend.rollback(plan)
    new = sorted({c.name for c in compile_nft(CONFIG).chains} - {c.name for c in compile_nft(SIMPLE_ONLY).chains})
    counters = sorted(set(compile_nft(CONFIG).counters) - set(compile_nft(SIMPLE_ONLY).counters))
    assert new and nft.scripts[-1] == ("add table inet awp\nflush table inet awp\n"
                                       + "".join(f"delete chain inet awp {name}\n" for name in new)
                                       + "".join(f"delete counter inet awp {name}\n" for name in counters)
                                       + sample("advanced-table.nft"))


def test_rollback_of_an_unchanged_plan_runs_nothing():
    nft = FakeNft(compile_nft(CONFIG))
    backend = NftablesBackend(nft)
    backend.rollback(backend.plan(CONFIG))
    assert writes(nft) == []
