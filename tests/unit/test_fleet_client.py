"""Fleet mode without Redis: signed messages, the key and credential files, the settings, and
the listener's fleet client against an in-memory stand-in for the store (a real Redis in
namespaces: tests/netns/test_fleet.py)."""

from __future__ import annotations

import ipaddress
import logging
import os
import time

import pytest
import redis
from fakes import FakeGrants
from test_listener import CONFIG, CLOSE, NOW, OPEN, SRC, knock, packet, replay_cache

from awp.errors import ConfigError
from awp.fleet import keys
from awp.fleet.message import BadMessage, GrantMessage, verify
from awp.fleet.node import Fleet, FleetSettings
from awp.knockd.events import Decision
from awp.knockd.listener import Listener
from awp.settings import parse_settings

KEY = bytes(range(32))


# --- messages --------------------------------------------------------------------------------


def msg(**kw) -> GrantMessage:
    base = dict(id="00112233445566ff", node="b", action="open", port=2222, src="198.18.1.2",
                expires=int(NOW) + 600, sent=int(NOW * 1000))
    return GrantMessage(**{**base, **kw})


def test_a_signed_message_verifies_and_round_trips():
    m = msg()
    assert verify(KEY, m.sign(KEY)) == m
    assert verify(KEY, m.sign(KEY).encode()) == m


@pytest.mark.parametrize("old,new", [(" open ", " close "), (" 2222 ", " 2223 "), ("198.18.1.2", "198.18.1.3"),
                                     (f" {int(NOW) + 600} ", f" {int(NOW) + 6000} "), (" b ", " c ")])
def test_an_altered_field_does_not_verify(old, new):
    line = msg().sign(KEY)
    with pytest.raises(BadMessage, match="bad-mac"):
        verify(KEY, line.replace(old, new, 1))


def test_another_key_does_not_verify_and_junk_is_malformed():
    with pytest.raises(BadMessage, match="bad-mac"):
        verify(bytes(32), msg().sign(KEY))
    for junk in ("", "awp1", msg().sign(KEY) + " ", "x" * 1000, b"\xff"):
        with pytest.raises(BadMessage):
            verify(KEY, junk)


def test_a_non_canonical_address_is_malformed_even_with_a_good_mac():
    with pytest.raises(BadMessage, match="malformed"):
        verify(KEY, msg(src="198.018.1.2").sign(KEY))


# --- key and credential files ------------------------------------------------------------------


def test_fleet_key_written_is_private_and_loads(tmp_path):
    path = tmp_path / "etc" / "fleet.key"
    keys.write_key(path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert len(keys.load_key(path)) == 32
    first = path.read_text()
    keys.write_key(path)
    assert path.read_text() != first


@pytest.mark.skipif(os.geteuid() != 0, reason="the key must be root-owned: the check needs root to pass")
def test_fleet_key_problems_name_the_file_and_the_fix(tmp_path):
    path = tmp_path / "fleet.key"
    with pytest.raises(ConfigError, match=rf"{path}: fleet key does not exist.*awp fleet-key"):
        keys.load_key(path)
    keys.write_key(path)
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match=rf"{path}: fleet key has mode 0640.*chmod 600"):
        keys.load_key(path)
    os.chmod(path, 0o600)
    path.write_text("not a key\n")
    with pytest.raises(ConfigError, match="64 lowercase hex digits") as exc:
        keys.load_key(path)
    assert "not a key" not in str(exc.value)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(ConfigError, match="symbolic link"):
        keys.load_key(link)
    os.chown(path, 1000, 0)
    with pytest.raises(ConfigError, match="owned by uid 1000"):
        keys.load_key(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="the file must be root-owned")
