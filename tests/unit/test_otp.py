"""awp.otp against an independent reference of the xt_pknock wire format."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

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


@pytest.mark.parametrize("secret", [b"", b"k", b"opensecret1", b"x" * 64, b"y" * 65, "ü€".encode() * 40])
def test_precomputed_key_states_give_the_standard_hmac(secret):
    for packed in (bytes(4), bytes(range(16)), b"\xc6\x12\x01\x02"):
        for minute in (0, 29_000_000, 0xFFFFFFFF):
            message = packed + minute.to_bytes(4, "little")
            assert otp.mac_digest(secret, packed, minute) == hmac.new(secret, message, hashlib.sha256).digest()
