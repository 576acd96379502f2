"""Backend tier: what NftablesBackend reads back from the kernel, on real nft 1.0.6 output
(nft_samples/, captured in a throwaway namespace from the golden case `advanced` with a few
elements added): the table's definition and digest, set and map elements with the time the
kernel says is left, counters; then status (inspect) and grants through a recording runner."""

from __future__ import annotations

import ipaddress
import json

import pytest
from nft_recorder import JSON_WARNING, OK, FakeNft, golden_config, sample, table_doc

from awp.backend import SourceState
from awp.backend import libnft
from awp.backend.nftables import NftablesBackend, parse_elements, parse_table
from awp.backend.runner import Result
from awp.compile.nftables import compile_nft
from awp.errors import EnvironmentProblem

CONFIG = golden_config("advanced")


def real(name: str) -> dict:
    return json.loads(sample(name))


# --- the table ------------------------------------------------------------------------------


def test_parse_table_of_real_output_is_what_the_compiler_made():
    desired = compile_nft(CONFIG)
    state = parse_table(real("advanced-table.json"))
    assert state.exists and state.digest == desired.digest
    assert state.chains == {c.name for c in desired.chains}
    assert state.sets == {s.name: (s.key, s.data, s.size) for s in desired.sets}
    assert state.counters == set(desired.counters)


def test_the_recorder_prints_what_nft_prints():
    """nft_recorder.table_doc is only as good as its likeness to the real thing."""
    made, got = table_doc(compile_nft(CONFIG))["nftables"], real("advanced-table.json")["nftables"]
    assert parse_table({"nftables": made}) == parse_table({"nftables": got})
    kinds = [next(iter(item)) for item in got]
    assert [next(iter(item)) for item in made] == kinds
    for mine, theirs in zip(made, got):
        kind = next(iter(theirs))
        if kind != "rule":  # nft prints rules' expressions as JSON; the recorder leaves them as text
            assert {**mine[kind], "handle": 0} == {**theirs[kind], "handle": 0}, kind


def test_plan_on_the_real_listing_of_the_same_configuration_is_a_no_op():
    def runner(argv, stdin=None):
        if argv == ["nft", "-j", "-t", "list", "table", "inet", "awp"]:
            return Result(0, sample("advanced-table.json"), JSON_WARNING)
        if argv == ["nft", "-t", "list", "table", "inet", "awp"]:
            return Result(0, sample("advanced-table.nft"), "")
        assert argv == ["nft", "-c", "add", "table", "inet", "awp"], argv
        return OK
    plan = NftablesBackend(runner).plan(CONFIG)
    assert (plan.changed, plan.text) == (False, "")


# --- elements and counters ------------------------------------------------------------------


def test_parse_elements_of_a_real_map():
    assert parse_elements(real("map-progress4.json")) == [
        {"key": "198.18.0.2", "value": 0x00160000, "expires": 12}]


@pytest.mark.parametrize(("name", "key", "expires"), [
    ("set-grant6.json", ("2001:2::7", 2222), 597), ("set-open4.json", ("198.18.0.3", 22), 27)])
def test_parse_elements_of_a_real_concatenation(name, key, expires):
    assert parse_elements(real(name)) == [{"key": key, "value": None, "expires": expires}]


def test_parse_elements_of_a_real_empty_set():
    assert parse_elements(real("set-scan4-empty.json")) == []


# Real nft 1.0.6 output for elements added without a timeout (by hand): nft prints them bare.
NO_TIMEOUT_SET = {"nftables": [{"set": {"family": "inet", "name": "grant4", "table": "awp", "type": [
    "ipv4_addr", "inet_service"], "handle": 4, "size": 131072, "flags": ["timeout"], "elem": [
    {"elem": {"val": {"concat": ["198.18.0.4", 2222]}, "timeout": 900, "expires": 880}},
    {"concat": ["198.18.0.9", 2222]}]}}]}
NO_TIMEOUT_MAP = {"nftables": [{"map": {"family": "inet", "name": "progress4", "table": "awp", "type": "ipv4_addr",
                                        "handle": 1, "map": "mark", "size": 131072, "flags": ["timeout"],
                                        "elem": [["198.18.0.9", 1441793]]}}]}