def test_credentials_file_parses_and_never_echoes_a_bad_line(tmp_path):
    path = tmp_path / "fleet.auth"
    assert keys.load_credentials(path) == keys.Credentials()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"# awp's Redis ACL user\nuser = awp\npassword = s3cr3t-pw\n")
    os.close(fd)
    creds = keys.load_credentials(path)
    assert (creds.user, creds.password) == ("awp", "s3cr3t-pw")
    assert "s3cr3t" not in repr(creds)
    path.write_text("hunter2 is the password\n")
    with pytest.raises(ConfigError, match=":1: expected") as exc:
        keys.load_credentials(path)
    assert "hunter2" not in str(exc.value)


# --- settings --------------------------------------------------------------------------------


def test_fleet_settings_default_off_and_accept_redis_urls():
    s = parse_settings("", "cfg")
    assert (s.fleet, s.node, s.fleet_required) == ("", "", False)
    s = parse_settings('FW_PORTKNOCK_FLEET="rediss://[2001:2::9]:6380/3"\nFW_PORTKNOCK_NODE="node-a.1"\n'
                       'FW_PORTKNOCK_FLEET_REQUIRED="yes"\n', "cfg")
    assert (s.fleet, s.node, s.fleet_required) == ("rediss://[2001:2::9]:6380/3", "node-a.1", True)


@pytest.mark.parametrize("line,reason", [
    ('FW_PORTKNOCK_FLEET="redis://awp:pw@198.18.0.9"', "must not hold a user or password"),
    ('FW_PORTKNOCK_FLEET="http://198.18.0.9"', "must be redis://HOST"),
    ('FW_PORTKNOCK_FLEET="redis://198.18.0.9:0"', "out of range"),
    ('FW_PORTKNOCK_NODE="a b"', "must be 1-64 letters"),
])
def test_bad_fleet_settings_are_refused_without_echoing_them(line, reason):
    with pytest.raises(ConfigError, match=reason) as exc:
        parse_settings(line + "\n", "cfg")
    assert str(exc.value).startswith("cfg:1: ")
    assert "pw@" not in str(exc.value)


# --- the listener's fleet client, against a stand-in store ---------------------------------------


class FakeRedis:
    """Just what the packet path calls: SET NX PX. down=True: every call fails."""

    def __init__(self):
        self.keys: dict[str, tuple[str, int]] = {}
        self.down = False

    def set(self, key, value, nx=False, px=None):
        if self.down:
            raise redis.ConnectionError("connection refused")
        if nx and key in self.keys:
            return None
        self.keys[key] = (value, px)
        return True

    def xrevrange(self, name, count=None):
        return []

    def hgetall(self, name):
        return {}

    def xread(self, streams, count=None, block=None):
        time.sleep(block / 1000 / 10)
        return []


def fleet(required=False, node="a") -> tuple[Fleet, FakeRedis]:
    r = FakeRedis()
    f = Fleet(FleetSettings("redis://198.18.0.9:6390", node, required, KEY), connect=lambda *a: r)
    f.up = True
    return f, r


def fleet_listener(tmp_path, f: Fleet, grants=None) -> Listener:
    lst = Listener(CONFIG, grants or FakeGrants(), replay_cache(tmp_path), observers=[f.observe], gate=f.gate)
    lst.fleet = f
    return lst


def test_first_accept_wins_across_the_fleet(tmp_path):
    f, r = fleet()
    a = fleet_listener(tmp_path / "a", f)
    other = Fleet(FleetSettings(f.fs.url, "b", False, KEY), connect=lambda *x: r)
    other.up = True
    b = fleet_listener(tmp_path / "b", other)
    payload = knock(OPEN)
    assert a.handle(packet(payload), NOW).action == "open"
    verdict = b.handle(packet(payload), NOW)
    assert (verdict.action, verdict.reason) == ("reject", "fleet-replay")
    (value, px), = r.keys.values()
    assert value == "a" and 60_000 < px <= 150_000  # until the MAC's window ends, plus a margin


