"""Limits every sending process shares: the rate decision, the backoff, connection slots.

A :class:`~sender.pacing.schedule.Scheduler` keeps its own pending work and priority lane,
but with a :class:`Limiter` it asks the limiter whether one message may leave now, so
two ``sender run``\\ s, a worker and a single send in a web process keep one domain's limit
between them. Each backend makes the decision atomically where its state lives:

- :class:`MemoryLimiter` (here): one process, as the scheduler alone would;
- the store's (``sender.store.sqlite.limits``, ``sender.store.postgres.limits``): processes
  on one machine (a SQLite file, one transaction) or on many (PostgreSQL, one statement);
- Redis (``sender.pacing.redis_limits``): one Lua script, as KumoMTA's throttles do.

The decision is GCRA without burst (:func:`gcra`): each key has a theoretical arrival time
``tat``; a message may leave when ``tat <= now`` for every key asked, and leaving moves each
``tat`` to ``max(tat, now) + interval``. So no sliding window holds more than its limit,
whichever process sends. Times are wall-clock seconds (``Clock.now``): every process on
every host reads the same one (NTP keeps hosts within milliseconds of each other).

Backoff after a throttle reply is a small record (:class:`Backoff`) stored as text beside
the key and changed by compare-and-swap, so its rules live once, here. Connection slots
are leases that expire, so a process that dies never holds one for ever.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol

from sender.errors import ConfigurationError
from sender.storeurl import redacted_store_url

__all__ = [
    "LIMITS_IN_STORE",
    "Backoff",
    "Grant",
    "Limiter",
    "MemoryLimiter",
    "check_limits",
    "gcra",
    "recover",
    "throttle",
]

_EPS = 1e-9  # seconds: float noise, not policy

#: The ``limits`` setting's default: the shared limits live where the outbox is.
LIMITS_IN_STORE = "store"
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def check_limits(value: str, /) -> str:
    """The ``limits`` setting: ``store``, or a Redis URL (``redis://host:port/db``).

    Anything else raises :class:`ConfigurationError` naming ``limits``, with any
    password left out of the message.
    """
    if value.strip().lower() == LIMITS_IN_STORE:
        return LIMITS_IN_STORE
    scheme, sep, rest = value.partition("://")
    if sep and scheme.lower() in _REDIS_SCHEMES and rest.strip():
        return value
    raise ConfigurationError(
        f"limits {redacted_store_url(value)!r} is not a limiter: use store (the default)"
        " or redis://host:port/db",
        setting="limits",
    )


@dataclass(frozen=True, slots=True)
class Grant:
    """A limiter's answer: granted (every key charged), or how long each key must wait."""

    waits: tuple[float, ...]  # per key asked, in order; all 0.0 when granted
    backoff: str | None = None  # the last key's shared backoff (:meth:`Backoff.encode`)

    @property
    def granted(self) -> bool:
        return not any(wait > _EPS for wait in self.waits)

    @property
    def wait(self) -> float:
        """Seconds until every key would allow it (0.0 when granted)."""
        return max(self.waits, default=0.0)


def gcra(
    tats: Sequence[float], intervals: Sequence[float], /, *, now: float, force: bool = False
) -> tuple[tuple[float, ...], tuple[float, ...] | None]:
    """The waits per key, and the new ``tat`` of each key when granted (None when not).

    All or nothing: a message charges every key or none, so a domain permit is never
    spent while the global one is refused. ``force`` charges without asking (a priority
    send, or pushing a key back after a throttle). The one rule: PostgreSQL's
    ``limits_acquire`` and the Redis script repeat it, and tests/test_limits.py checks that
    every backend answers as it does, to the bit.
    """
    waits = tuple(tat - now if tat - now > _EPS else 0.0 for tat in tats)
    if force or not any(waits):
        return (0.0,) * len(tats), tuple(
            max(tat, now) + interval for tat, interval in zip(tats, intervals, strict=True)
        )
    return waits, None


@dataclass(frozen=True, slots=True)
class Backoff:
    """A group slowed by throttle replies: its rate now, and when it was slowed and recovers.

    The rules are the scheduler's own (``RateLimits``: ``backoff_factor``, ``cooldown``,
    ``min_domain_per_minute``), on wall-clock times, so every process reads the same state.
    """

    rate: float  # per minute, now
    reduced_at: float  # wall clock of the last slowdown
    recover_at: float  # wall clock of the next recovery step

    def encode(self) -> str:
        return f"{self.rate!r} {self.reduced_at!r} {self.recover_at!r}"

    @classmethod
    def decode(cls, text: str | None, /) -> Backoff | None:
        """The record :meth:`encode` wrote; None for none (or for text it did not write)."""
        if not text:
            return None
        try:
            rate, reduced_at, recover_at = (float(part) for part in text.split())
        except ValueError:
            return None
        return cls(rate, reduced_at, recover_at) if rate > 0 else None


def recover(
    backoff: Backoff | None, /, *, configured: float, factor: float, cooldown: float, now: float
) -> Backoff | None:
    """The backoff after the recovery steps due by ``now``; None once back at ``configured``."""
    if backoff is None or now < backoff.recover_at:
        return backoff
    rate, recover_at = backoff.rate, backoff.recover_at
    while now >= recover_at and rate < configured:
        rate = min(configured, rate / factor)
        recover_at += cooldown
    if rate >= configured:
        return None
    return Backoff(rate, backoff.reduced_at, recover_at)


def throttle(
    backoff: Backoff | None,
    /,
    *,
    configured: float,
    factor: float,
    floor: float,
    cooldown: float,
    margin: float,
    now: float,
) -> tuple[Backoff, bool]:
    """The backoff after a throttle reply at ``now``, and whether the rate went down.

    Replies within one new interval of a slowdown are the same episode (messages already
    in flight): they restart the cooldown without slowing further.
    """
    current = recover(backoff, configured=configured, factor=factor, cooldown=cooldown, now=now)
    rate = configured if current is None else current.rate
    interval = 60.0 / rate * (1 + margin)
    if current is None or now - current.reduced_at >= interval:
        slower = max(min(floor, configured), rate * factor)
        return Backoff(slower, now, now + cooldown), True
    return Backoff(rate, current.reduced_at, now + cooldown), False


class Limiter(Protocol):
    """The shared state of rate limits: atomic decisions, backoff, connection slots.

    Keys are names the scheduler makes (``rate`` for the global limit, ``domain:NAME``
    for a group); intervals are seconds per message and may differ between callers.
    """

    async def acquire(
        self, keys: Sequence[tuple[str, float]], /, *, now: float, force: bool = False
    ) -> Grant:
        """One message for every ``(key, interval)`` at ``now``: charge all, or none and wait."""
        ...

    async def swap_backoff(self, key: str, /, *, old: str | None, new: str | None) -> str | None:
        """Store ``new`` as ``key``'s backoff if it is still ``old``; the value stored after."""
        ...

    async def lease(self, key: str, /, *, holder: str, cap: int, ttl: float, now: float) -> bool:
        """Take (or renew) one of ``cap`` slots of ``key`` until ``now + ttl``; False if all
        are held. An expired lease frees its slot, so a dead holder never blocks."""
        ...

    async def release(self, key: str, /, *, holder: str) -> None:
        """Give ``holder``'s slot of ``key`` back before it expires."""
        ...

    async def aclose(self) -> None: ...


class MemoryLimiter:
    """The :class:`Limiter` of one process: what a scheduler does alone, shareable in-process."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._backoff: dict[str, str] = {}
        self._leases: dict[str, dict[str, float]] = {}

    def __reduce__(self) -> NoReturn:
        """Refused: a copy in another process would not share this one's limits."""
        raise TypeError("a MemoryLimiter cannot be shared with another process")

    async def acquire(
        self, keys: Sequence[tuple[str, float]], /, *, now: float, force: bool = False
    ) -> Grant:
        names = [key for key, _ in keys]
        tats = [self._tats.get(key, -math.inf) for key in names]
        waits, charged = gcra(tats, [interval for _, interval in keys], now=now, force=force)
        if charged is not None:
            self._tats.update(zip(names, charged, strict=True))
        return Grant(waits, self._backoff.get(names[-1]) if names else None)

    async def swap_backoff(self, key: str, /, *, old: str | None, new: str | None) -> str | None:
        if self._backoff.get(key) == old:
            if new is None:
                self._backoff.pop(key, None)
            else:
                self._backoff[key] = new
        return self._backoff.get(key)

    async def lease(self, key: str, /, *, holder: str, cap: int, ttl: float, now: float) -> bool:
        held = self._leases.setdefault(key, {})
        for other, until in list(held.items()):
            if until <= now:
                del held[other]
        if holder in held or len(held) < cap:
            held[holder] = now + ttl
            return True
        return False

    async def release(self, key: str, /, *, holder: str) -> None:
        self._leases.get(key, {}).pop(holder, None)

    async def aclose(self) -> None:
        return None
