"""`awp metrics` against the real kernel, on every backend: after a hand grant and a
connect, the exposition parses (prometheus_client) and says what the kernel holds."""

from __future__ import annotations

import pytest
from advanced_helpers import PORT, wait_connect
from advanced_helpers import make_server, servers  # noqa: F401  (pytest fixtures)
from prometheus_client.parser import text_string_to_metric_families

from awp import __version__

pytestmark = pytest.mark.netns


def samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_show_the_grant_the_connect_and_a_live_listener(lab, make_server, backend, tmp_path):
    srv = make_server()
    srv.start()
    lab.server.serve_tcp(PORT)
    c1 = lab.clients[0]
    before = samples(srv.awp("metrics").stdout)
    assert before[("awp_grants", (("port", str(PORT)),))] == 0
    assert srv.awp("grant", c1.ip4, str(PORT)).returncode == 0
    assert wait_connect(c1, lab.server_ip4(c1))

    target = tmp_path / "awp.prom"
    done = srv.awp("metrics", "--output", str(target))
    assert done.returncode == 0 and done.stdout == "", done.stderr
    got = samples(target.read_text())
    assert got[("awp_grants", (("port", str(PORT)),))] == 1
    assert got[("awp_grants_by_hand", (("port", str(PORT)),))] == 1
    assert got[("awp_door_let_in_total", (("port", str(PORT)),))] >= 1
    assert got[("awp_listener_up", ())] == 1 and 0 <= got[("awp_listener_heartbeat_age_seconds", ())] < 5
    assert got[("awp_kernel_matches_config", ())] == 1
    assert got[("awp_info", (("backend", backend), ("version", __version__)))] == 1
