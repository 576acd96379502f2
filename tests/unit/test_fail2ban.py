"""The shipped fail2ban filter and jail example, with fail2ban's own tools (Debian package
fail2ban, in the Makefile's DEB_PKGS): the jail example is a valid configuration, and the
filter reads the three forms a line takes (journal, DIR/var/log file, syslog). The real
listener's output is fed to it in tests/netns/test_decision_log.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILTER = REPO / "etc" / "fail2ban" / "filter.d" / "awp-knockd.conf"
JAIL = REPO / "etc" / "fail2ban" / "jail.d" / "awp-knockd.conf.example"
TAIL = "knock_port=2000 port=2222 mode=advanced mac=ab12cd34"
BODY = {
    "bad-mac": f"knock rejected decision=reject reason=bad-mac src=198.18.1.2 {TAIL}",
    "malformed6": "knock rejected decision=reject reason=malformed src=2001:2::7 knock_port=2000 port=2222 "
                  "mode=advanced mac=-",
    "replay": f"knock rejected decision=reject reason=replay src=198.18.1.3 {TAIL}",
    "skew": f"knock rejected decision=reject reason=skew src=198.18.1.4 {TAIL} offset=+180",
    "untrusted": f"knock rejected decision=reject reason=untrusted-cache src=198.18.1.5 {TAIL}",
    "unknown": "knock rejected decision=reject reason=unknown-port src=198.18.1.6 knock_port=2001 port=- "
               "mode=advanced mac=-",
    "open": f"knock accepted decision=open reason=ok src=198.18.1.7 {TAIL} expires_in=3600",
    "banned": "source banned src=198.18.1.8 mode=advanced failures=5 window=60s ban_time=600s reason=bad-mac "
              "knock_port=2000",
    "summary": "knock summary period=60 rejected=9 logged=9 suppressed=0 sources=2 untracked=0 "
               "top_src=198.18.1.2:8,[2001:2::7]:1 reasons=bad-mac:9",
}
FAILED = ["198.18.1.2", "2001:2::7"]  # bad-mac and malformed only


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: make setup installs the Debian package fail2ban"
    return found


def regex(log: Path, *extra: str) -> list[str]:
    proc = subprocess.run([tool("fail2ban-regex"), *extra, "-o", "ip", str(log), str(FILTER)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.mark.parametrize("form, prefix, extra", [
    ("log file", "2026-12-02 08:00:00,123 awp.knockd.decisionlog: ", ()),
    ("syslog", "Dec  2 08:00:00 gw awp-knockd[4242]: awp.knockd.decisionlog: ", ()),
    ("journal MESSAGE", "awp.knockd.decisionlog: ", ("-d", "{NONE}")),
])
def test_the_filter_matches_bad_mac_and_malformed_only_in_every_form(tmp_path, form, prefix, extra):
    log = tmp_path / "log"
    log.write_text("".join(prefix + body + "\n" for body in BODY.values()))
    assert regex(log, *extra) == FAILED, form


def test_the_host_is_the_first_src_and_a_line_of_another_shape_is_not_matched(tmp_path):
    log = tmp_path / "log"
    start = "2026-12-02 08:00:00,123 awp.knockd.decisionlog: "
    later_src = BODY["bad-mac"].replace("mac=ab12cd34", "mac=ab12cd34 src=198.18.9.9")
    not_key_value = BODY["bad-mac"].replace("mac=ab12cd34", "mac=ab12cd34 from 198.18.9.9")
    log.write_text(start + later_src + "\n" + start + not_key_value + "\n")
    assert regex(log) == ["198.18.1.2"]


def test_the_jail_example_is_a_valid_fail2ban_configuration(tmp_path):
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf, ignore=shutil.ignore_patterns("jail.d", "jail.local"))
    (conf / "jail.d").mkdir()
    shutil.copy(FILTER, conf / "filter.d" / "awp-knockd.conf")
    shutil.copy(JAIL, conf / "jail.d" / "awp-knockd.conf")
    test = subprocess.run([tool("fail2ban-client"), "-c", str(conf), "-t"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert test.returncode == 0, test.stdout + test.stderr
    dump = subprocess.run([tool("fail2ban-client"), "-c", str(conf), "-d"], capture_output=True, text=True,
                          timeout=60, check=False).stdout
    assert "['add', 'awp-knockd', 'systemd']" in dump
    assert "'addjournalmatch', 'SYSLOG_IDENTIFIER=awp-knockd'" in dump
    assert "['protocol', 'udp']" in dump and "['port', '2000']" in dump  # the knock ports only,
    assert "saddr @<addr_set> drop" in dump  # silently
