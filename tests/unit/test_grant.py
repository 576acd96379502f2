"""awp grant / awp revoke against the in-memory grant store: what is validated, what reaches
the store, the one log line, and how status tells a hand grant from a knock's."""

from __future__ import annotations

import ipaddress
import json
import logging

import pytest
from fakes import FakeBackend, FakeGrants

from awp import grant
from awp.backend import SourceState
from awp.errors import EnvironmentProblem, UsageError
from awp.lists import parse_advanced, parse_simple
from awp.model import Config, Settings
from awp.paths import Root

SIMPLE = parse_simple("22:7481,2203,9127\n", "simple")
ADVANCED = parse_advanced("2222,2000,opensecret1,closesecret1\n", "advanced")


class FixedGrants(FakeGrants):
    ttl_per_grant = False


@pytest.fixture
def world(monkeypatch, tmp_path):
    backend = FakeBackend("nftables")
    backend.store.ttl_per_grant = True
    state = {"config": Config(Settings(enabled=True, advanced=True, autoclose=600), SIMPLE, ADVANCED)}
    monkeypatch.setattr(grant, "load_config", lambda root: state["config"])
    monkeypatch.setattr(grant, "select", lambda choice, runner=None: backend)
    (tmp_path / "var" / "log").mkdir(parents=True)
    return backend, state, Root(tmp_path)


def test_grant_opens_the_door_for_autoclose_by_default_and_logs_one_line(world, caplog):
    backend, _, root = world
    with caplog.at_level(logging.INFO, logger="awp.grant"):
        done = grant.grant(root, "198.18.1.2", "2222", None, "alice")
    assert backend.store.calls == [("open", 2222, ipaddress.ip_address("198.18.1.2"), 600)]
    assert done == grant.Granted(2222, "198.18.1.2", 600, done.note)
    assert "differ" in done.note  # the fake kernel holds nothing: the door is not there
    lines = [r.getMessage() for r in caplog.records if r.name == "awp.grant"]
    assert lines == ["awp grant by=admin user=alice src=198.18.1.2 port=2222 expires_in=600s"]
    assert lines[0] in root.listener_log.read_text()


def test_grant_for_seconds_and_ipv6(world):
    backend, _, root = world
    grant.grant(root, "2001:2::5", "2222", "30", "alice")
    assert backend.store.calls == [("open", 2222, ipaddress.ip_address("2001:2::5"), 30)]


@pytest.mark.parametrize("address", ["198.18.1", "198.18.1.2/32", " 198.18.1.2", "0.0.0.0", "::", "224.0.0.1",
                                     "255.255.255.255", "::ffff:198.18.1.2", "host.example", "fe80::1%eth0",
                                     "１98.18.1.2"])
def test_bad_addresses_are_refused_before_the_kernel(world, address):
    backend, _, root = world
    with pytest.raises(UsageError):
        grant.grant(root, address, "2222", None, "alice")
    assert backend.store.calls == []


@pytest.mark.parametrize("port,why", [("22", "simple door"), ("2000", "no advanced door"), ("80", "no advanced door"),
                                      ("0", "1 to 65535"), ("70000", "1 to 65535"), ("+2222", "1 to 65535"),
                                      ("2_222", "1 to 65535")])
def test_a_port_that_is_no_advanced_door_is_refused(world, port, why):
    backend, _, root = world
    with pytest.raises(UsageError, match=why):
        grant.grant(root, "198.18.1.2", port, None, "alice")
    with pytest.raises(UsageError, match=why):
        grant.revoke(root, "198.18.1.2", port, "alice")
    assert backend.store.calls == []


@pytest.mark.parametrize("seconds", ["0", "601", "-5", "1.5", "10s", "٣"])
def test_for_must_be_whole_seconds_up_to_autoclose(world, seconds):
    backend, _, root = world
    with pytest.raises(UsageError, match="--for"):
        grant.grant(root, "198.18.1.2", "2222", seconds, "alice")
    assert backend.store.calls == []


