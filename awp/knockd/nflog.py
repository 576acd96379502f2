"""Read UDP knock packets from netfilter's NFLOG (nfnetlink_log), stdlib only.

The firewall logs each advanced-mode knock with ``-j NFLOG --nflog-group G`` and drops it
right after, so the knocker never gets an answer and a stopped listener leaves the port
looking filtered. This module binds group G on a NETLINK_NETFILTER socket and turns the
logged packets back into :class:`Packet` values.

Two layers:

* pure parsers (:func:`parse_messages`, :func:`parse_ip_udp`) over bytes, which never raise
  on hostile or malformed content: anything they cannot read as a complete UDP header is
  skipped;
* :class:`NflogSocket`, the only part that talks to the kernel.

What is returned: UDP only. IPv4 honours IHL and skips fragments (MF set or a non-zero
offset). IPv6 skips at most 8 hop-by-hop, routing and destination-options headers and drops
the packet on anything else before UDP (fragment, AH, ESP, ...). A UDP length field shorter
than 8 or longer than the IP header says was sent is dropped, as the kernel's UDP stack
would. Fragments only reach INPUT when nothing reassembled them: IPv4 always reassembles
before INPUT, IPv6 only when conntrack is in use in the namespace (awp's rules use it). An
honest knock (65 bytes) is never fragmented anyway.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from typing import NamedTuple

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
MSG_PACKET = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
MSG_CONFIG = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG

NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLA_F_NESTED = 1 << 15
NLA_F_NET_BYTEORDER = 1 << 14
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_PF_BIND = 3
NFULNL_CFG_CMD_PF_UNBIND = 4
NFULNL_COPY_PACKET = 2
COPY_RANGE_MAX = 0xFFFF

RECV_BUFSIZE = 256 * 1024
ACK_TIMEOUT = 2.0
ACK_MAX_READS = 64
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
OVERRUN_LOG_INTERVAL = 10.0

IPPROTO_UDP = 17
IPV6_SKIPPABLE = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
IPV6_MAX_EXT = 8

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host order)
_NLMSGERR = struct.Struct("=i")
_NFGENMSG = struct.Struct("!BBH")  # family, version, res_id (big endian)
_NLATTR = struct.Struct("=HH")  # len, type
_UDP = struct.Struct("!HHHH")  # sport, dport, length, checksum

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Packet(NamedTuple):
    """One logged UDP datagram; ``payload`` may be cut to the copy range, ``length`` is not.
    Immutable; a NamedTuple rather than a frozen dataclass because it is made for every
    datagram of a flood (a third of the cost)."""

    family: int
    src: IpAddress
    dst: IpAddress
    sport: int
    dport: int
    payload: bytes
    length: int
    prefix: str = ""  # the logging rule's prefix: "" for knocks, "awp-open PORT" for a simple door


OPEN_PREFIX = "awp-open "  # a simple door with commands completed: "awp-open <protected port>"


# --- pure parsing -------------------------------------------------------------------


def _align4(n: int) -> int:
    return (n + 3) & ~3


def iter_nlmsgs(buf: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Yield (type, seq, body) for every complete netlink message in ``buf``."""
    off, end = 0, len(buf)
    while off + _NLMSGHDR.size <= end:
        length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(buf, off)
        if length < _NLMSGHDR.size or off + length > end:
            return
        yield mtype, seq, buf[off + _NLMSGHDR.size : off + length]
        off += _align4(length)


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """Netlink attributes by type (flags masked off); the first of a repeated type wins."""
    attrs: dict[int, bytes] = {}
    off, end = 0, len(data)
    while off + _NLATTR.size <= end:
        length, atype = _NLATTR.unpack_from(data, off)
        if length < _NLATTR.size or off + length > end:
            break
        attrs.setdefault(atype & NLA_TYPE_MASK, data[off + _NLATTR.size : off + length])
        off += _align4(length)
    return attrs


def parse_messages(buf: bytes) -> list[Packet]:
    """Every UDP packet carried by the NFULNL_MSG_PACKET messages in ``buf``.

    The listener's hot path under a flood: one pass over the messages and their attributes,
    no intermediate dict (the first NFULA_PAYLOAD of a message is the one read)."""
    packets = []
    off, end = 0, len(buf)
    hdr, attr = _NLMSGHDR.unpack_from, _NLATTR.unpack_from
    while off + 16 <= end:
        length, mtype, _flags, _seq, _pid = hdr(buf, off)
        if length < 16 or off + length > end:
            break
        if mtype == MSG_PACKET and length >= 20:
            payload, prefix = _find_payload(buf, off + 20, off + length, attr)
            if prefix is not None and prefix.startswith(_OPEN):
                packet = parse_open(buf[off + 16], prefix.split(b"\0", 1)[0].decode("ascii", "replace"), payload or b"")
            elif payload is not None:
                packet = parse_ip_udp(buf[off + 16], payload)
            else:
                packet = None
            if packet is not None:
                packets.append(packet)
        off += (length + 3) & ~3
    return packets


