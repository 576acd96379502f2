"""Parsing of NFLOG netlink messages, on buffers crafted here with struct (no kernel)."""

from __future__ import annotations

import ipaddress
import random
import socket
import struct

import pytest

from awp.knockd import nflog
from awp.knockd.nflog import Packet, parse_ip_udp, parse_messages

SRC4, DST4 = "198.18.200.2", "198.18.200.1"
SRC6, DST6 = "2001:2:0:200::2", "2001:2:0:200::1"
KNOCK = b"a" * 64 + b"\n"


def align4(raw: bytes) -> bytes:
    return raw + b"\0" * (-len(raw) % 4)


def udp(sport: int, dport: int, payload: bytes, ulen: int | None = None) -> bytes:
    ulen = 8 + len(payload) if ulen is None else ulen
    return struct.pack("!HHHH", sport, dport, ulen, 0) + payload


def ipv4(l4: bytes, *, proto=17, frag=0, options=b"", total=None, src=SRC4, dst=DST4) -> bytes:
    ihl = 5 + len(options) // 4
    total = ihl * 4 + len(l4) if total is None else total
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )
    return header + options + l4


def ipv6(l4: bytes, *, nexthdr=17, ext=b"", plen=None, src=SRC6, dst=DST6) -> bytes:
    plen = len(ext) + len(l4) if plen is None else plen
    header = struct.pack(
        "!IHBB16s16s", 0x60000000, plen, nexthdr, 64,
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed,
    )
    return header + ext + l4


def nlattr(atype: int, value: bytes) -> bytes:
    return align4(struct.pack("=HH", 4 + len(value), atype) + value)


def nlmsg(body: bytes, mtype: int = nflog.MSG_PACKET, seq: int = 0) -> bytes:
    return align4(struct.pack("=IHHII", 16 + len(body), mtype, 0, seq, 0) + body)


def packet_msg(family: int, ip: bytes, extra_attrs: bytes = b"") -> bytes:
    nfgen = struct.pack("!BBH", family, 0, 4747)
    attrs = nlattr(10, b"awp\0") + extra_attrs + nlattr(nflog.NFULA_PAYLOAD, ip)
    return nlmsg(nfgen + attrs)


def v4_msg(payload: bytes = KNOCK, sport: int = 40001) -> bytes:
    return packet_msg(socket.AF_INET, ipv4(udp(sport, 2000, payload)))


def v6_msg(payload: bytes = KNOCK, sport: int = 40001) -> bytes:
    return packet_msg(socket.AF_INET6, ipv6(udp(sport, 2000, payload)))


def test_ipv4_udp() -> None:
    assert parse_messages(v4_msg()) == [
        Packet(socket.AF_INET, ipaddress.ip_address(SRC4), ipaddress.ip_address(DST4),
               40001, 2000, KNOCK, 65)
    ]


def test_ipv6_udp() -> None:
    assert parse_messages(v6_msg()) == [
        Packet(socket.AF_INET6, ipaddress.ip_address(SRC6), ipaddress.ip_address(DST6),
               40001, 2000, KNOCK, 65)
    ]


def test_several_messages_in_one_buffer_keep_their_order() -> None:
    ack = nlmsg(struct.pack("=i", 0) + b"\0" * 16, mtype=nflog.NLMSG_ERROR)
    tcp = packet_msg(socket.AF_INET, ipv4(b"\0" * 20, proto=6))
    buf = v4_msg(b"one", 1) + ack + v6_msg(b"two", 2) + tcp + v4_msg(b"three", 3)
    got = parse_messages(buf)
    assert [(p.payload, p.sport, p.family) for p in got] == [
        (b"one", 1, socket.AF_INET), (b"two", 2, socket.AF_INET6), (b"three", 3, socket.AF_INET)
    ]


def test_truncated_copy_keeps_the_real_length() -> None:
    copied = b"k" * (256 - 28)
    ip = ipv4(udp(40001, 2000, copied, ulen=8 + 65000), total=28 + 65000)
    (packet,) = parse_messages(packet_msg(socket.AF_INET, ip))
    assert packet.length == 65000
    assert packet.payload == copied


def test_truncated_copy_ipv6() -> None:
    copied = b"k" * (256 - 48)
    ip = ipv6(udp(40001, 2000, copied, ulen=8 + 65000), plen=8 + 65000)
    (packet,) = parse_messages(packet_msg(socket.AF_INET6, ip))
    assert (packet.length, packet.payload) == (65000, copied)


def test_udp_length_shorter_than_ip_trims_the_payload() -> None:
    ip = ipv4(udp(1, 2000, KNOCK + b"trailer", ulen=8 + 65))
    assert parse_ip_udp(socket.AF_INET, ip).payload == KNOCK


