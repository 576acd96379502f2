"""A grant as a fleet message: one line of text and an HMAC-SHA256 under the fleet key.

    awp1 <id> <node> <action> <port> <src> <expires> <sent> <mac>

id: 16 hex digits, random per message; action: open or close; expires: the open's absolute
end (unix seconds; 0 for a close); sent: unix milliseconds. The MAC covers every field before
it, in this order, exactly as written, so a message altered in Redis does not verify. Pure:
no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from dataclasses import dataclass

VERSION = "awp1"
_LINE_RE = re.compile(r"awp1 ([0-9a-f]{16}) ([A-Za-z0-9][A-Za-z0-9._-]{0,63}) (open|close) ([0-9]{1,5}) "
                      r"([0-9A-Fa-f.:]{2,45}) ([0-9]{1,12}) ([0-9]{1,15}) ([0-9a-f]{64})", re.ASCII)
MAX_LINE = 256


class BadMessage(ValueError):
    """A fleet message that is malformed or whose MAC does not verify (reason in args[0])."""


@dataclass(frozen=True)
class GrantMessage:
    id: str
    node: str
    action: str  # "open" or "close"
    port: int
    src: str  # the knocker's address, as ipaddress prints it
    expires: int  # unix seconds; 0 for a close
    sent: int  # unix milliseconds

    @classmethod
    def new(cls, node: str, action: str, port: int, src, expires: int, now: float) -> GrantMessage:
        return cls(os.urandom(8).hex(), node, action, port, str(src), int(expires), int(now * 1000))

    @property
    def key(self) -> str:
        """The live-grant field this message is about: port and source."""
        return f"{self.port}|{self.src}"

    def body(self) -> str:
        return f"{VERSION} {self.id} {self.node} {self.action} {self.port} {self.src} {self.expires} {self.sent}"

    def sign(self, key: bytes) -> str:
        body = self.body()
        return f"{body} {_mac(key, body)}"


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode("ascii"), hashlib.sha256).hexdigest()


def verify(key: bytes, line) -> GrantMessage:
    """The message of a signed line, or BadMessage: malformed, or a MAC that does not verify."""
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError:
            raise BadMessage("not ASCII") from None
    if not isinstance(line, str) or len(line) > MAX_LINE:
        raise BadMessage("malformed")
    match = _LINE_RE.fullmatch(line)
    if not match:
        raise BadMessage("malformed")
    body, mac = line[:-65], match.group(8)
    if not hmac.compare_digest(_mac(key, body), mac):
        raise BadMessage("bad-mac")
    msg_id, node, action, port, src, expires, sent = match.groups()[:7]
    try:
        canonical = str(ipaddress.ip_address(src))
    except ValueError:
        raise BadMessage("malformed") from None
    if canonical != src or not 1 <= int(port) <= 65535:
        raise BadMessage("malformed")
    return GrantMessage(msg_id, node, action, int(port), src, int(expires), int(sent))
