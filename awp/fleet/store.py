"""What awp keeps in Redis, and the few commands that read and write it.

    awp:replay:<sha256 of the MAC>  the node that accepted it; SET NX PX (first accept wins),
                                    gone once the MAC can no longer be valid
    awp:grants:log                  a stream of signed grant messages (XADD MAXLEN ~ STREAM_MAX)
    awp:grants                      hash: "<port>|<src>" -> the signed message of the live open
    awp:grants:expiry               zset: the same fields, scored by their absolute expiry

Nothing here is a secret, and nothing here opens a door by itself (see message.py).
"""

from __future__ import annotations

import hashlib

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from awp.fleet.keys import Credentials

REPLAY = "awp:replay:"
LOG = "awp:grants:log"
LIVE = "awp:grants"
EXPIRY = "awp:grants:expiry"
STREAM_MAX = 10000
PACKET_TIMEOUT = 0.2  # the most the packet path waits on Redis per knock (awp(8), FLEET)
WORKER_TIMEOUT = 2.0  # the consumer's and publisher's socket timeout
BLOCK_MS = 500  # XREAD BLOCK: how long the consumer waits for news before it looks again
Error = redis.RedisError

_PRUNE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, f in ipairs(gone) do redis.call('HDEL', KEYS[1], f); redis.call('ZREM', KEYS[2], f) end
return #gone
"""


def connect(url: str, credentials: Credentials, timeout: float, ca_file: str | None = None) -> redis.Redis:
    """A client that never retries on its own: a failure is the fleet's to handle."""
    extra = {"ssl_ca_certs": ca_file} if ca_file and url.startswith("rediss://") else {}
    return redis.Redis.from_url(url, username=credentials.user, password=credentials.password,
                                socket_timeout=timeout, socket_connect_timeout=timeout,
                                retry=Retry(NoBackoff(), 0), decode_responses=True, **extra)


def claim(r: redis.Redis, mac: str, node: str, ttl_ms: int) -> bool:
    """True if this node is the first in the fleet to accept `mac`."""
    key = REPLAY + hashlib.sha256(mac.encode("ascii")).hexdigest()
    return bool(r.set(key, node, nx=True, px=max(1, ttl_ms)))


def claim_many(r: redis.Redis, macs: list[tuple[str, int]], node: str, ttls_ms: list[int]) -> None:
    pipe = r.pipeline(transaction=False)
    for (mac, _minute), ttl in zip(macs, ttls_ms):
        pipe.set(REPLAY + hashlib.sha256(mac.encode("ascii")).hexdigest(), node, nx=True, px=max(1, ttl))
    pipe.execute()


def publish(r: redis.Redis, grants: list[tuple[str, str, str, int]], now: float) -> None:
    """One MULTI for a batch of (signed line, field, action, expires)."""
    pipe = r.pipeline(transaction=True)
    for line, field, action, expires in grants:
        pipe.xadd(LOG, {"m": line}, maxlen=STREAM_MAX, approximate=True)
        if action == "open":
            pipe.hset(LIVE, field, line)
            pipe.zadd(EXPIRY, {field: expires})
        else:
            pipe.hdel(LIVE, field)
            pipe.zrem(EXPIRY, field)
    pipe.eval(_PRUNE, 2, LIVE, EXPIRY, int(now))
    pipe.execute()


def last_id(r: redis.Redis) -> str:
    newest = r.xrevrange(LOG, count=1)
    return newest[0][0] if newest else "0-0"


def live(r: redis.Redis) -> list[str]:
    return list(r.hgetall(LIVE).values())


def read(r: redis.Redis, after: str, block_ms: int = BLOCK_MS) -> list[tuple[str, str]]:
    """(id, signed line) of the stream entries after `after`, waiting up to block_ms for one."""
    found = []
    for _stream, entries in r.xread({LOG: after}, count=500, block=block_ms) or ():
        found += [(entry_id, fields.get("m", "")) for entry_id, fields in entries]
    return found
