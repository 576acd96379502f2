"""client/knock.sh against the independent reference of the wire format.

Dry runs (-n) with -s and -t need no network; the one real send goes to a loopback socket.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pknock_ref import ref_mac, ref_payload

KNOCK = Path(__file__).resolve().parents[2] / "client" / "knock.sh"
T = 1_700_000_000

SECRETS = {
    "ascii": "s3cret-door",
    "one-char": "x",
    "64-chars": "k" * 64,
    "65-chars": "L" * 65,
    "200-chars": "".join(chr(33 + i % 90) for i in range(200)),
    "utf8": "pässwörd",
    "utf8-long": "ключ" * 20,
    "shell-meta": "a b 'q' \"dq\" $HOME `id` \\ ; | & * ?",
    "printf-format": "%s%d%n\\x41\\n%%",
    "leading-dash": "-n",
    "spaces-around": "  spaced  ",
}


def knock(*args: str, stdin: str | None = None, env: dict | None = None):
    return subprocess.run(
        [str(KNOCK), *args],
        input=(stdin or "").encode(),
        capture_output=True,
        env=env,
        timeout=30,
    )


def dry_mac(src: str, t: int, dst: str, secret: str, stdin: str | None = None) -> str:
    r = knock("-n", "-s", src, "-t", str(t), dst, "7000", secret, stdin=stdin)
    assert r.returncode == 0, r.stderr
    assert src.encode() in r.stderr
    return r.stdout.decode()


@pytest.mark.parametrize("name", list(SECRETS))
@pytest.mark.parametrize(
    "src,dst", [("198.51.100.7", "192.0.2.1"), ("2001:db8::7", "2001:db8::1")], ids=["v4", "v6"]
)
def test_secret_as_argument(name, src, dst):
    secret = SECRETS[name]
    assert dry_mac(src, T, dst, secret) == ref_mac(secret, src, T) + "\n"


@pytest.mark.parametrize("name", list(SECRETS))
def test_secret_from_stdin(name):
    secret = SECRETS[name]
    out = dry_mac("198.51.100.7", T, "192.0.2.1", "-", stdin=secret + "\nsecond line\n")
    assert out == ref_mac(secret, "198.51.100.7", T) + "\n"


def test_secret_from_stdin_without_newline():
    out = dry_mac("198.51.100.7", T, "192.0.2.1", "-", stdin="no-newline")
    assert out == ref_mac("no-newline", "198.51.100.7", T) + "\n"


@pytest.mark.parametrize("t", [0, 59, 60, 61, T - 60, T + 59, 2**32 * 60 - 1])
@pytest.mark.parametrize("src", ["10.0.0.1", "255.255.255.255", "fe80::1", "::", "1:2:3:4:5:6:7:8"])
def test_minutes_and_addresses(t, src):
    dst = "192.0.2.1" if "." in src else "2001:db8::1"
    assert dry_mac(src, t, dst, "k") == ref_mac("k", src, t) + "\n"


@pytest.mark.parametrize(
    "spelling,canonical",
    [
        ("2001:DB8:0:0:0:0:0:7", "2001:db8::7"),
        ("::ffff:0:1.2.3.4", "::ffff:0:102:304"),
        ("fe80::1%eth0", "fe80::1"),
        ("1::2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
    ],
)
def test_ipv6_spellings(spelling, canonical):
    assert dry_mac(spelling, T, "2001:db8::1", "k") == ref_mac("k", canonical, T) + "\n"


def test_dry_run_prints_only_the_mac_and_never_the_secret():
    r = knock("-n", "-s", "198.51.100.7", "-t", str(T), "192.0.2.1", "7000", "SeCrEt-Value")
    assert r.stdout == ref_payload("SeCrEt-Value", "198.51.100.7", T)
    assert b"SeCrEt-Value" not in r.stdout + r.stderr


def fake_bin(tmp_path: Path, name: str, body: str) -> Path:
    """A command that shadows `name` on PATH; $REAL is the real one, if any."""
    tool = tmp_path / name
    real = shutil.which(name) or "/bin/false"
    tool.write_text(f'#!/bin/sh\nREAL={real}\n{body}\n')
    tool.chmod(0o755)
    return tool


def path_env(*dirs: Path) -> dict:
    return {**os.environ, "PATH": ":".join([*map(str, dirs), os.environ["PATH"]])}


def test_secret_never_in_argv_of_helpers(tmp_path):
    log = tmp_path / "argv.log"
    for name in ("openssl", "od"):
        fake_bin(tmp_path, name, f'printf "%s\\n" "{name} $*" >>{log}\nexec "$REAL" "$@"')
    secret = "Very-Secret-Value-" + "z" * 70  # longer than a block: hashed first
    env = path_env(tmp_path)
    r = knock("-n", "-s", "198.51.100.7", "-t", str(T), "192.0.2.1", "7000", secret, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == ref_mac(secret, "198.51.100.7", T) + "\n"
    argv = log.read_text()
    assert "openssl dgst" in argv and "od " in argv
    assert "Very-Secret" not in argv
    assert secret.encode().hex() not in argv
    assert "-hmac" not in argv and "key:" not in argv


def test_default_source_from_route(tmp_path):
    out = "192.0.2.1 via 192.0.2.254 dev eth0 src 192.0.2.99 uid 0 \\n    cache"
    check = '[ "$1 $2 $3 $4" = "-4 route get 192.0.2.1" ] || exit 9'
    fake_bin(tmp_path, "ip", f'{check}\necho "{out}"')
    r = knock("-n", "-t", str(T), "192.0.2.1", "7000", "k", env=path_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == ref_mac("k", "192.0.2.99", T) + "\n"
    assert b"192.0.2.99" in r.stderr


def test_default_source_ipv6_from_route(tmp_path):
    out = "2001:db8::1 from :: via fe80::1 dev eth0 proto ra src 2001:db8::99 metric 1024"
    check = '[ "$1 $2 $3 $4" = "-6 route get 2001:db8::1" ] || exit 9'
    fake_bin(tmp_path, "ip", f'{check}\necho "{out}"')
    r = knock("-n", "-t", str(T), "2001:db8::1", "7000", "k", env=path_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == ref_mac("k", "2001:db8::99", T) + "\n"


def only_tools(tmp_path: Path, *tools: str) -> dict:
    """An environment whose PATH holds only these tools (python3: the interpreter running the tests)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in tools:
        (bindir / tool).symlink_to(sys.executable if tool == "python3" else shutil.which(tool))
    return {**os.environ, "PATH": str(bindir)}


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.connect(("::1", 9))
        return True
    except OSError:
        return False