def test_for_is_refused_where_the_backend_has_one_lifetime_per_door(world):
    backend, _, root = world
    backend.store = FixedGrants()
    with pytest.raises(EnvironmentProblem, match="nftables"):
        grant.grant(root, "198.18.1.2", "2222", "30", "alice")
    assert backend.store.calls == []
    grant.grant(root, "198.18.1.2", "2222", "600", "alice")  # the door's own lifetime is fine
    assert backend.store.calls == [("open", 2222, ipaddress.ip_address("198.18.1.2"), 600)]


def test_ipv6_is_refused_when_ipv6_is_off(world):
    backend, state, root = world
    state["config"] = Config(Settings(enabled=True, advanced=True, ipv6=False), (), ADVANCED)
    with pytest.raises(UsageError, match="IPv6"):
        grant.grant(root, "2001:2::5", "2222", None, "alice")


def test_no_door_when_advanced_mode_is_off(world):
    _, state, root = world
    state["config"] = Config(Settings(enabled=True, advanced=False), SIMPLE, ADVANCED)
    with pytest.raises(UsageError, match="no advanced door is active"):
        grant.grant(root, "198.18.1.2", "2222", None, "alice")


def test_revoke_closes_and_a_second_revoke_is_a_no_op(world, caplog):
    backend, _, root = world
    grant.grant(root, "198.18.1.2", "2222", None, "alice")
    with caplog.at_level(logging.INFO, logger="awp.grant"):
        assert grant.revoke(root, "198.18.1.2", "2222", "bob") is True
        assert grant.revoke(root, "198.18.1.2", "2222", "bob") is False
    assert backend.store.held == {}
    assert [r.getMessage() for r in caplog.records if r.name == "awp.grant"] == [
        "awp revoke by=admin user=bob src=198.18.1.2 port=2222 result=revoked",
        "awp revoke by=admin user=bob src=198.18.1.2 port=2222 result=none"]


def test_status_labels_a_hand_grant_until_a_knock_refreshes_it(world):
    _, _, root = world
    grant.grant(root, "198.18.1.2", "2222", "100", "alice")
    found = grant.records(root)
    now = found["2222 198.18.1.2"]["until"] - 100
    kernel = (SourceState(2222, "198.18.1.2", "granted", 99), SourceState(2222, "198.18.1.3", "granted", 50))
    labelled = grant.label_hand_grants(kernel, found, now)
    assert [s.state for s in labelled] == ["granted by admin", "granted"]
    knocked = (SourceState(2222, "198.18.1.2", "granted", 600),)  # a knock after the hand grant
    assert grant.label_hand_grants(knocked, found, now)[0].state == "granted"
    assert oct((root.base / "var" / "lib" / "awp" / "grants-by-hand").stat().st_mode & 0o777) == "0o600"


def test_revoke_forgets_the_record_and_a_corrupt_record_is_ignored(world):
    _, _, root = world
    grant.grant(root, "198.18.1.2", "2222", None, "alice")
    grant.revoke(root, "198.18.1.2", "2222", "alice")
    assert grant.records(root) == {}
    (root.base / "var" / "lib" / "awp" / "grants-by-hand").write_text("{not json")
    assert grant.records(root) == {}
    grant.grant(root, "198.18.1.3", "2222", None, "alice")
    assert list(json.loads((root.base / "var" / "lib" / "awp" / "grants-by-hand").read_text())) == ["2222 198.18.1.3"]


def test_status_json_keeps_state_granted_and_says_by_whom():
    from awp.status_json import _state

    assert _state("granted by admin") == "granted" and _state("knocking 2/3") == "knocking"


def test_no_warning_when_the_kernel_holds_the_configuration(world):
    from fakes import describe

    backend, state, root = world
    backend.preset(describe(state["config"]))
    assert grant.grant(root, "198.18.1.2", "2222", None, "alice").note is None
