"""`awp status --json`: the document awp/status_json.py makes of a hand-made Status, and the
CLI printing it as JSON a program can parse."""

from __future__ import annotations

import json

import pytest

from awp import cli, workflow
from awp.backend import Inspection, SourceState
from awp.lists import parse_advanced, parse_simple
from awp.model import Config, Settings
from awp.status_json import SCHEMA, status_document

CONFIG = Config(Settings(enabled=True, advanced=True), parse_simple("# doors\n22:7481,2203,9127,4410\n", "simple"),
                parse_advanced("2222,2000,opensecret1,closesecret1\n", "advanced"))
SEEN = Inspection("nftables",
                  (SourceState(22, "198.18.0.2", "knocking 2/4", 13), SourceState(22, "2001:2::3", "open", 21),
                   SourceState(2222, "198.18.0.4", "granted", 898)),
                  {22: (3, 40)}, {"progress": 2, "open": 0}, False, ("inet awp table",))


def test_document_of_a_status():
    doc = status_document(workflow.Status(CONFIG, SEEN, 4242))
    assert doc == {
        "schema": SCHEMA,
        "enabled": True,
        "backend": "nftables",
        "doors": [
            {"port": 22, "mode": "simple", "knock": {"proto": "tcp", "ports": [7481, 2203, 9127, 4410]},
             "defined_at": "simple:2", "let_in": 3, "dropped": 40},
            {"port": 2222, "mode": "advanced", "knock": {"proto": "udp", "ports": [2000]},
             "defined_at": "advanced:1", "let_in": None, "dropped": None},
        ],
        "sources": [
            {"port": 22, "source": "198.18.0.2", "state": "knocking", "step": [2, 4], "by": None, "seconds_left": 13},
            {"port": 22, "source": "2001:2::3", "state": "open", "step": None, "by": None, "seconds_left": 21},
            {"port": 2222, "source": "198.18.0.4", "state": "granted", "step": None, "by": None, "seconds_left": 898},
        ],
        "refused": {"progress": 2, "open": 0},
        "kernel_matches_config": False,
        "differs": ["inet awp table"],
        "listener": {"running": True, "pid": 4242, "supervisor_pid": None, "replay_cache": None,
                     "decisions": None},
        "elsewhere": [],
        "ban": {"enabled": False, "after": 5, "window": 60, "time": 600, "banned": [], "dropped": None,
                "kernel_bans": None},
        "confirm": None,
    }


def test_document_when_off_and_nothing_runs():
    doc = status_document(workflow.Status(Config(Settings()), Inspection("iptables-nft"), None))
    assert (doc["enabled"], doc["backend"], doc["doors"], doc["sources"]) == (False, "iptables-nft", [], [])
    assert (doc["refused"], doc["kernel_matches_config"], doc["differs"]) == ({}, True, [])
    assert doc["listener"] == {"running": False, "pid": None, "supervisor_pid": None, "replay_cache": None,
                               "decisions": None}


def test_the_document_is_plain_json():
    doc = status_document(workflow.Status(CONFIG, SEEN, 4242))
    assert json.loads(json.dumps(doc)) == doc


@pytest.fixture
def status_of_this_host(monkeypatch):
    st = workflow.Status(CONFIG, SEEN, 4242)
    monkeypatch.setattr(cli, "_require_root", lambda: None)
    monkeypatch.setattr(workflow, "status", lambda root: st)
    return st


def test_cli_prints_the_document_as_parsable_json(status_of_this_host, tmp_path, capsys):
    assert cli.main(["--root", str(tmp_path), "status", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == status_document(status_of_this_host)
    assert captured.err == ""