# Towards 127.0.0.2 the kernel picks 127.0.0.1 (the loopback route's preferred source): the
# answer comes from routing, not from the destination given.
FALLBACKS = [pytest.param(("bash", "od", "openssl", "python3"), id="python3"),
             pytest.param(("bash", "od", "openssl", "readlink"), id="proc-net-udp")]


@pytest.mark.parametrize("tools", FALLBACKS)
@pytest.mark.parametrize(("dst", "src"), [("127.0.0.2", "127.0.0.1"), ("::1", "::1")], ids=["v4", "v6"])
def test_without_ip_the_kernel_still_names_the_source(tmp_path, tools, dst, src):
    if ":" in dst and not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    r = knock("-n", "-t", str(T), dst, "7000", "k", env=only_tools(tmp_path, *tools))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == ref_mac("k", src, T) + "\n"
    shown = r.stderr.decode().rsplit("source address ", 1)[1].strip()
    assert ipaddress.ip_address(shown) == ipaddress.ip_address(src)


def test_without_ip_a_real_send_uses_the_fallback(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        env = only_tools(tmp_path, "bash", "od", "openssl", "readlink")
        r = knock("-t", str(T), "127.0.0.1", str(sock.getsockname()[1]), "-", stdin="loop-secret\n", env=env)
        assert r.returncode == 0, r.stderr
        assert sock.recvfrom(4096)[0] == ref_payload("loop-secret", "127.0.0.1", T)


def test_python3_fallback_failing_is_no_route(tmp_path):
    env = only_tools(tmp_path, "bash", "od", "openssl")
    (tmp_path / "bin" / "python3").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "python3").chmod(0o755)
    r = knock("-n", "192.0.2.1", "7000", "k", env=env)
    assert r.returncode == 1 and b"no route" in r.stderr


def test_no_route_is_a_failure(tmp_path):
    fake_bin(tmp_path, "ip", 'echo "RTNETLINK answers: Network is unreachable" >&2\nexit 2')
    r = knock("-n", "192.0.2.1", "7000", "k", env=path_env(tmp_path))
    assert r.returncode == 1
    assert b"no route" in r.stderr


def test_openssl_missing_is_a_failure(tmp_path):
    for tool in ("bash", "od"):
        (tmp_path / tool).symlink_to(shutil.which(tool))
    env = {**os.environ, "PATH": str(tmp_path)}
    r = knock("-n", "-s", "198.51.100.7", "192.0.2.1", "7000", "k", env=env)
    assert r.returncode == 1
    assert b"openssl not found" in r.stderr


