"""Independent reference of the xt_pknock UDP-mode wire format, written from the spec.

Deliberately does not import awp: tests compare awp.otp and client/knock.sh to this.
"""

import hashlib
import hmac
import ipaddress
import struct


def ref_mac(secret: str, addr: str, unix_time: float) -> str:
    """Lowercase hex HMAC-SHA256(secret UTF-8, packed address + uint32 LE minute)."""
    message = ipaddress.ip_address(addr).packed + struct.pack("<I", int(unix_time // 60))
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def ref_payload(secret: str, addr: str, unix_time: float) -> bytes:
    """The 65-byte datagram: the MAC and a newline."""
    return ref_mac(secret, addr, unix_time).encode("ascii") + b"\n"