_OPEN = OPEN_PREFIX.encode()


def _find_payload(buf: bytes, off: int, end: int, attr) -> tuple[bytes | None, bytes | None]:
    """The message's first NFULA_PAYLOAD and the NFULA_PREFIX before it (the kernel writes the
    prefix first): (payload or None, prefix or None)."""
    prefix = None
    while off + 4 <= end:
        length, atype = attr(buf, off)
        if length < 4 or off + length > end:
            return None, prefix
        atype &= NLA_TYPE_MASK
        if atype == NFULA_PAYLOAD:
            return buf[off + 4 : off + length], prefix
        if atype == NFULA_PREFIX:
            prefix = buf[off + 4 : off + length]
        off += (length + 3) & ~3
    return None, prefix


def parse_open(family: int, prefix: str, data: bytes) -> Packet | None:
    """A simple door's completing knock, logged with prefix "awp-open PORT": its source and
    the door's protected port; None if the prefix or the IP header cannot be read."""
    port_text = prefix[len(OPEN_PREFIX):].strip()
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 and 1 <= int(port_text) <= 65535):
        return None
    if family == socket.AF_INET and len(data) >= 20 and data[0] >> 4 == 4:
        src, dst = ipaddress.IPv4Address(data[12:16]), ipaddress.IPv4Address(data[16:20])
    elif family == socket.AF_INET6 and len(data) >= 40 and data[0] >> 4 == 6:
        src, dst = ipaddress.IPv6Address(data[8:24]), ipaddress.IPv6Address(data[24:40])
    else:
        return None
    port = int(port_text)
    return Packet(family, src, dst, 0, port, b"", 0, f"{OPEN_PREFIX}{port}")


def parse_ip_udp(family: int, data: bytes) -> Packet | None:
    """An IPv4/IPv6 + UDP packet (as NFLOG copies it) or None if it is anything else."""
    if family == socket.AF_INET:
        return _parse_ipv4(data)
    if family == socket.AF_INET6:
        return _parse_ipv6(data)
    return None


def _parse_ipv4(data: bytes) -> Packet | None:
    """The flood's path: one unpack for the IP header's fields and one for UDP's."""
    if len(data) < 28 or data[0] >> 4 != 4:  # no room for a UDP header even at the least IHL
        return None
    ihl = (data[0] & 0x0F) * 4
    total, frag, proto, raw_src, raw_dst = _IPV4.unpack_from(data, 2)
    if ihl < 20 or proto != IPPROTO_UDP or frag & 0x3FFF or total < ihl:
        return None
    return _parse_udp(socket.AF_INET, ipaddress.IPv4Address(raw_src), local4(raw_dst), data, ihl, total - ihl)


_IPV4 = struct.Struct("!H2xHxB2x4s4s")  # from byte 2: total length, frag, protocol, src, dst
_LOCAL: dict[bytes, ipaddress.IPv4Address] = {}
LOCAL_CACHE = 64  # the host's own addresses: a knock's destination is one of a few


def local4(raw: bytes) -> ipaddress.IPv4Address:
    """The IPv4Address of a destination's 4 bytes, made once (making one is 0.4 us, a fifth
    of a datagram's parse). Sources are not kept: a flood's 65,535 would cost megabytes and
    the table would not stay flat."""
    addr = _LOCAL.get(raw)
    if addr is None:
        if len(_LOCAL) >= LOCAL_CACHE:
            _LOCAL.clear()
        addr = _LOCAL[raw] = ipaddress.IPv4Address(raw)
    return addr


def _parse_ipv6(data: bytes) -> Packet | None:
    if len(data) < 40 or data[0] >> 4 != 6:
        return None
    (plen,) = struct.unpack_from("!H", data, 4)
    off = _skip_ipv6_ext(data, data[6])
    if off is None:
        return None
    src = ipaddress.IPv6Address(data[8:24])
    dst = ipaddress.IPv6Address(data[24:40])
    return _parse_udp(socket.AF_INET6, src, dst, data, off, 40 + plen - off)


def _skip_ipv6_ext(data: bytes, nexthdr: int) -> int | None:
    """Offset of the UDP header after the skippable extension headers, or None."""
    off = 40
    for _ in range(IPV6_MAX_EXT):
        if nexthdr == IPPROTO_UDP:
            return off
        if nexthdr not in IPV6_SKIPPABLE or len(data) < off + 2:
            return None
        nexthdr, off = data[off], off + (data[off + 1] + 1) * 8
    return None


