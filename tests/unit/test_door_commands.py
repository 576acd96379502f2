"""Door commands wired into the listener, without a kernel: Decisions in, jobs out (a fake
runner records them); simple doors' "awp-open PORT" NFLOG packets; the compilers' NFLOG
rule; the checks `awp check` makes of a command."""

from __future__ import annotations

import ipaddress
import os
import pwd
import socket
import struct
from pathlib import Path

import pytest
from fakes import FakeGrants
from pknock_ref import ref_payload

from awp.checks import check_config, command_problem, listener_notes
from awp.compile import KernelState, compile_family, render_restore
from awp.compile.nftables import compile_nft
from awp.doors import parse_door_options
from awp.errors import ConfigError
from awp.knockd import nflog
from awp.knockd.commands import DoorCommands
from awp.knockd.events import Decision
from awp.knockd.listener import Listener
from awp.knockd.nflog import Packet
from awp.knockd.replay import ReplayCache
from awp.lists import parse_advanced, parse_simple
from awp.model import Config, Settings, commanded_simple_ports, needs_listener

SRC = "198.18.1.2"
NOW = 29_000_000 * 60 + 30.0


class FakeRunner:
    def __init__(self):
        self.jobs = []

    def submit(self, job):
        self.jobs.append(job)
        return "queued"

    def summary(self):
        pass

    def stop(self):
        pass


def config(doors_text: str, simple="22:7481,2203,9127\n80:3301,8808,1207\n",
           advanced="2222,2000,opensecret1,closesecret1\n", **settings) -> Config:
    s = Settings(enabled=True, simple=True, advanced=True, autoclose=600, open_window=30, nflog_group=4747,
                 **settings)
    return Config(s, parse_simple(simple, "simple"), parse_advanced(advanced, "advanced"),
                  parse_door_options(doors_text, "portknock-doors"))


DOORS = """
[22]
on_open = /bin/true opened
on_close = /bin/true closed
[2222]
on_open = /bin/true adv-open
on_close = /bin/true adv-close
run_as = daemon
timeout = 3
"""


def decision(port, action, t=NOW, mode="advanced", expires=None, src=SRC):
    return Decision(t, src, 2000, port, mode, action, "ok", expires_in=expires)


def test_open_close_and_expire_become_jobs():
    runner = FakeRunner()
    commands = DoorCommands(config(DOORS), runner)
    commands(decision(2222, "open", expires=600))
    commands(decision(2222, "close", t=NOW + 5, src=ipaddress.ip_address(SRC)))  # as the listener has it
    commands(decision(22, "open", mode="simple", expires=30, src="198.18.1.3"))
    commands(decision(80, "open", mode="simple"))  # no commands
    commands(decision(2222, "reject"))
    commands(decision(None, "reject"))
    commands.tick(NOW + 29)
    assert [(j.command.argv[1], j.action, j.src, j.mode) for j in runner.jobs] == [
        ("adv-open", "open", SRC, "advanced"), ("adv-close", "close", SRC, "advanced"),
        ("opened", "open", "198.18.1.3", "simple")]
    commands.tick(NOW + 30)  # the simple door's open window is over
    assert (runner.jobs[-1].command.argv[1], runner.jobs[-1].action) == ("closed", "expire")
    adv = runner.jobs[0]
    assert (adv.command.user, adv.command.timeout, adv.door, adv.port) == ("daemon", 3.0, "2222", 2222)
    commands.tick(NOW + 10_000)
    assert len(runner.jobs) == 4  # the advanced grant was closed: no expire


def test_a_new_open_moves_the_expiry():
    runner = FakeRunner()
    commands = DoorCommands(config(DOORS), runner)
    commands(decision(2222, "open", expires=600))
    commands(decision(2222, "open", t=NOW + 500, expires=600))
    commands.tick(NOW + 700)
    assert [j.action for j in runner.jobs] == ["open", "open"]
    commands.tick(NOW + 1100)
    assert [j.action for j in runner.jobs] == ["open", "open", "expire"]


def test_a_reload_that_drops_the_commands_forgets_the_opens():
    runner = FakeRunner()
    commands = DoorCommands(config(DOORS), runner)
    commands(decision(2222, "open", expires=600))
    commands.configure(config(""))
    commands.tick(NOW + 10_000)
    assert [j.action for j in runner.jobs] == ["open"]


def open_packet(port=22, src=SRC) -> Packet:
    return Packet(socket.AF_INET, ipaddress.ip_address(src), ipaddress.ip_address("198.18.1.1"), 0, port, b"", 0,
                  f"awp-open {port}")


def test_listener_turns_a_simple_open_into_a_decision(tmp_path):
    class Wants(list):
        simple_opens = True

        def __call__(self, d):
            self.append(d)

    seen, others = Wants(), []
    cache = ReplayCache(tmp_path / "replay")
    cache.load()
    listener = Listener(config(DOORS), FakeGrants(), cache, [seen, others.append])
    assert listener.handle(open_packet(), NOW) is None
    listener.handle(open_packet(80), NOW)  # no commands: nothing
    assert others == []  # the knock log and counters never see the kernel's decisions
    d, = seen
    assert (d.port, d.src, d.mode, d.action, d.knock_port, d.expires_in) == (22, SRC, "simple", "open", 9127, 30)