def test_parse_elements_without_a_timeout():
    assert parse_elements(NO_TIMEOUT_SET) == [{"key": ("198.18.0.4", 2222), "value": None, "expires": 880},
                                              {"key": ("198.18.0.9", 2222), "value": None, "expires": 0}]
    assert parse_elements(NO_TIMEOUT_MAP) == [{"key": "198.18.0.9", "value": 1441793, "expires": 0}]


def test_counters_of_real_output():
    backend = NftablesBackend(lambda argv, stdin=None: Result(0, sample("counters.json"), ""))
    assert backend.counters() == {name: 0 for name in compile_nft(CONFIG).counters}


# --- status ---------------------------------------------------------------------------------


def test_inspect_reports_what_the_kernel_holds_with_its_time_left():
    elements = {"progress4": [("198.18.0.2", 0x00160000, 15, 14)], "pos2_4": [("198.18.0.2", None, 15, 13)],
                "progress6": [("2001:2::5", 0x00500000, 15, 9)], "pos1_6": [("2001:2::5", None, 15, 9)],
                "open6": [(("2001:2::3", 22), None, 30, 21)], "grant4": [(("198.18.0.4", 2222), None, 900, 898)]}
    packets = {"in_22": 3, "drop_22": 40, "in_2222": 1, "drop_2222": 7, "refused_progress": 2}
    seen = NftablesBackend(FakeNft(compile_nft(CONFIG), elements=elements, packets=packets)).inspect(CONFIG)
    assert seen.backend == "nftables"
    assert seen.sources == (SourceState(22, "198.18.0.2", "knocking 2/4", 13), SourceState(22, "2001:2::3", "open", 21),
                            SourceState(2222, "198.18.0.4", "granted", 898))  # port 80: not a door here
    assert seen.counters == {22: (3, 40), 2222: (1, 7)}
    assert seen.refused == {"progress": 2, "open": 0}
    assert (seen.matches, seen.differs) == (True, ())


def test_inspect_says_when_the_kernel_differs():
    seen = NftablesBackend(FakeNft()).inspect(CONFIG)
    assert (seen.sources, seen.matches, seen.differs) == ((), False, ("inet awp table",))


# --- grants through the nft program (libnftables absent) ------------------------------------


@pytest.fixture
def no_libnftables(monkeypatch):
    monkeypatch.setattr(libnft.Nft, "available", staticmethod(lambda: False))


V4, V6 = ipaddress.ip_address("198.18.0.4"), ipaddress.ip_address("2001:2::7")


@pytest.mark.parametrize(("src", "name"), [(V4, "grant4"), (V6, "grant6")])
def test_open_sets_the_grant_with_exactly_its_ttl(no_libnftables, src, name):
    nft = FakeNft(compile_nft(CONFIG))
    NftablesBackend(nft).grants(CONFIG).open(2222, src, 900)
    elem = f"inet awp {name} {{ {src} . 2222 }}"
    assert nft.scripts == [f"add element {elem}\ndelete element {elem}\n"
                           f"add element inet awp {name} {{ {src} . 2222 timeout 900s }}\n"]


def test_open_without_the_table_is_an_environment_problem(no_libnftables):
    nft = FakeNft(load=Result(1, "", "Error: No such file or directory\n"))
    with pytest.raises(EnvironmentProblem) as info:
        NftablesBackend(nft).grants(CONFIG).open(2222, V4, 900)
    assert "port 2222" in str(info.value) and "awp -s -f" in str(info.value)


@pytest.mark.parametrize(("present", "closed"), [(True, True), (False, False)])
def test_close_deletes_only_an_existing_grant(no_libnftables, present, closed):
    nft = FakeNft(compile_nft(CONFIG), load=lambda script: OK if present or not script.startswith("get") else
                  Result(1, "", "Error: Could not process rule: No such file or directory\n"))
    assert NftablesBackend(nft).grants(CONFIG).close(2222, V4) is closed
    elem = "inet awp grant4 { 198.18.0.4 . 2222 }"
    assert nft.scripts == [f"get element {elem}", f"delete element {elem}"][:2 if present else 1]


def test_list_is_every_grant_with_the_time_the_kernel_says_is_left(no_libnftables):
    elements = {"grant4": [(("198.18.0.4", 2222), None, 900, 898)], "grant6": [(("2001:2::7", 2222), None, 600, 5)]}
    grants = NftablesBackend(FakeNft(compile_nft(CONFIG), elements=elements)).grants(CONFIG)
    assert grants.list() == [(2222, "198.18.0.4", 898), (2222, "2001:2::7", 5)]
