"""Shared limits in Redis: each decision one Lua script, atomic on the server (as KumoMTA's).

redis-py's asyncio client, imported here and nowhere else in sender (the optional ``redis``
extra). A key ``sender:limit:KEY`` is a hash holding ``t`` (the GCRA time) and ``b`` (the
backoff, :meth:`~sender.pacing.limits.Backoff.encode`); it expires a day after its last
use, so a domain written to once costs nothing for ever. Connection slots are a sorted
set ``sender:lease:KEY`` scored by when each holder's lease expires.

The script is :func:`~sender.pacing.limits.gcra` in Lua, and must stay the same rule.
Lua numbers come back from Redis as integers, so the script returns times as text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis.asyncio
import redis.exceptions

from sender.errors import ConfigurationError
from sender.pacing.limits import Grant
from sender.storeurl import redacted_store_url

__all__ = ["RedisLimiter"]

_PREFIX = "sender:limit:"
_LEASES = "sender:lease:"
_IDLE_TTL = 86_400  # seconds a key outlives its last use

# KEYS: the limit keys; ARGV: now, force (1/0), idle ttl, then one interval per key.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local tats, waits, denied = {}, {}, false
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('HGET', key, 't') or '0')
  tats[i] = tat
  if tat - now > 1e-9 then
    denied = true
    waits[i] = string.format('%.17g', tat - now)
  else
    waits[i] = '0'
  end
end
if ARGV[2] == '1' or not denied then
  for i, key in ipairs(KEYS) do
    local tat = math.max(tats[i], now) + tonumber(ARGV[i + 3])
    redis.call('HSET', key, 't', string.format('%.17g', tat))
    redis.call('EXPIRE', key, ARGV[3])
    waits[i] = '0'
  end
end
waits[#KEYS + 1] = redis.call('HGET', KEYS[#KEYS], 'b') or ''
return waits
"""

# KEYS[1]: the limit key; ARGV: old, new ('' for none).
_SWAP = """
local stored = redis.call('HGET', KEYS[1], 'b') or ''
if stored == ARGV[1] then
  if ARGV[2] == '' then
    redis.call('HDEL', KEYS[1], 'b')
  else
    redis.call('HSET', KEYS[1], 'b', ARGV[2])
    redis.call('EXPIRE', KEYS[1], ARGV[3])
  end
  return ARGV[2]
end
return stored
"""

# KEYS[1]: the lease set; ARGV: holder, cap, expires at, now.
_LEASE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
local mine = redis.call('ZSCORE', KEYS[1], ARGV[1])
if mine or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('EXPIRE', KEYS[1], 86400)
  return 1
end
return 0
"""


class RedisLimiter:
    """A :class:`~sender.pacing.limits.Limiter` in the Redis database at ``url``
    (``redis://host:port/db``), shared by every process and host that names it."""

    def __init__(self, url: str, /) -> None:
        self._url = url
        self._name = redacted_store_url(url)
        try:
            self._redis: Any = redis.asyncio.Redis.from_url(url, decode_responses=True)
        except ValueError as exc:
            raise ConfigurationError(
                f"limits {self._name!r} is not a Redis URL ({exc})", setting="limits"
            ) from exc
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._swap = self._redis.register_script(_SWAP)
        self._lease = self._redis.register_script(_LEASE)

    def __reduce__(self) -> tuple[type[RedisLimiter], tuple[str]]:
        """Pickled, it is its URL: a worker process opens its own client (through a private
        pipe only; the URL may hold a password)."""
        return (type(self), (self._url,))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """redis-py's errors, the one place they enter, as one clear ConfigurationError."""
        try:
            yield
        except redis.exceptions.RedisError as exc:
            raise ConfigurationError(
                f"limits {self._name}: {exc or type(exc).__name__}", setting="limits"
            ) from exc

    async def acquire(
        self, keys: Sequence[tuple[str, float]], /, *, now: float, force: bool = False
    ) -> Grant:
        if not keys:
            return Grant(())
        names = [_PREFIX + key for key, _ in keys]
        args = [repr(now), "1" if force else "0", _IDLE_TTL, *(repr(i) for _, i in keys)]
        with self._errors():
            answer = await self._acquire(keys=names, args=args)
        *waits, backoff = answer
        return Grant(tuple(float(wait) for wait in waits), backoff or None)

    async def swap_backoff(self, key: str, /, *, old: str | None, new: str | None) -> str | None:
        with self._errors():
            stored = await self._swap(keys=[_PREFIX + key], args=[old or "", new or "", _IDLE_TTL])
        return str(stored) or None

    async def lease(self, key: str, /, *, holder: str, cap: int, ttl: float, now: float) -> bool:
        with self._errors():
            taken = await self._lease(
                keys=[_LEASES + key], args=[holder, cap, repr(now + ttl), repr(now)]
            )
        return bool(taken)

    async def release(self, key: str, /, *, holder: str) -> None:
        with self._errors():
            await self._redis.zrem(_LEASES + key, holder)

    async def aclose(self) -> None:
        with self._errors():
            await self._redis.aclose()