def test_openssl_failing_is_a_failure(tmp_path):
    fake_bin(tmp_path, "openssl", "exit 1")
    r = knock("-n", "-s", "198.51.100.7", "192.0.2.1", "7000", "k", env=path_env(tmp_path))
    assert r.returncode == 1
    assert r.stdout == b""


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["192.0.2.1", "7000"],
        ["192.0.2.1", "7000", "k", "extra"],
        ["-x", "192.0.2.1", "7000", "k"],
        ["-s"],
        ["-4", "-6", "192.0.2.1", "7000", "k"],
        ["-6", "192.0.2.1", "7000", "k"],
        ["-4", "2001:db8::1", "7000", "k"],
        ["192.0.2.1", "0", "k"],
        ["192.0.2.1", "65536", "k"],
        ["192.0.2.1", "+22", "k"],
        ["192.0.2.1", " 22", "k"],
        ["192.0.2.1", "2_2", "k"],
        ["192.0.2.1", "٢٢", "k"],
        ["192.0.2.1", "", "k"],
        ["192.0.2.1", "7000", ""],
        ["256.0.0.1", "7000", "k"],
        ["01.2.3.4", "7000", "k"],
        ["1.2.3", "7000", "k"],
        ["2001:db8:::1", "7000", "k"],
        ["1::2::3", "7000", "k"],
        ["::ffff:192.0.2.1", "7000", "k"],
        ["bad_host!", "7000", "k"],
        ["-s", "2001:db8::7", "192.0.2.1", "7000", "k"],
        ["-s", "198.51.100.7", "2001:db8::1", "7000", "k"],
        ["-s", "198.51.100.999", "192.0.2.1", "7000", "k"],
        ["-s", "1:2:3:4:5:6:7:8:9", "2001:db8::1", "7000", "k"],
        ["-t", "-5", "192.0.2.1", "7000", "k"],
        ["-t", "1.5", "192.0.2.1", "7000", "k"],
        ["-t", str(2**32 * 60), "192.0.2.1", "7000", "k"],
        ["-r", "0", "192.0.2.1", "7000", "k"],
        ["-r", "6", "192.0.2.1", "7000", "k"],
        ["-r", "+2", "192.0.2.1", "7000", "k"],
        ["-r", "", "192.0.2.1", "7000", "k"],
    ],
)
def test_usage_errors_exit_2(args):
    r = knock("-n", *args)
    assert r.returncode == 2, r.stderr
    assert r.stdout == b""
    assert b"knock.sh: error:" in r.stderr


def test_usage_error_never_echoes_the_secret():
    r = knock("192.0.2.1", "99999", "Hidden-Secret")
    assert r.returncode == 2
    assert b"Hidden-Secret" not in r.stderr


def test_empty_secret_from_stdin_is_a_usage_error():
    r = knock("-n", "-s", "198.51.100.7", "192.0.2.1", "7000", "-", stdin="\n")
    assert r.returncode == 2


def test_help():
    r = knock("-h")
    assert r.returncode == 0
    assert b"usage: knock.sh" in r.stdout


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_sends_one_datagram_on_loopback(family, host):
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} here")
    with sock:
        sock.settimeout(5)
        port = sock.getsockname()[1]
        r = knock("-s", host, "-t", str(T), host, str(port), "-", stdin="loop-secret\n")
        assert r.returncode == 0, r.stderr
        assert r.stdout == b""
        data, _ = sock.recvfrom(4096)
    assert data == ref_payload("loop-secret", host, T)
    assert len(data) == 65


def test_is_executable():
    assert KNOCK.stat().st_mode & stat.S_IXUSR


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is required (apt-get install shellcheck)"
    r = subprocess.run([shellcheck, str(KNOCK)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_repeat_sends_the_same_datagram_count_times_within_two_seconds():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        started = time.monotonic()
        r = knock("-r", "5", "-s", "127.0.0.1", "-t", str(T), "127.0.0.1", str(port), "-", stdin="loop-secret\n")
        took = time.monotonic() - started
        assert r.returncode == 0, r.stderr
        got = {sock.recvfrom(4096)[0] for _ in range(5)}
        assert got == {ref_payload("loop-secret", "127.0.0.1", T)}
        assert 1.6 <= took < 10  # 4 gaps of 0.4 s (the upper bound only catches a hang)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recvfrom(4096)  # exactly 5


def test_awp_knock_repeat_sends_copies_and_bounds_the_count():
    from awp.errors import UsageError
    from awp.knockd.client import send_knock

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        gaps = []
        send_knock("127.0.0.1", str(port), "loop-secret", "127.0.0.1", repeat=3, sleep=gaps.append)
        data = [sock.recvfrom(4096)[0] for _ in range(3)]
        assert len(set(data)) == 1 and len(data[0]) == 65 and gaps == [0.4, 0.4]
        for bad in (0, 6):
            with pytest.raises(UsageError):
                send_knock("127.0.0.1", str(port), "loop-secret", repeat=bad)