def _parse_udp(
    family: int, src: IpAddress, dst: IpAddress, data: bytes, off: int, ip_room: int
) -> Packet | None:
    """The UDP header at ``off`` of the IP packet ``data`` (read in place, no slice of the
    rest); ``ip_room``: bytes the IP header says follow it (UDP header included)."""
    if len(data) < off + _UDP.size:
        return None
    sport, dport, ulen, _csum = _UDP.unpack_from(data, off)
    if ulen < _UDP.size or ulen > ip_room:
        return None
    length = ulen - _UDP.size
    start = off + _UDP.size
    return Packet(family, src, dst, sport, dport, bytes(data[start : start + length]), length)


# --- building config requests ----------------------------------------------------------


def _attr(atype: int, value: bytes) -> bytes:
    raw = _NLATTR.pack(_NLATTR.size + len(value), atype) + value
    return raw + b"\0" * (_align4(len(raw)) - len(raw))


def config_message(seq: int, family: int, res_id: int, attrs: bytes) -> bytes:
    """One NFULNL_MSG_CONFIG request asking for an ACK."""
    body = _NFGENMSG.pack(family, 0, res_id) + attrs
    flags = NLM_F_REQUEST | NLM_F_ACK
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), MSG_CONFIG, flags, seq, 0) + body


def _cmd(command: int) -> bytes:
    return _attr(NFULA_CFG_CMD, bytes([command]))


def _mode_attrs(copy_range: int, qthresh: int | None, timeout_cs: int | None) -> bytes:
    attrs = _attr(NFULA_CFG_MODE, struct.pack("!IBx", copy_range, NFULNL_COPY_PACKET))
    if qthresh is not None:
        attrs += _attr(NFULA_CFG_QTHRESH, struct.pack("!I", qthresh))
    if timeout_cs is not None:
        attrs += _attr(NFULA_CFG_TIMEOUT, struct.pack("!I", timeout_cs))
    return attrs


# --- the socket ------------------------------------------------------------------------


class NflogSocket:
    """A NETLINK_NETFILTER socket bound to one NFLOG group, copying packets.

    The kernel sends a batch when ``qthresh`` packets are queued, its buffer is full, or
    ``timeout_cs`` hundredths of a second passed since the first queued packet. The default
    is no batching (qthresh 1): each packet is sent the moment it is logged, so a lone knock
    reaches the listener in a fraction of a millisecond (with qthresh 100 and 1 cs it waited
    for the 10 ms timer). Under a flood the listener raises qthresh itself
    (:meth:`set_batching`), so that one message carries many packets again and costs the
    kernel and the listener one send and one recv instead of dozens. None leaves the
    kernel default (qthresh 100, timeout 1 s).

    ``pf_bind`` sends the PF_UNBIND/PF_BIND pair old libnetfilter_log examples send. NFLOG
    does not need it since Linux 3.17, and it is not harmless: it makes nfnetlink_log the
    namespace's default logger (net.netfilter.nf_log.2/.10) in place of nf_log_ipv4/6, and
    that stays after the socket is closed. Off unless asked for.

    Closing the socket releases the group (the kernel drops the instances of a closed
    netlink port).
    """

    def __init__(
        self,
        group: int,
        copy_range: int = 256,
        rcvbuf: int = 4 << 20,
        *,
        qthresh: int | None = 1,
        timeout_cs: int | None = None,
        pf_bind: bool = False,
    ):
        _check_args(group, copy_range, qthresh, timeout_cs)
        self.group = group
        self.copy_range = copy_range
        self.qthresh = qthresh
        self.overruns = 0
        self._seq = 0
        self._pending: list[Packet] = []
        self._last_overrun_log = float("-inf")
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self._set_rcvbuf(rcvbuf)
            self._sock.bind((0, 0))
            if pf_bind:
                self._pf_bind()
            self._configure(copy_range, qthresh, timeout_cs)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NflogSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def receive(self, timeout: float | None, max_reads: int = 1) -> list[Packet]:
        """The UDP packets of up to ``max_reads`` netlink messages: the first recv waits up to
        ``timeout``, the others take only what is already queued (the loop a recvmmsg would
        do in one call). [] on timeout; a kernel overrun is counted and reading goes on."""
        if self._pending:
            packets, self._pending = self._pending, []
            return packets
        if self._sock.gettimeout() != 0.0:
            self._sock.setblocking(False)  # the wait is the select below, never a recv's
        if not select.select((self._sock,), (), (), timeout)[0]:
            return []
        packets: list[Packet] = []
        recv = self._sock.recv
        for _ in range(max_reads):
            try:
                data = recv(RECV_BUFSIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self._note_overrun()
                continue
            packets += parse_messages(data)
        return packets

    def set_batching(self, qthresh: int, timeout_cs: int | None) -> None:
        """Change how many packets the kernel queues before it sends (see the class doc), on
        the running group. Not acknowledged: under a flood the answer would queue behind
        thousands of packets; a refused request comes back as an NLMSG_ERROR, which the
        packet parser skips."""
        _check_args(self.group, self.copy_range, qthresh, timeout_cs)
        self._seq += 1
        attrs = _mode_attrs(self.copy_range, qthresh, timeout_cs)
        body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, self.group) + attrs
        self._sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), MSG_CONFIG, NLM_F_REQUEST, self._seq, 0) + body)
        self.qthresh = qthresh

    def _note_overrun(self) -> None:
        self.overruns += 1
        now = time.monotonic()
        if now - self._last_overrun_log >= OVERRUN_LOG_INTERVAL:
            self._last_overrun_log = now
            log.warning("nflog group %d: kernel dropped log messages (overruns=%d)",
                        self.group, self.overruns)

    def _set_rcvbuf(self, size: int) -> None:
        try:  # root may go past net.core.rmem_max
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def _pf_bind(self) -> None:
        for family in (socket.AF_INET, socket.AF_INET6):  # errors ignored: obsolete
            self._request(family, 0, _cmd(NFULNL_CFG_CMD_PF_UNBIND))
            self._request(family, 0, _cmd(NFULNL_CFG_CMD_PF_BIND))

    def _configure(self, copy_range: int, qthresh: int | None, timeout_cs: int | None) -> None:
        err = self._request(socket.AF_UNSPEC, self.group, _cmd(NFULNL_CFG_CMD_BIND))
        if err in (errno.EPERM, errno.EBUSY):
            raise OSError(err, f"cannot bind NFLOG group {self.group}: another process already"
                          " listens on it, or this process lacks CAP_NET_ADMIN")
        if err:
            raise OSError(err, f"cannot bind NFLOG group {self.group}: {os.strerror(err)}")
        mode = _mode_attrs(copy_range, qthresh, timeout_cs)
        err = self._request(socket.AF_UNSPEC, self.group, mode)
        if err:
            raise OSError(err, f"cannot configure NFLOG group {self.group}: {os.strerror(err)}")

    def _request(self, family: int, res_id: int, attrs: bytes) -> int:
        """Send one config request; return the errno of its ACK (0 for success)."""
        self._seq += 1
        self._sock.send(config_message(self._seq, family, res_id, attrs))
        return self._await_ack(self._seq)

    def _await_ack(self, seq: int) -> int:
        self._sock.settimeout(ACK_TIMEOUT)
        for _ in range(ACK_MAX_READS):
            try:
                data = self._sock.recv(RECV_BUFSIZE)
            except TimeoutError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self._note_overrun()
                continue
            self._pending.extend(parse_messages(data))
            for mtype, mseq, body in iter_nlmsgs(data):
                if mtype == NLMSG_ERROR and mseq == seq and len(body) >= _NLMSGERR.size:
                    return -_NLMSGERR.unpack_from(body)[0]
        raise OSError(errno.ETIMEDOUT, f"NFLOG group {self.group}: no answer from the kernel")