def test_accepted_grants_are_queued_with_absolute_expiry(tmp_path):
    f, _ = fleet()
    lst = fleet_listener(tmp_path, f)
    lst.handle(packet(knock(OPEN)), NOW)
    lst.handle(packet(knock(CLOSE)), NOW)
    opened, closed = f.outbox
    assert (opened.action, opened.port, opened.src, opened.expires) == ("open", 2222, str(SRC), int(NOW) + 600)
    assert (closed.action, closed.expires) == ("close", 0)


def test_a_client_repeat_is_neither_claimed_again_nor_published(tmp_path):
    """knock.sh -r / awp knock --repeat: the copies of an accepted knock are "repeat" verdicts
    of the local (journaled) replay cache; the fleet sees the first only."""
    f, r = fleet()
    claims = []
    real_set = r.set
    r.set = lambda key, *a, **kw: claims.append(key) or real_set(key, *a, **kw)
    grants = FakeGrants()
    lst = fleet_listener(tmp_path, f, grants)
    for payload in (knock(OPEN), knock(CLOSE)):
        first = lst.handle(packet(payload), NOW)
        assert first.action in ("open", "close") and lst.replay.seen(first.mac)
        for t in (NOW + 0.5, NOW + 2):
            verdict = lst.handle(packet(payload), t)
            assert (verdict.action, verdict.reason) == ("repeat", "repeat")
    assert len(claims) == 2 and len(f.accepted) == 2
    assert [m.action for m in f.outbox] == ["open", "close"]
    assert [c[0] for c in grants.calls] == ["open", "close"]
    later = lst.handle(packet(knock(OPEN)), NOW + 10)  # past the repeat window: a replay, still local
    assert (later.action, later.reason) == ("reject", "replay") and len(claims) == 2


def test_the_fleet_observer_publishes_only_accepted_advanced_grants():
    f, _ = fleet()
    for action, mode, port in (("repeat", "advanced", 2222), ("reject", "advanced", 2222),
                               ("open", "simple", 2222), ("reject", "advanced", None)):
        f.observe(Decision(NOW, str(SRC), 2000, port, mode, action, "x", expires_in=600))
    assert not f.outbox
    f.observe(Decision(NOW, str(SRC), 2000, 2222, "advanced", "nothing-to-close", "ok"))
    assert [(m.action, m.port) for m in f.outbox] == [("close", 2222)]  # the grant may be another node's


def test_store_down_knocks_work_locally_and_degradation_is_logged_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="awp.fleet")
    f, r = fleet()
    r.down = True
    grants = FakeGrants()
    lst = fleet_listener(tmp_path, f, grants)
    assert lst.handle(packet(knock(OPEN)), NOW).action == "open"
    assert lst.handle(packet(knock(CLOSE)), NOW).action == "close"
    assert not f.up and f.state()["connected"] is False
    assert sum("fleet degraded" in rec.getMessage() for rec in caplog.records) == 1
    assert [c[0] for c in grants.calls] == ["open", "close"]
    assert len(f.outbox) == 2  # published once the store is back


def test_required_refuses_opens_but_applies_closes_while_down(tmp_path):
    f, r = fleet(required=True)
    grants = FakeGrants()
    grants.open(2222, SRC, 100)
    lst = fleet_listener(tmp_path, f, grants)
    r.down = True
    verdict = lst.handle(packet(knock(OPEN)), NOW)
    assert (verdict.action, verdict.reason) == ("reject", "fleet-unreachable")
    assert lst.handle(packet(knock(CLOSE)), NOW).action == "close"
    assert grants.list() == []


def test_drain_applies_another_nodes_grant_with_its_remaining_lifetime():
    f, _ = fleet()
    grants = FakeGrants()
    f.inbox.put(msg(expires=int(NOW) + 100))
    f.inbox.put(msg(id="1" * 16, port=9999))  # no such door here: ignored
    f.inbox.put(msg(id="2" * 16, src="198.18.2.2", expires=int(NOW) - 1))  # over already
    f.drain(grants, {2222}, NOW)
    assert grants.calls == [("open", 2222, SRC, 100)]
    assert [g["node"] for g in f.state()["remote_grants"]] == ["b"]
    f.drain(grants, {2222}, NOW + 101)  # its end passed: closed here too (xt_recent has no own lifetime)
    assert grants.calls[-1] == ("close", 2222, SRC) and f.state()["remote_grants"] == []


