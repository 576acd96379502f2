"""Door commands that awp check refuses (missing, not executable, writable by others, an
unknown run_as user), end to end: awp check and awp -s -f exit 3 naming the file, line and
key, and the running firewall stays byte-identical, on every backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from advanced_helpers import servers  # noqa: F401  (pytest fixture)
from commands_helpers import SIMPLE_DOOR, SIMPLE_PORT, _plain_environment, scripts, with_doors  # noqa: F401

pytestmark = pytest.mark.netns



@pytest.mark.parametrize("bad", ["missing", "not-executable", "writable-by-others", "unknown-user"])
def test_a_bad_command_is_refused_and_the_firewall_stays_byte_identical(lab, servers, backend, scripts, bad):
    from views import snapshot

    srv = servers(lab, advanced_list=None, simple_list=SIMPLE_DOOR, advanced="no", simple="yes")
    srv.apply()
    before = snapshot(lab.server)
    prog = Path(scripts["marker"]).with_name("bad.sh")
    prog.write_text("#!/bin/sh\n")
    prog.chmod({"not-executable": 0o644, "writable-by-others": 0o757}.get(bad, 0o755))
    program = "/nonexistent/awp-bad" if bad == "missing" else str(prog)
    user = "no-such-awp-user" if bad == "unknown-user" else "nobody"
    with_doors(srv, f"# bad: {bad}\n[{SIMPLE_PORT}]\non_open = {program} --flag\nrun_as = {user}\n")
    for args in (["check"], ["-s", "-f"]):
        r = srv.awp(*args)
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        line = 4 if bad == "unknown-user" else 3
        assert f"portknock-doors:{line}: [22] " in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert snapshot(lab.server) == before
    assert srv.pid() is None  # no listener was started for the refused command
