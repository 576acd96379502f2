"""awp.otp against an independent reference of the xt_pknock wire format."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from pknock_ref import ref_mac, ref_payload

from awp import otp

V4 = ipaddress.ip_address("198.51.100.7")
V6 = ipaddress.ip_address("2001:db8::7")
SECRET = "s3cret-door"
KEY = SECRET.encode()
NOW = 1_700_000_000.0
M = int(NOW // 60)


@pytest.mark.parametrize("addr", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("t", [0.0, 59.9, 60.0, NOW, NOW + 3600 * 24 * 365, 2.0**32 * 60 - 1])
def test_mac_matches_reference(addr, t):
    assert otp.mac_hex(KEY, addr, otp.minute_of(t)) == ref_mac(SECRET, str(addr), t)
    assert otp.build_payload(KEY, addr, otp.minute_of(t)) == ref_payload(SECRET, str(addr), t)


def test_utf8_secret_matches_reference():
    assert otp.mac_hex("pässwörd".encode(), V4, M) == ref_mac("pässwörd", str(V4), NOW)


def test_minute_of():
    assert otp.minute_of(0) == 0
    assert otp.minute_of(59.999) == 0
    assert otp.minute_of(60) == 1
    assert otp.minute_of(NOW) == M


def test_build_payload_trailers():
    mac = otp.mac_hex(KEY, V4, M).encode()
    assert otp.build_payload(KEY, V4, M) == mac + b"\n"
    assert otp.build_payload(KEY, V4, M, b"\0") == mac + b"\0"
    assert otp.build_payload(KEY, V4, M, b"") == mac
    with pytest.raises(ValueError):
        otp.build_payload(KEY, V4, M, b"\r\n")


def test_minute_out_of_range():
    for minute in (-1, 2**32):
        with pytest.raises(ValueError):
            otp.mac_hex(KEY, V4, minute)


MAC = ref_mac(SECRET, str(V4), NOW)


@pytest.mark.parametrize(
    "data",
    [MAC.encode(), MAC.encode() + b"\n", MAC.encode() + b"\0", MAC.encode() + b" ", MAC.encode() + b"\r",
     MAC.encode() + b"a", MAC.encode() + b"\xff"],
    ids=["bare-64", "newline-65", "nul-65", "space-65", "cr-65", "hex-65", "0xff-65"],
)
def test_parse_well_formed(data):
    assert otp.parse_payload(data) == MAC


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"a",
        MAC.encode()[:63],
        MAC.encode() + b"\n\n",
        MAC.encode() + b"\n\0",
        MAC.upper().encode(),
        MAC.upper().encode() + b"\n",
        b"g" + MAC.encode()[1:],
        b" " + MAC.encode()[1:],
        MAC.encode()[:63] + b"\n",
        "é".encode() + MAC.encode()[2:],
        b"\n" + MAC.encode(),
        b"a" * 65000,
    ],
    ids=[
        "empty", "one", "63", "66-nl-nl", "66-nl-nul",
        "upper", "upper-nl", "non-hex", "leading-space", "63-nl", "non-ascii",
        "leading-nl", "65000",
    ],
)
def test_parse_malformed(data):
    assert otp.parse_payload(data) is None


def test_all_zeros_is_well_formed_but_never_matches():
    zeros = otp.parse_payload(b"0" * 64 + b"\n")
    assert zeros == "0" * 64
    assert otp.match_minute(zeros, KEY, V4, M) is None


@pytest.mark.parametrize("addr", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_skew_accepted(addr, offset):
    candidate = ref_mac(SECRET, str(addr), NOW + 60 * offset)
    assert otp.match_minute(candidate, KEY, addr, M) == M + offset


@pytest.mark.parametrize("offset", [-2, 2, -60, 60])
def test_skew_rejected(offset):
    candidate = ref_mac(SECRET, str(V4), NOW + 60 * offset)
    assert otp.match_minute(candidate, KEY, V4, M) is None


def test_wider_skew():
    candidate = ref_mac(SECRET, str(V4), NOW - 120)
    assert otp.match_minute(candidate, KEY, V4, M, skew=2) == M - 2


def test_zero_skew():
    assert otp.match_minute(ref_mac(SECRET, str(V4), NOW), KEY, V4, M, skew=0) == M
    assert otp.match_minute(ref_mac(SECRET, str(V4), NOW + 60), KEY, V4, M, skew=0) is None


def test_near_epoch_does_not_crash():
    assert otp.match_minute(ref_mac(SECRET, str(V4), 0), KEY, V4, 0) == 0


@pytest.mark.parametrize(
    "other",
    ["198.51.100.8", "2001:db8::8", "::ffff:198.51.100.7"],
)
def test_other_address_does_not_match(other):
    candidate = ref_mac(SECRET, other, NOW)
    assert otp.match_minute(candidate, KEY, V4, M) is None


def test_other_secret_does_not_match():
    candidate = ref_mac("another", str(V4), NOW)
    assert otp.match_minute(candidate, KEY, V4, M) is None


def test_garbage_candidate_does_not_match():
    assert otp.match_minute("zz", KEY, V4, M) is None
    assert otp.match_minute("é" * 64, KEY, V4, M) is None


# --- replay cache -----------------------------------------------------------

H1, H2, H3 = ("1" * 64, "2" * 64, "3" * 64)


@pytest.fixture
def cache_path(tmp_path):
    return tmp_path / "var" / "lib" / "replay-cache"


def new_cache(path, **kw):
    cache = otp.ReplayCache(path, **kw)
    cache.load()
    return cache


def test_missing_file_is_empty(cache_path):
    cache = new_cache(cache_path)
    assert not cache.seen(H1)
    assert len(cache) == 0


def test_seen_after_add(cache_path):
    cache = new_cache(cache_path)
    cache.add(H1, M, M)
    assert cache.seen(H1)
    assert not cache.seen(H2)


def test_persisted_across_restart(cache_path):
    new_cache(cache_path).add(H1, M, M)
    restarted = new_cache(cache_path)
    assert restarted.seen(H1)
    assert cache_path.read_text() == f"{M} {H1}\n"


def test_file_mode_0600_and_no_temp_files(cache_path):
    cache = new_cache(cache_path)
    for i, h in enumerate((H1, H2, H3)):
        cache.add(h, M, M + i % 2)
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600
    assert sorted(p.name for p in cache_path.parent.iterdir()) == ["replay-cache"]


def test_existing_loose_mode_is_tightened(cache_path):
    cache_path.parent.mkdir(parents=True)
    cache_path.write_text("")
    cache_path.chmod(0o644)
    new_cache(cache_path).add(H1, M, M)
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600


def test_bounded_size_evicts_oldest(cache_path):
    cache = new_cache(cache_path, max_entries=3)
    macs = [f"{i:064x}" for i in range(5)]
    for i, h in enumerate(macs):
        cache.add(h, M - 1 + (i % 3 == 0), M)
    assert len(cache) == 3
    assert len(cache_path.read_text().splitlines()) == 3
    assert cache.seen(macs[4])
    assert cache.seen(macs[3])


def test_evicts_by_minute_not_by_insertion(cache_path):
    cache = new_cache(cache_path, max_entries=2)
    cache.add(H1, M + 1, M)
    cache.add(H2, M - 1, M)
    cache.add(H3, M, M)
    assert cache.seen(H1) and cache.seen(H3) and not cache.seen(H2)


def test_old_minutes_are_pruned(cache_path):
    cache = new_cache(cache_path)
    cache.add(H1, M, M)
    cache.add(H2, M + 3, M + 3)
    assert cache.seen(H1), "kept while it could still be valid, with a margin"
    cache.add(H3, M + 4, M + 4)
    assert not cache.seen(H1)
    assert cache.seen(H2) and cache.seen(H3)
    assert H1 not in cache_path.read_text()


def test_entry_kept_while_it_can_still_be_valid(cache_path):
    """A MAC of minute m is accepted until now = m + 1 (skew 1); the cache must outlive that."""
    cache = new_cache(cache_path)
    cache.add(H1, M, M - 1)
    for now in range(M - 1, M + 2):
        cache.add(f"{now:064x}", now, now)
        assert cache.seen(H1)


def test_re_add_does_not_duplicate(cache_path):
    cache = new_cache(cache_path)
    cache.add(H1, M, M)
    cache.add(H1, M, M)
    assert cache_path.read_text() == f"{M} {H1}\n"


def test_corrupt_lines_are_skipped(cache_path, caplog):
    good, upper = "ab" * 32, "AB" * 32
    lines = [f"{M} {H1}", "garbage", f"{M} {upper}", f"99999999999 {H3}", "\xff", f"{M} {good}"]
    cache_path.parent.mkdir(parents=True)
    cache_path.write_bytes("\n".join(lines).encode("latin-1"))
    cache = new_cache(cache_path)
    assert cache.seen(H1) and cache.seen(good)
    assert not cache.seen(H3) and not cache.seen(upper)
    assert "skipped 4 corrupt" in caplog.text
    assert H1 not in caplog.text


def test_oversized_file_is_bounded(cache_path):
    cache_path.parent.mkdir(parents=True)
    lines = "".join(f"{M} {i:064x}\n" for i in range(100))
    cache_path.write_text(lines)
    cache = new_cache(cache_path, max_entries=10)
    assert len(cache) <= 10


def test_failed_write_leaves_no_temp_file(cache_path, monkeypatch):
    cache = new_cache(cache_path)
    cache.add(H1, M, M)

    def boom(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(otp.os, "replace", boom)
    with pytest.raises(OSError):
        cache.add(H2, M, M)
    assert sorted(p.name for p in cache_path.parent.iterdir()) == ["replay-cache"]
    assert new_cache(cache_path).seen(H1)