def test_received_messages_that_do_not_verify_are_ignored_and_logged(caplog):
    caplog.set_level(logging.WARNING, logger="awp.fleet")
    f, _ = fleet()
    f._synced_once = True
    good = msg()
    f._receive(good.sign(bytes(32)), live=False)  # signed with another key
    f._receive(good.sign(KEY).replace(" open ", " close "), live=False)
    f._receive(msg(node="a").sign(KEY), live=False)  # this node's own: applied already
    assert f.inbox.qsize() == 0 and f.ignored == 2
    assert sum("fleet message ignored" in r.getMessage() for r in caplog.records) == 2
    f._receive(good.sign(KEY), live=False)
    f._receive(good.sign(KEY), live=False)  # the same message again (a replay in Redis)
    assert f.inbox.qsize() == 1


def test_a_failure_seen_on_the_packet_path_makes_the_consumer_catch_up_again():
    """A stall shorter than the consumer's socket timeout: only the replay claim saw it, the
    consumer's XREAD carried on. The consumer must still catch up and mark the fleet up."""
    f, r = fleet()
    f.up = False
    f.start()
    try:
        assert f.up
        r.down = True
        f.gate(type("V", (), {"mac": "ab" * 32, "minute": int(NOW // 60), "action": "open"})(), None, time.time())
        assert not f.up
        r.down = False
        deadline = time.monotonic() + 3
        while not f.up and time.monotonic() < deadline:
            time.sleep(0.02)
        assert f.up, f.state()
    finally:
        f.stop()


def test_the_fleet_settings_never_show_the_key_or_password():
    fs = FleetSettings("redis://198.18.0.9", "a", False, KEY, keys.Credentials("awp", "pw-4711"))
    assert KEY.hex() not in repr(fs) and str(KEY) not in repr(fs) and "pw-4711" not in repr(fs)


# --- awp status and status --json -------------------------------------------------------------


def fleet_status(connected: bool, required: bool = False):
    from awp import workflow
    from awp.backend import Inspection

    f, _ = fleet(required=required)
    f.up = connected
    f.down_reason = "ConnectionError: refused"
    f.last_sync = time.time() - 2
    f.remote["2222|198.18.1.2"] = msg(expires=int(time.time()) + 300)
    return workflow.Status(CONFIG, Inspection("nftables"), 4242, listener_state={"pid": 4242, "fleet": f.state()})


def test_status_json_carries_the_fleet_only_in_fleet_mode():
    from awp import workflow
    from awp.backend import Inspection
    from awp.status_json import status_document

    doc = status_document(fleet_status(False))
    assert doc["fleet"]["node"] == "a" and doc["fleet"]["connected"] is False
    assert doc["fleet"]["degraded"] == "ConnectionError: refused"
    assert [(g["port"], g["source"], g["node"]) for g in doc["fleet"]["remote_grants"]] == [(2222, "198.18.1.2", "b")]
    assert "decisions" in doc["listener"] and "ban" in doc  # main's keys stay beside it
    assert "fleet" not in status_document(workflow.Status(CONFIG, Inspection("nftables"), 4242, listener_state={}))


@pytest.mark.parametrize("connected", [True, False])
def test_status_prints_this_node_the_store_its_sync_and_other_nodes_grants(monkeypatch, tmp_path, capsys,
                                                                          connected):
    from awp import cli, workflow

    st = fleet_status(connected, required=True)
    monkeypatch.setattr(cli, "_require_root", lambda: None)
    monkeypatch.setattr(workflow, "status", lambda root: st)
    assert cli.main(["--root", str(tmp_path), "status"]) == 0
    out, err = capsys.readouterr()
    line = "fleet: node a, store redis://198.18.0.9:6390, last sync 2."
    if connected:
        assert line in out and ", connected" in out
    else:
        assert line in err and "fleet degraded (ConnectionError: refused)" in err
        assert "opens are refused (FW_PORTKNOCK_FLEET_REQUIRED)" in err
    assert "grants from other nodes" in out and "198.18.1.2" in out


def test_the_node_name_defaults_to_the_short_host_name(monkeypatch):
    import socket

    from awp.fleet.node import node_name

    monkeypatch.setattr(socket, "gethostname", lambda: "fw1.example.org")
    assert node_name("") == "fw1" and node_name("edge-2") == "edge-2"


def test_without_a_fleet_nothing_imports_redis(tmp_path):
    """FW_PORTKNOCK_FLEET empty: the CLI, the workflow and the listener never load redis."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from awp import cli, workflow, status_json, metrics\n"
            "from awp.knockd import listener, supervisor\n"
            "from awp.settings import parse_settings\n"
            "assert 'redis' not in sys.modules and 'awp.fleet.store' not in sys.modules, sorted(sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]


def test_metrics_show_the_fleet_link_only_in_fleet_mode():
    from test_metrics import CONFIG as METRICS_CONFIG
    from test_metrics import St, inspection, parse

    from awp import metrics

    f, _ = fleet()
    f.up, f.last_sync, f.ignored = False, 1700000090.0, 3
    f.outbox.append(msg())
    f.remote["2222|198.18.1.2"] = msg()
    st = St(METRICS_CONFIG, inspection(), 4242, None, {"heartbeat": 1700000100, "fleet": f.state()})
    got = parse(metrics.render(st, 1700000100.0))
    node = (("node", "a"),)
    assert got[("awp_fleet_connected", node)] == 0
    assert got[("awp_fleet_last_sync_age_seconds", node)] == 10
    assert got[("awp_fleet_unsent_grants", node)] == 1 and got[("awp_fleet_remote_grants", node)] == 1
    assert got[("awp_fleet_ignored_messages_total", node)] == 3
    alone = metrics.render(St(METRICS_CONFIG, inspection(), 4242, None, {"heartbeat": 1700000100}), 1700000100.0)
    assert "awp_fleet_" not in alone


# --- awp check: is this node's key the fleet's? ------------------------------------------------


class _Store:
    """The two reads compare_key makes: the stream's newest entries and the live grants."""

    def __init__(self, stream=(), live=(), fail=False):
        self.stream, self.live_lines, self.fail = list(stream), list(live), fail

    def xrevrange(self, name, count):
        if self.fail:
            raise redis.ConnectionError("connection refused")
        return [(f"{i}-0", {"m": line}) for i, line in enumerate(self.stream[:count])]

    def hgetall(self, name):
        return {f"f{i}": line for i, line in enumerate(self.live_lines)}


@pytest.mark.parametrize("stream,live,expected", [
    ([msg().sign(KEY)], [], ("agrees", 1, 1)),
    ([msg().sign(bytes(32)), msg(id="00112233445566aa").sign(KEY)], ["junk"], ("agrees", 1, 3)),
    ([msg().sign(bytes(32))], [msg(id="0011223344556677").sign(bytes(32))], ("differs", 0, 2)),
    ([], [], ("no-messages", 0, 0)),
])
def test_compare_key_verifies_the_fleets_newest_messages(stream, live, expected):
    from awp.fleet.node import compare_key

    fs = FleetSettings("redis://198.18.0.9:6390", "a", False, KEY)
    assert compare_key(fs, connect=lambda *a: _Store(stream, live)) == expected


def test_compare_key_with_the_store_down_says_so_and_does_not_raise():
    from awp.fleet.node import compare_key

    fs = FleetSettings("redis://198.18.0.9:6390", "a", False, KEY)
    assert compare_key(fs, connect=lambda *a: _Store(fail=True)) == ("unreachable", 0, 0)