@pytest.mark.parametrize("ulen", [0, 7, 8 + 66])
def test_impossible_udp_length_is_dropped(ulen: int) -> None:
    assert parse_ip_udp(socket.AF_INET, ipv4(udp(1, 2000, KNOCK, ulen=ulen))) is None
    assert parse_ip_udp(socket.AF_INET6, ipv6(udp(1, 2000, KNOCK, ulen=ulen))) is None


def test_empty_udp_payload() -> None:
    packet = parse_ip_udp(socket.AF_INET, ipv4(udp(1, 2000, b"")))
    assert (packet.payload, packet.length) == (b"", 0)


def test_ipv4_options_are_skipped_by_ihl() -> None:
    ip = ipv4(udp(1, 2000, KNOCK), options=b"\x01\x01\x01\x00" * 2)
    assert parse_ip_udp(socket.AF_INET, ip).payload == KNOCK


@pytest.mark.parametrize("frag", [0x2000, 0x0001, 0x2005, 0x1FFF])
def test_ipv4_fragments_are_skipped(frag: int) -> None:
    assert parse_ip_udp(socket.AF_INET, ipv4(udp(1, 2000, KNOCK), frag=frag)) is None


def test_ipv4_dont_fragment_is_fine() -> None:
    assert parse_ip_udp(socket.AF_INET, ipv4(udp(1, 2000, KNOCK), frag=0x4000)) is not None


def test_ipv6_skips_hop_by_hop_and_destination_options() -> None:
    hbh = bytes([60, 0]) + b"\x01\x04\0\0\0\0"  # next: dst options, 8 bytes, PadN
    dst = bytes([17, 1]) + b"\x01\x0c" + b"\0" * 12  # next: UDP, 16 bytes
    ip = ipv6(udp(1, 2000, KNOCK), nexthdr=0, ext=hbh + dst)
    assert parse_ip_udp(socket.AF_INET6, ip).payload == KNOCK


def test_ipv6_fragment_header_is_dropped() -> None:
    frag = struct.pack("!BBHI", 17, 0, 0x0001, 1234)  # first fragment, more follow
    ip = ipv6(udp(1, 2000, KNOCK), nexthdr=44, ext=frag)
    assert parse_ip_udp(socket.AF_INET6, ip) is None


def test_ipv6_endless_extension_chain_is_dropped() -> None:
    ext = bytes([0, 0]) + b"\0" * 6
    ip = ipv6(udp(1, 2000, KNOCK), nexthdr=0, ext=ext * 20)
    assert parse_ip_udp(socket.AF_INET6, ip) is None


@pytest.mark.parametrize(
    "family, ip",
    [
        (socket.AF_INET, ipv4(b"\0" * 20, proto=6)),
        (socket.AF_INET, ipv4(b"\x08\0\0\0\0\0\0\0", proto=1)),
        (socket.AF_INET6, ipv6(b"\x80\0\0\0\0\0\0\0", nexthdr=58)),
        (socket.AF_INET6, ipv4(udp(1, 2000, KNOCK))),  # family and version disagree
        (socket.AF_INET, ipv6(udp(1, 2000, KNOCK))),
        (socket.AF_UNSPEC, ipv4(udp(1, 2000, KNOCK))),
        (7, ipv4(udp(1, 2000, KNOCK))),
    ],
)
def test_non_udp_and_mismatched_families_are_dropped(family: int, ip: bytes) -> None:
    assert parse_ip_udp(family, ip) is None
    assert parse_messages(packet_msg(family, ip)) == []


@pytest.mark.parametrize(
    "buf",
    [
        b"",
        b"\0" * 16,  # nlmsg_len 0: must not loop
        b"\0" * 3,
        struct.pack("=IHHII", 15, nflog.MSG_PACKET, 0, 0, 0),  # shorter than a header
        struct.pack("=IHHII", 4096, nflog.MSG_PACKET, 0, 0, 0),  # longer than the buffer
        nlmsg(b""),  # no nfgenmsg
        nlmsg(struct.pack("!BBH", 2, 0, 1)),  # no attributes
        nlmsg(struct.pack("!BBH", 2, 0, 1) + struct.pack("=HH", 0, 9) * 4),  # zero attr len
        nlmsg(struct.pack("!BBH", 2, 0, 1) + struct.pack("=HH", 200, 9) + b"\0" * 8),
        nlmsg(struct.pack("!BBH", 2, 0, 1) + nlattr(9, b"")),  # empty payload
        packet_msg(socket.AF_INET, ipv4(b"")[:19]),
        packet_msg(socket.AF_INET, ipv4(udp(1, 2, b"")[:7])),
        packet_msg(socket.AF_INET6, ipv6(b"")[:39]),
        packet_msg(socket.AF_INET, b"\x4f" + ipv4(udp(1, 2000, b"abc"))[1:]),  # IHL 60 > data
        packet_msg(socket.AF_INET, b"\x44" + ipv4(udp(1, 2000, b"abc"))[1:]),  # IHL 16 < 20
    ],
)
def test_malformed_input_yields_nothing(buf: bytes) -> None:
    assert parse_messages(buf) == []