def nfmsg(prefix: bytes, ip: bytes, family=socket.AF_INET) -> bytes:
    def attr(t, v):
        raw = struct.pack("=HH", 4 + len(v), t) + v
        return raw + b"\0" * (-len(raw) % 4)
    body = struct.pack("!BBH", family, 0, 4747) + attr(nflog.NFULA_PREFIX, prefix) + attr(nflog.NFULA_PAYLOAD, ip)
    return struct.pack("=IHHII", 16 + len(body), nflog.MSG_PACKET, 0, 0, 0) + body


def tcp_syn_v4(src="198.18.1.2", dst="198.18.1.1") -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return header + struct.pack("!HHIIBBHHH", 40000, 22, 0, 0, 0x50, 0x02, 1024, 0, 0)


def test_nflog_reads_a_simple_open():
    got, = nflog.parse_messages(nfmsg(b"awp-open 22\0", tcp_syn_v4()))
    assert (str(got.src), got.dport, got.prefix) == (SRC, 22, "awp-open 22")
    v6 = bytes([0x60]) + bytes(7) + socket.inet_pton(socket.AF_INET6, "2001:2::7") + bytes(16)
    got6, = nflog.parse_messages(nfmsg(b"awp-open 443\0", v6, socket.AF_INET6))
    assert (str(got6.src), got6.dport) == ("2001:2::7", 443)


@pytest.mark.parametrize("prefix", [b"awp-open 0\0", b"awp-open 70000\0", b"awp-open x\0", b"awp-open \0",
                                    b"awp-open 022x\0"])
def test_nflog_drops_a_bad_open_prefix(prefix):
    assert nflog.parse_messages(nfmsg(prefix, tcp_syn_v4())) == []


def test_nflog_a_knock_without_the_prefix_is_still_a_knock():
    assert nflog.parse_messages(nfmsg(b"awp\0", tcp_syn_v4())) == []  # TCP, not a UDP knock


# --- compilers -------------------------------------------------------------------------


def test_only_doors_with_commands_log_their_opening_to_the_listener():
    cfg = config(DOORS)
    assert commanded_simple_ports(cfg) == (22,) and needs_listener(cfg)
    v4 = render_restore(compile_family(cfg, 4), KernelState())
    assert '-A AWP-A22-3 -j NFLOG --nflog-group 4747 --nflog-prefix "awp-open 22" --nflog-size 256' in v4
    assert v4.count("awp-open") == 1
    nft = "\n".join(r for c in compile_nft(cfg).chains for r in c.rules)
    assert nft.count("awp-open") == 1 and 'th dport 22 log group 4747 snaplen 256 prefix "awp-open 22"' in nft


def test_no_commands_no_nflog_and_no_listener_for_simple_doors():
    cfg = config("", advanced="")
    assert not needs_listener(cfg) and listener_notes(cfg) == []
    assert "awp-open" not in render_restore(compile_family(cfg, 4), KernelState())
    assert "awp-open" not in "\n".join(r for c in compile_nft(cfg).chains for r in c.rules)


def test_check_says_a_simple_door_with_commands_needs_the_listener():
    notes = listener_notes(config(DOORS, advanced=""))
    assert len(notes) == 1 and "simple door 22" in notes[0] and "listener" in notes[0]


# --- checks of the command ----------------------------------------------------------------

NOBODY = pwd.getpwnam("nobody")


def tree(tmp_path, mode=0o755, dir_mode=0o755) -> str:
    base = Path("/tmp") / f"awp-cmdcheck-{os.getpid()}-{tmp_path.name}"  # pytest's tmp is 0700
    base.mkdir(mode=0o755, exist_ok=True)
    base.chmod(dir_mode)
    prog = base / "prog"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(mode)
    return str(prog)


@pytest.fixture
def cleanup(tmp_path):
    yield
    import shutil
    shutil.rmtree(Path("/tmp") / f"awp-cmdcheck-{os.getpid()}-{tmp_path.name}", ignore_errors=True)


def problem(prog):
    return command_problem(prog, NOBODY.pw_uid, frozenset({NOBODY.pw_gid}), "nobody")


def test_a_good_program_passes(tmp_path, cleanup):
    assert problem(tree(tmp_path)) is None
    assert problem("/bin/true") is None


@pytest.mark.parametrize("mode,dir_mode,words", [
    (0o744, 0o755, "not executable by user nobody"),
    (0o757, 0o755, "writable by others"),
    (0o775, 0o755, "writable by others"),
    (0o755, 0o777, "is writable by others: "),
    (0o755, 0o750, "cannot be entered by user nobody"),
])
def test_bad_programs_are_refused(tmp_path, cleanup, mode, dir_mode, words):
    if os.geteuid() != 0:
        pytest.skip("needs root-owned files")
    assert words in (problem(tree(tmp_path, mode, dir_mode)) or "")


def test_missing_program_and_not_a_file(tmp_path):
    assert "no such file" in problem("/nonexistent/awp-prog")
    assert "not a regular file" in problem("/tmp")


def test_check_config_names_the_file_line_and_key():
    text = "[22]\non_open = /bin/true\non_close = /nonexistent/awp-close\n"
    with pytest.raises(ConfigError) as info:
        check_config(config(text))
    assert (info.value.path, info.value.line) == ("portknock-doors", 3)
    assert "[22] on_close: /nonexistent/awp-close" in str(info.value)


def test_check_config_unknown_user():
    with pytest.raises(ConfigError, match=r"run_as: no such user 'no-such-awp-user'") as info:
        check_config(config("[22]\non_open = /bin/true\nrun_as = no-such-awp-user\n"))
    assert info.value.line == 3


def test_check_config_accepts_good_commands():
    check_config(config(DOORS))
