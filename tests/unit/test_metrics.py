"""`awp metrics`: what a Status becomes in the Prometheus text format, read back with the
official parser (prometheus_client), so the exposition is what a scraper accepts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from awp import metrics
from awp.backend import Inspection, SourceState
from awp.lists import parse_advanced, parse_simple
from awp.model import Config, Settings

SIMPLE = parse_simple("22:7481,2203,9127\n", "simple")
ADVANCED = parse_advanced("2222,2000,opensecret1,closesecret1\n2223,2001,opensecret2,closesecret2\n", "advanced")
CONFIG = Config(Settings(enabled=True, advanced=True), SIMPLE, ADVANCED)
DECISIONS = {"since": 1700000000, "unknown-port": 4,
             "doors": {"2222": {"open": 5, "close": 2, "nothing-to-close": 1, "rejected": {"bad-mac": 7, "replay": 1}},
                       "2223": {"open": 0, "close": 0, "nothing-to-close": 0, "rejected": {}}}}


@dataclass
class St:  # the fields of awp.workflow.Status that metrics read
    config: Config
    inspection: Inspection
    listener_pid: int | None = None
    supervisor_pid: int | None = None
    listener_state: dict | None = None


def inspection(**more) -> Inspection:
    sources = (SourceState(22, "198.18.0.2", "knocking 2/3", 10), SourceState(22, "198.18.0.3", "open", 20),
               SourceState(2222, "198.18.0.4", "granted", 900), SourceState(2222, "2001:2::4", "granted by admin", 50))
    return Inspection("nftables", sources, {22: (3, 40), 2222: (8, 90)}, {"progress": 0, "open": 2}, True, (), **more)


def parse(text: str) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, through prometheus_client's parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_everything_the_kernel_and_the_listener_know_parses_and_adds_up():
    st = St(CONFIG, inspection(), 4242, 4241, {"heartbeat": 1700000100, "decisions": DECISIONS,
                                               "replay_cache": {"trusted": True}})
    text = metrics.render(st, 1700000102.5, {"seconds_left": 30})
    got = parse(text)
    assert got[("awp_knocks_accepted_total", (("action", "open"), ("port", "2222")))] == 5
    assert got[("awp_knocks_accepted_total", (("action", "nothing-to-close"), ("port", "2222")))] == 1
    assert got[("awp_knocks_rejected_total", (("port", "2222"), ("reason", "bad-mac")))] == 7
    assert got[("awp_knocks_unknown_port_total", ())] == 4
    assert got[("awp_knock_counters_since_seconds", ())] == 1700000000
    assert got[("awp_door_let_in_total", (("port", "2222"),))] == 8
    assert got[("awp_door_dropped_total", (("port", "22"),))] == 40
    assert got[("awp_set_full_refusals_total", (("set", "open"),))] == 2
    assert got[("awp_grants", (("port", "2222"),))] == 2 and got[("awp_grants", (("port", "2223"),))] == 0
    assert got[("awp_grants_by_hand", (("port", "2222"),))] == 1
    assert got[("awp_sources", (("port", "22"), ("state", "knocking")))] == 1
    assert got[("awp_sources", (("port", "22"), ("state", "open")))] == 1
    assert got[("awp_listener_up", ())] == 1 and got[("awp_listener_heartbeat_age_seconds", ())] == 2.5
    assert got[("awp_listener_replay_cache_trusted", ())] == 1
    assert got[("awp_confirm_pending", ())] == 1 and got[("awp_confirm_seconds_left", ())] == 30
    assert got[("awp_info", (("backend", "nftables"), ("version", metrics.__version__)))] == 1
    assert got[("awp_doors", (("mode", "advanced"),))] == 2
    assert "awp_banned_sources" not in text  # FW_PORTKNOCK_BAN is off: no data, no metric


def test_every_family_has_help_and_type_once_and_counters_end_in_total():
    text = metrics.render(St(CONFIG, inspection(), 4242, None, {"decisions": DECISIONS}), 0.0)
    helps = [l.split()[2] for l in text.splitlines() if l.startswith("# HELP")]
    types = {l.split()[2]: l.split()[3] for l in text.splitlines() if l.startswith("# TYPE")}
    assert len(helps) == len(set(helps)) == len(types)
    for name, kind in types.items():
        assert name.startswith("awp_") and kind in ("counter", "gauge")
        assert name.endswith("_total") == (kind == "counter"), name
    for family in text_string_to_metric_families(text):
        assert family.documentation and family.type in ("counter", "gauge")


def test_a_listener_that_is_down_or_writes_no_decisions_gives_no_made_up_counts():
    got = parse(metrics.render(St(CONFIG, inspection()), 0.0))
    assert got[("awp_listener_up", ())] == 0 and got[("awp_confirm_pending", ())] == 0
    names = {name for name, _ in got}
    assert not names & {"awp_knocks_accepted_total", "awp_listener_heartbeat_age_seconds",
                        "awp_knocks_unknown_port_total"}


def test_bans_are_exported_while_the_ban_is_on():
    banning = Config(Settings(enabled=True, advanced=True, ban=True), SIMPLE, ADVANCED)
    seen = Inspection("nftables", (), {}, {}, True, (), banned=(("198.18.0.9", 100), ("198.18.0.8", 5)),
                      ban_counters={"dropped": 12, "kernel_bans": 1})
    got = parse(metrics.render(St(banning, seen), 0.0))
    assert got[("awp_banned_sources", ())] == 2 and got[("awp_ban_dropped_total", ())] == 12
    assert got[("awp_ban_kernel_bans_total", ())] == 1


@pytest.mark.parametrize("junk", [{"doors": "x"}, {"doors": {"2222": 5}}, {"doors": {"2222": {"rejected": 3}}},
                                  "not a dict", {"since": "yesterday", "unknown-port": "many"}])
def test_a_damaged_state_file_gives_fewer_metrics_not_an_error(junk):
    parse(metrics.render(St(CONFIG, inspection(), 1, None, {"decisions": junk, "heartbeat": "x"}), 0.0))


def test_label_values_are_escaped():
    out = metrics.Exposition()
    out.family("awp_x", "gauge", "x", [({"reason": 'a"b\\c\nd'}, 1)])
    [(name, labels)] = [(n, l) for n, l in parse(out.text())]
    assert dict(labels)["reason"] == 'a"b\\c\nd'


def test_write_atomically_leaves_only_the_file(tmp_path):
    target = tmp_path / "awp.prom"
    metrics.write_atomically(target, "awp_x 1\n")
    metrics.write_atomically(target, "awp_x 2\n")
    assert target.read_text() == "awp_x 2\n" and [p.name for p in tmp_path.iterdir()] == ["awp.prom"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"