def test_attribute_flags_are_masked_off_the_type() -> None:
    nfgen = struct.pack("!BBH", socket.AF_INET, 0, 1)
    attr = nlattr(nflog.NFULA_PAYLOAD | nflog.NLA_F_NET_BYTEORDER, ipv4(udp(1, 2000, KNOCK)))
    nested = nlattr(nflog.NFULA_PAYLOAD | nflog.NLA_F_NESTED, ipv4(udp(1, 2000, KNOCK)))
    assert parse_messages(nlmsg(nfgen + attr))[0].payload == KNOCK
    assert parse_messages(nlmsg(nfgen + nested))[0].payload == KNOCK


def test_odd_sized_attributes_are_padded_to_four() -> None:
    odd = nlattr(8, b"\x01\x02\x03\x04\x05") + nlattr(10, b"x\0")  # 9 and 6 bytes long
    assert parse_messages(packet_msg(socket.AF_INET, ipv4(udp(1, 2000, KNOCK)), odd))


def test_unpadded_last_attribute_and_message_still_parse() -> None:
    ip = ipv4(udp(1, 2000, b"abc"))  # 31 bytes: attr length 35, not a multiple of 4
    body = struct.pack("!BBH", socket.AF_INET, 0, 1) + struct.pack("=HH", 35, 9) + ip
    buf = struct.pack("=IHHII", 16 + len(body), nflog.MSG_PACKET, 0, 0, 0) + body
    assert parse_messages(buf)[0].payload == b"abc"


def test_misaligned_attribute_length_does_not_raise() -> None:
    ip = ipv4(udp(1, 2000, KNOCK))
    body = struct.pack("!BBH", socket.AF_INET, 0, 1) + struct.pack("=HH", 7, 10) + ip
    assert isinstance(parse_messages(nlmsg(body)), list)


def test_every_truncation_of_a_valid_buffer_is_safe() -> None:
    buf = v4_msg() + v6_msg()
    first = len(v4_msg())
    for cut in range(len(buf)):
        got = parse_messages(buf[:cut])
        assert len(got) == (1 if cut >= first else 0)


def test_random_garbage_and_mutations_never_raise() -> None:
    rng = random.Random(4747)
    valid = v4_msg() + v6_msg()
    for _ in range(3000):
        junk = rng.randbytes(rng.randrange(0, 300))
        assert all(isinstance(p, Packet) for p in parse_messages(junk))
        mutated = bytearray(valid)
        for _ in range(rng.randrange(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        assert all(isinstance(p, Packet) for p in parse_messages(bytes(mutated)))
        for family in (socket.AF_INET, socket.AF_INET6):
            parse_ip_udp(family, junk)


def test_config_message_layout() -> None:
    msg = nflog.config_message(7, socket.AF_UNSPEC, 4747, nlattr(nflog.NFULA_CFG_CMD, b"\x01"))
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, mtype, seq, pid) == (len(msg), 0x0401, 7, 0)
    assert flags == nflog.NLM_F_REQUEST | nflog.NLM_F_ACK
    assert struct.unpack_from("!BBH", msg, 16) == (socket.AF_UNSPEC, 0, 4747)
    assert nflog.parse_attrs(msg[20:]) == {nflog.NFULA_CFG_CMD: b"\x01"}


@pytest.mark.parametrize(
    "kwargs",
    [{"group": 70000}, {"group": -1}, {"group": True}, {"group": 1, "copy_range": 65536},
     {"group": 1, "qthresh": -1}, {"group": 1, "timeout_cs": 2**32}],
)
def test_bad_arguments_are_refused_before_any_socket(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        nflog.NflogSocket(**kwargs)


def test_adaptive_batching_follows_the_rate_it_sees() -> None:
    class FakeSocket:
        qthresh = 1

        def __init__(self):
            self.asked = []

        def set_batching(self, qthresh, timeout_cs):
            self.asked.append((qthresh, timeout_cs))
            self.qthresh = qthresh

    b, sock = nflog.AdaptiveBatching(), FakeSocket()
    assert [b.want(r) for r in (0, 100, 4999, 5000, 10_000, 50_000, 200_000, 10**7)] == [1, 1, 1, 2, 4, 16, 64, 64]
    b.update(sock, 0, 0.0)
    b.update(sock, 50_000, 0.25)  # 200,000 pps over the first window
    b.update(sock, 12_500, 0.5)  # 50,000 pps
    b.update(sock, 10, 0.75)  # quiet again
    b.update(sock, 10, 0.8)  # inside a window: nothing asked
    assert sock.asked == [(64, 1), (16, 1), (1, None)]
