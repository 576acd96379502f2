"""An advanced grant that runs out (FW_PORTKNOCK_AUTOCLOSE) runs the door's on_close with
AWP_ACTION=expire, about when the kernel closes the port; on every backend."""

from __future__ import annotations

import time

import pytest
from advanced_helpers import OPEN, PORT, knock_sh, servers  # noqa: F401  (servers: a fixture)
from commands_helpers import NOBODY, _plain_environment, scripts, wait_marker, with_doors  # noqa: F401

pytestmark = pytest.mark.netns
AUTOCLOSE = 10  # the smallest the settings allow


def test_grant_expiry_runs_on_close_with_action_expire(lab, servers, backend, scripts):
    c1 = lab.clients[0]
    dst = lab.server_ip4(c1)
    srv = servers(lab, autoclose=AUTOCLOSE)
    with_doors(srv, f"[{PORT}]\non_open = {scripts['marker']}\non_close = {scripts['marker']}\n")
    srv.start()
    lab.server.serve_tcp(PORT)
    assert knock_sh(c1, dst, OPEN, "--wait", str(PORT)).returncode == 0
    opened = time.monotonic()
    wait_marker(scripts["out"], r"^open ", log=srv.log)
    line = wait_marker(scripts["out"], r"^expire ", timeout=AUTOCLOSE + 6, log=srv.log)
    took = time.monotonic() - opened
    assert line == f"expire {c1.ip4} {PORT} {PORT} advanced {NOBODY.pw_uid}"
    assert AUTOCLOSE - 2 <= took <= AUTOCLOSE + 5, f"expire ran {took:.1f} s after the open"
    assert not c1.tcp_connect(dst, PORT, timeout=1.0), "the kernel closed the grant too"
