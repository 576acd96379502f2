"""The nftables backend end to end (issue 6): many sources, full sets, re-applies that keep
state, coexistence with other tables and with iptables-nft rules, refused loads, a switch of
backend, and the listener. Every test asserts what a user sees: connects, `awp status
--json`, awp's messages, the listener's log, and `nft list ruleset` where the test is about
what else is in the kernel.

Sources: the lab's clients, /32 addresses bound on client 1 (crowd.BOUND) and spoofed SYNs
(crowd.SPOOFED), all in 198.18.0.0/15.
"""

from __future__ import annotations

import re
import time

import pytest
from advanced_helpers import DOOR as ADVANCED_DOOR
from advanced_helpers import KNOCK_PORT, OPEN, safe_now, wait_connect
from advanced_helpers import PORT as ADVANCED_PORT
from advanced_helpers import knock as advanced_knock
from advanced_helpers import ref_mac, servers  # noqa: F401  (servers: a pytest fixture)
from crowd import bind_sources, connect_all, datagrams, knock_all, spoofed_syns
from harness import wait_for
from simple_helpers import (A, B, C, D, DOOR, E, OTHER_DOOR, OTHER_PORT, PORT, SEQ, apply, connects, knock,
                            netns_runner, plan_in, root_with, serve, setup)
from views import awp_table, holders, snapshot, sources, status, without_awp

pytestmark = [pytest.mark.netns, pytest.mark.parametrize("backend", ["nftables"])]


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)


# --- 1. hundreds of sources at once (xt_recent forgot all but 100) ---------------------------

CROWD = 300


def test_300_sources_complete_a_simple_knock_and_all_get_in(lab, tmp_path, backend):
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    root = setup(lab, tmp_path, backend, families=(4,), FW_PORTKNOCK_OPEN_WINDOW="30")
    crowd = bind_sources(lab, c1, CROWD)
    assert connect_all(c1, dst, PORT, crowd[:3], timeout=1.0) == [], "closed before a knock"
    knock_all(c1, dst, crowd, SEQ)
    assert connect_all(c1, dst, PORT, crowd) == crowd
    assert len(sources(status(lab.server, root), "open")) == CROWD
    assert not connects(lab, lab.clients[1], expect=False), "a source that did not knock"


def test_300_sources_send_an_advanced_open_knock_and_all_get_in(lab, servers, backend):
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    srv = servers(lab)
    srv.start()
    lab.server.serve_tcp(ADVANCED_PORT)
    crowd = bind_sources(lab, c1, CROWD)
    now = safe_now(margin=10)
    mark = srv.log.mark()
    datagrams(c1, dst, KNOCK_PORT, [(src, ref_mac(OPEN, src, now).encode() + b"\n") for src in crowd])
    opened = re.compile(r"knock accepted action=open .*src=(\S+) ")
    wait_for(lambda: len(opened.findall(srv.log.since(mark))) >= CROWD, 30, f"{CROWD} open decisions")
    assert sorted(opened.findall(srv.log.since(mark))) == sorted(crowd)
    assert connect_all(c1, dst, ADVANCED_PORT, crowd) == crowd
    assert len(sources(status(lab.server, srv.root), "granted")) == CROWD


# --- 4. a full set protects the sources already in it ----------------------------------------

SMALL = 1024  # the smallest FW_PORTKNOCK_SET_SIZE
FLOOD = 1100  # distinct spoofed sources, one SYN each to the door's first knock


def test_a_full_set_keeps_a_source_mid_sequence_and_counts_what_it_refused(lab3, tmp_path, backend):
    """c1 is mid-sequence when 1,100 spoofed sources start the same door (each one SYN to its
    first knock) and fill the 1,024-entry progress set. c1 completes and gets in; c3, new, is
    refused while the set is full (the choice: who is in keeps their place), which status
    counts; once the flood's entries time out (step timeout), c3 gets in too."""
    c1, c2, c3 = lab3.clients
    root = setup(lab3, tmp_path, backend, families=(4,), FW_PORTKNOCK_SET_SIZE=str(SMALL),
                 FW_PORTKNOCK_STEP_TIMEOUT="8", FW_PORTKNOCK_OPEN_WINDOW="30")
    knock(lab3, c1, (A, B))
    sent = spoofed_syns(c2, lab3.server_ip4(c2), A, FLOOD, rate=10_000)
    assert sent["sent"] == FLOOD, sent
    knock(lab3, c3, SEQ)
    knock(lab3, c1, (C, D, E))
    assert connects(lab3, c1), "mid-sequence before the flood, completed during it"
    assert not connects(lab3, c3, expect=False), "a new source while the set is full"
    doc = status(lab3.server, root)
    knocking = sources(doc, "knocking")
    assert doc["refused"]["progress"] > 0, doc["refused"]
    assert len(knocking) >= SMALL - 2 and (PORT, c3.ip4) not in knocking, len(knocking)
    wait_for(lambda: not sources(status(lab3.server, root), "knocking"), 15, "the flood's entries to time out")
    knock(lab3, c3, SEQ)
    assert connects(lab3, c3), "the set has room again"