def _check_args(
    group: int, copy_range: int, qthresh: int | None, timeout_cs: int | None
) -> None:
    _check_range("group", group, 0, 0xFFFF)
    _check_range("copy_range", copy_range, 0, COPY_RANGE_MAX)
    for name, value in (("qthresh", qthresh), ("timeout_cs", timeout_cs)):
        if value is not None:
            _check_range(name, value, 0, 0xFFFFFFFF)


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}-{hi}, got {value!r}")



class AdaptiveBatching:
    """How much the kernel should batch, from the packet rate the listener sees.

    Idle or at a human pace: qthresh 1, every knock delivered at once. Under a flood: about
    0.4 ms worth of packets a message (rate / PER_PACKET_RATE, a power of two, at most
    ``ceiling``), so the kernel sends and the listener reads one message for many packets
    while a knock waits well under a millisecond for its batch to fill. The flush
    timer (1 cs) only matters when a flood stops mid-batch; the next window drops back to
    qthresh 1."""

    WINDOW = 0.25  # seconds over which the rate is measured
    PER_PACKET_RATE = 2500.0  # packets/s for each packet of qthresh: 10k pps -> 4, 200k -> 64

    def __init__(self, ceiling: int = 64):
        self.ceiling = ceiling
        self.start: float | None = None
        self.count = 0

    def want(self, rate: float) -> int:
        q = 1
        while q * 2 <= min(rate / self.PER_PACKET_RATE, self.ceiling):
            q *= 2
        return q

    def update(self, sock: NflogSocket, packets: int, now: float) -> None:
        """Count `packets` read at `now`; once a window is over, retune `sock` if needed."""
        if self.start is None:
            self.start = now
        self.count += packets
        elapsed = now - self.start
        if elapsed < self.WINDOW:
            return
        q = self.want(self.count / elapsed)
        self.start, self.count = now, 0
        if q != sock.qthresh:
            sock.set_batching(q, 1 if q > 1 else None)
