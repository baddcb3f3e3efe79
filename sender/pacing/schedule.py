"""Pacing for bulk mail: global and per-domain limits, interleaving, a priority lane, retry timing.

Bulk senders get blocked in three ways, and this module is built against each:

* bursting one company's domain: messages to one domain (or group of domains
  behind the same mail exchangers) are spaced evenly, never bunched, and the
  scheduler interleaves domains so a large one neither starves nor bursts;
* overshooting sliding-window limits: the spacing carries a small margin, so no
  window of a minute holds more than the limit even with delivery jitter;
* throttling replies (421/450/451/452) slowing everything: they slow only that
  domain's group, which recovers step by step after a quiet cooldown.

Every limiter is a GCRA ("theoretical arrival time", ``tat``) without burst: a
message may leave at ``tat``, and leaving moves ``tat`` one interval on. Groups
with pending work sit in a heap keyed by when they may next receive, so a pick
costs O(log groups) even with 100,000 domains. With no limits at all the
scheduler is a plain round-robin over domains.

Given a :class:`~sender.pacing.limits.Limiter`, the scheduler asks it instead of its own
spacing whether a message may leave, so every process sharing the limiter keeps one limit
between them; the heap then holds hints (when the limiter last said to come back), and
pending work and the priority lane stay this process's own.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from sender.clock import Clock, SystemClock
from sender.errors import ConfigurationError
from sender.pacing.limits import Backoff, Grant, Limiter, recover, throttle

__all__ = [
    "BUILTIN_DOMAIN_GROUPS",
    "GroupState",
    "RateLimits",
    "RetryPolicy",
    "Scheduler",
    "parse_domain_rate",
]

_EPS = 1e-9  # seconds: float noise, not policy
_MAX_SLEEP = 1.0  # waiters re-check this often, so new work and priority sends are seen
_GLOBAL = "rate"  # the limiter's key of the global limit
_GROUP = "domain:"  # and the prefix of a group's
_SWAPS = 8  # compare-and-swap attempts on a shared backoff before taking what is stored

_V = TypeVar("_V")


class _FrozenMapping(Mapping[str, _V]):
    """A read-only, hashable mapping, so frozen settings stay immutable and hashable."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, _V] | None = None, /) -> None:
        self._data: dict[str, _V] = dict(data or {})

    def __getitem__(self, key: str) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return repr(self._data)


def _members(group: str, *domains: str) -> dict[str, str]:
    return dict.fromkeys((group, *domains), group)


#: Domains behind the same mail exchangers, so sharing one limit unless ``domain_groups`` differs.
BUILTIN_DOMAIN_GROUPS: Mapping[str, str] = _FrozenMapping(
    {
        **_members("gmail.com", "googlemail.com"),
        **_members(
            "outlook.com",
            *("hotmail.com", "live.com", "msn.com", "windowslive.com", "passport.com"),
            *("hotmail.co.uk", "hotmail.fr", "hotmail.de", "hotmail.it", "hotmail.es"),
            *("hotmail.nl", "hotmail.se", "hotmail.no", "hotmail.dk", "hotmail.be"),
            *("live.co.uk", "live.fr", "live.de", "live.it", "live.nl", "live.se", "live.no"),
            *("outlook.de", "outlook.fr", "outlook.es", "outlook.it", "outlook.co.uk"),
        ),
        **_members(
            "yahoo.com",
            *("ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de"),
            *("yahoo.it", "yahoo.es", "yahoo.se", "yahoo.no", "yahoo.dk", "yahoo.ca"),
        ),
        **_members("icloud.com", "me.com", "mac.com"),
    }
)

_RATE = re.compile(
    r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*(s|sec|second|m|min|minute|h|hr|hour|d|day)s?)?\s*$",
    re.IGNORECASE,
)
_PER_MINUTE = {"s": 60.0, "m": 1.0, "h": 1 / 60, "d": 1 / 1440}


def parse_domain_rate(text: str, /, *, setting: str = "domain_rate") -> float:
    """Parse ``30/min``, ``30/m``, ``2/s``, ``100/h``, ``500/d`` or ``30`` to per minute."""
    match = _RATE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ConfigurationError(
            f"{setting}: {text!r} is not a positive rate like 30/min, 2/s or 100/h",
            setting=setting,
        )
    unit = (match.group(2) or "m")[0].lower()
    return float(match.group(1)) * _PER_MINUTE[unit]


def _domain(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _positive(value: object, *, setting: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigurationError(
            f"{setting} must be a positive finite number, not {value!r}", setting=setting
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """How fast to send, overall and per recipient domain, and how to react to throttling.

    Rates of domains in one group (``domain_groups`` over :data:`BUILTIN_DOMAIN_GROUPS`)
    are one limit, because the receiving side counts per mail exchanger, not per name.
    An override keyed by a member domain applies to its whole group (the lowest wins).
    """

    global_per_second: float | None = 14.0  # provider quota (SES: 14/s); None: unlimited
    domain_per_minute: float | None = 30.0  # per domain or group; None: unlimited
    domain_overrides: Mapping[str, float] = field(default_factory=_FrozenMapping)
    domain_groups: Mapping[str, str] = field(default_factory=_FrozenMapping)  # domain -> group
    throttle_codes: frozenset[int] = frozenset({421, 450, 451, 452})
    backoff_factor: float = 0.5  # a throttle reply multiplies the group's rate by this
    min_domain_per_minute: float = 1.0  # backoff never goes below this
    cooldown: float = 300.0  # seconds without throttling per recovery step (rate / factor)
    spacing_margin: float = 0.02  # spacing is 60/limit*(1+margin): no window ever overshoots
    builtin_groups: bool = True  # apply BUILTIN_DOMAIN_GROUPS under domain_groups

    def __post_init__(self) -> None:
        if self.global_per_second is not None:
            _positive(self.global_per_second, setting="global_per_second")
        if self.domain_per_minute is not None:
            _positive(self.domain_per_minute, setting="domain_per_minute")
        groups: dict[str, str] = {}
        for domain, group in self.domain_groups.items():
            if not _domain(domain) or not _domain(group):
                raise ConfigurationError(
                    f"domain_groups: {domain!r} -> {group!r} needs two names",
                    setting="domain_groups",
                )
            groups[_domain(domain)] = _domain(group)
        object.__setattr__(self, "domain_groups", _FrozenMapping(groups))
        overrides: dict[str, float] = {}
        for key, rate in self.domain_overrides.items():
            if not _domain(key):
                raise ConfigurationError("empty domain name", setting="domain_overrides")
            overrides[_domain(key)] = _positive(rate, setting=f"domain_overrides[{key!r}]")
        object.__setattr__(self, "domain_overrides", _FrozenMapping(overrides))
        codes = frozenset(self.throttle_codes)
        if not all(isinstance(c, int) and 400 <= c <= 599 for c in codes):
            raise ConfigurationError(
                "throttle_codes must be SMTP reply codes from 400 to 599", setting="throttle_codes"
            )
        object.__setattr__(self, "throttle_codes", codes)
        if not 0 < self.backoff_factor < 1:
            raise ConfigurationError(
                "backoff_factor must be between 0 and 1 (exclusive)", setting="backoff_factor"
            )
        _positive(self.min_domain_per_minute, setting="min_domain_per_minute")
        _positive(self.cooldown, setting="cooldown")
        if not 0 <= self.spacing_margin < 1:
            raise ConfigurationError(
                "spacing_margin must be at least 0 and below 1", setting="spacing_margin"
            )

    def effective_groups(self) -> Mapping[str, str]:
        """Domain -> group name: the built-in groups (if on) under ``domain_groups``."""
        base = dict(BUILTIN_DOMAIN_GROUPS) if self.builtin_groups else {}
        return _FrozenMapping({**base, **self.domain_groups})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try a temporarily failed message again: exponential, jittered, with a deadline.

    The first retry comes late enough to pass greylisting; jitter keeps retries to
    one domain from arriving together. ``max_interval`` caps the delay before jitter.
    """

    first_retry: float = 300.0  # seconds after the first temporary failure
    multiplier: float = 2.0
    max_interval: float = 4 * 3600.0
    jitter: float = 0.1  # +/- this fraction of the delay
    max_age: float = 72 * 3600.0  # give up once the next attempt would be later than this

    def __post_init__(self) -> None:
        _positive(self.first_retry, setting="first_retry")
        if not 1 <= self.multiplier < math.inf:
            raise ConfigurationError("multiplier must be at least 1", setting="multiplier")
        if _positive(self.max_interval, setting="max_interval") < self.first_retry:
            raise ConfigurationError(
                "max_interval must not be shorter than first_retry", setting="max_interval"
            )
        if not 0 <= self.jitter < 1:
            raise ConfigurationError("jitter must be at least 0 and below 1", setting="jitter")
        _positive(self.max_age, setting="max_age")

    def next_attempt_at(
        self, *, attempts: int, first_attempt_at: float, now: float, rng: random.Random
    ) -> float | None:
        """When to try again after ``attempts`` failed attempts, or None to give up."""
        if attempts < 1:
            raise ValueError(f"attempts counts attempts made, so at least 1, not {attempts}")
        steps = attempts - 1
        if self.multiplier == 1:
            delay = self.first_retry
        elif steps >= math.log(self.max_interval / self.first_retry, self.multiplier):
            delay = self.max_interval  # also keeps multiplier ** steps from overflowing
        else:
            delay = min(self.first_retry * self.multiplier**steps, self.max_interval)
        delay *= 1 + rng.uniform(-self.jitter, self.jitter)
        at = now + delay
        return None if at - first_attempt_at > self.max_age else at


@dataclass(frozen=True, slots=True)
class GroupState:
    """One rate-limit group, for ``sender status``."""

    name: str
    configured_per_minute: float | None  # None: unlimited
    per_minute: float | None  # current rate, lower while backing off
    pending: int
    backoff_until: float | None  # wall clock: back at the configured rate if not throttled again


class _Group:
    """Mutable limiter state of one group; internal to :class:`Scheduler`."""

    __slots__ = (
        "configured",
        "domains",
        "interval",
        "name",
        "pending",
        "queued",
        "rate",
        "recover_at",
        "reduced_at",
        "shared",
        "tat",
    )

    def __init__(self, name: str, configured: float | None, margin: float) -> None:
        self.name = name
        self.configured = configured  # per minute
        self.rate = configured  # per minute, now
        self.interval = 0.0 if configured is None else 60.0 / configured * (1 + margin)
        self.tat = -math.inf  # monotonic time the next message may leave
        self.pending = 0
        self.domains: deque[str] = deque()  # members with pending work, in rotation
        self.queued = False  # has an entry in the scheduler's heap
        self.reduced_at: float | None = None  # last backoff step
        self.recover_at: float | None = None  # next recovery step; None when not backed off
        self.shared: str | None = None  # the limiter's backoff text this state was synced from


class Scheduler:
    """Decides which domain may receive the next bulk message, and when.

    One caller at a time waits inside :meth:`next_bulk` (others queue behind it),
    so waiting is never duplicated and a :class:`~sender.testing.ManualClock`
    shows real elapsed time. :meth:`priority` sends overtake bulk waiters.
    """

    def __init__(
        self, limits: RateLimits, /, *, clock: Clock | None = None, limiter: Limiter | None = None
    ) -> None:
        self.limits = limits
        self._clock: Clock = clock or SystemClock()
        self.limiter = limiter  # None: this scheduler's own spacing
        self._group_of = dict(limits.effective_groups())
        # An override on a member domain limits its whole group; the lowest wins.
        self._rates: dict[str, float] = {}
        for key, rate in limits.domain_overrides.items():
            name = self._group_of.get(key, key)
            self._rates[name] = min(rate, self._rates.get(name, math.inf))
        self._global_interval = (
            0.0 if limits.global_per_second is None else 1.0 / limits.global_per_second
        )
        self._unlimited = (
            limits.global_per_second is None
            and limits.domain_per_minute is None
            and not limits.domain_overrides
        )
        self._pending: dict[str, int] = {}  # domain as given -> messages waiting
        self._total = 0
        self._ready: deque[str] = deque()  # unlimited mode: domains in rotation
        self._groups: dict[str, _Group] = {}
        self._heap: list[tuple[float, int, _Group]] = []  # (eligible at, tie-break, group)
        self._seq = itertools.count()
        self._global_tat = -math.inf
        self._bulk_lock = asyncio.Lock()
        self._priority_lock = asyncio.Lock()
        self._priority_waiting = 0
        self._priority_idle = asyncio.Event()
        self._priority_idle.set()

    # -- groups and pending work ---------------------------------------------------

    def group(self, domain: str) -> str:
        """The name of the rate-limit group ``domain`` belongs to (lower-cased)."""
        name = _domain(domain)
        return self._group_of.get(name, name)

    def limit_of(self, domain: str, /) -> float | None:
        """The configured messages per minute of ``domain``'s group (None: no limit)."""
        return self._limit(self.group(domain))

    def _limit(self, group: str) -> float | None:
        return self._rates.get(group, self.limits.domain_per_minute)

    def _state(self, domain: str) -> _Group:
        name = self.group(domain)
        state = self._groups.get(name)
        if state is None:
            state = self._groups[name] = _Group(name, self._limit(name), self.limits.spacing_margin)
        return state

    def _enqueue(self, state: _Group, now: float) -> None:
        # New work has waited since now, not since the group last sent.
        heapq.heappush(self._heap, (max(state.tat, now), next(self._seq), state))
        state.queued = True

    def set_pending(self, counts: Mapping[str, int]) -> None:
        """Replace the known pending work: messages waiting per domain.

        Applied as a difference, so refreshing 100,000 domains that mostly did not
        change costs little more than comparing two dicts.
        """
        if any(n < 0 for n in counts.values()):
            raise ValueError("pending counts must not be negative")
        new = {domain: n for domain, n in counts.items() if n > 0}
        old = self._pending
        self._pending = new
        self._total = sum(new.values())
        if self._unlimited:
            self._ready = deque(new)
            return
        now = self._clock.monotonic()
        fresh: list[tuple[float, int, _Group]] = []
        for domain, n in new.items():
            before = old.get(domain, 0)
            if n == before:
                continue
            state = self._state(domain)
            state.pending += n - before
            if not before:
                state.domains.append(domain)
            if not state.queued:
                # New work has waited since now, not since the group last sent.
                fresh.append((state.tat if state.tat > now else now, next(self._seq), state))
                state.queued = True
        shrunk: set[_Group] = set()
        for domain, before in old.items():
            if domain not in new:
                state = self._state(domain)
                state.pending -= before
                shrunk.add(state)
        for state in shrunk:
            if state.pending:
                state.domains = deque(d for d in state.domains if d in new)
            else:
                state.domains.clear()
        if len(fresh) > len(self._heap) // 8:
            self._heap.extend(fresh)
            heapq.heapify(self._heap)
        else:
            for entry in fresh:
                heapq.heappush(self._heap, entry)
        if len(self._groups) > 2 * len(self._heap) + 1024:
            self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        """Drop groups with nothing to remember (no work, no wait, no backoff): bounds memory."""
        for name, state in list(self._groups.items()):
            if not (state.pending or state.queued or state.tat > now or state.recover_at):
                del self._groups[name]

    def add_pending(self, domain: str, count: int = 1) -> None:
        """Add ``count`` messages waiting for ``domain``."""
        if count < 0:
            raise ValueError("add_pending counts must not be negative")
        if not count:
            return
        before = self._pending.get(domain, 0)
        self._pending[domain] = before + count
        self._total += count
        if self._unlimited:
            if not before:
                self._ready.append(domain)
            return
        state = self._state(domain)
        if not before:
            state.domains.append(domain)
        state.pending += count
        if not state.queued:
            self._enqueue(state, self._clock.monotonic())

    def pending(self) -> int:
        """Messages known to be waiting, over all domains."""
        return self._total

    def _take_domain(self, domains: deque[str]) -> str:
        """Charge one message to the first domain in rotation and rotate it to the back."""
        domain = domains.popleft()
        left = self._pending[domain] - 1
        if left:
            self._pending[domain] = left
            domains.append(domain)
        else:
            del self._pending[domain]
        self._total -= 1
        return domain

    # -- picking -------------------------------------------------------------------

    async def next_bulk(self) -> str | None:
        """Wait until some domain may receive a bulk message; charge it and return the domain.

        Returns None at once when nothing is pending. The domain is returned as given
        to :meth:`set_pending` or :meth:`add_pending`. Among eligible domains the one
        that has waited longest goes first (round-robin on ties), so a domain with
        5,000 messages neither starves the others nor gets a burst. Every wait is a
        bounded clock sleep, so new work and priority sends are noticed.
        """
        if self._unlimited:
            return self._take_domain(self._ready) if self._ready else None
        async with self._bulk_lock:
            if self.limiter is not None:
                return await self._next_shared(self.limiter)
            return await self._next_limited()

    def try_next_bulk(self) -> str | None:
        """Like :meth:`next_bulk`, but only if a domain may receive a message right now.

        Never waits, so a caller can gather several sends for one store
        transaction without holding a granted permit while waiting for another.
        With a limiter every permit is a question to it, so only :meth:`next_bulk` asks.
        """
        if self._unlimited:
            return self._take_domain(self._ready) if self._ready else None
        if self.limiter is not None or self._bulk_lock.locked() or self._priority_waiting:
            return None
        picked = self._pick(self._clock.monotonic())
        return picked if isinstance(picked, str) else None

    async def _next_limited(self) -> str | None:
        while self._total:
            if self._priority_waiting:
                await self._priority_idle.wait()
                continue
            picked = self._pick(self._clock.monotonic())
            if isinstance(picked, float):
                await self._clock.sleep(min(picked, _MAX_SLEEP))
                continue
            return picked
        return None

    async def _next_shared(self, limiter: Limiter) -> str | None:
        """:meth:`_next_limited` with the limiter deciding: the heap only says whom to ask.

        A grant is charged in the limiter before this returns; if the work went away
        meanwhile (or the wait is cancelled while asking) that permit is spent unused,
        which can slow sending but never overshoots a limit.
        """
        while self._total:
            if self._priority_waiting:
                await self._priority_idle.wait()
                continue
            candidate = self._candidate(self._clock.monotonic())
            if candidate is None:
                return None
            if isinstance(candidate, float):
                await self._clock.sleep(min(candidate, _MAX_SLEEP))
                continue
            state = candidate
            keys = self._keys(state)
            grant = await limiter.acquire(keys, now=self._clock.now()) if keys else Grant(())
            now = self._clock.monotonic()
            self._sync(state, grant, now)
            if not grant.granted:
                for (key, _), wait in zip(keys, grant.waits, strict=True):
                    if key == _GLOBAL:
                        self._global_tat = max(self._global_tat, now + wait)
                    else:
                        state.tat = max(state.tat, now + wait)
                continue
            self._global_tat = max(self._global_tat, now) + self._global_interval
            state.tat = max(state.tat, now) + state.interval
            if not state.pending:
                continue  # taken elsewhere while asking: the permit goes unused
            state.pending -= 1
            return self._take_domain(state.domains)  # its heap entry moves on when next seen
        return None

    def _candidate(self, now: float) -> _Group | float | None:
        """The group to ask the limiter about at ``now``, or how long until there is one."""
        heap = self._heap
        while self._total:
            key, _, state = heap[0]
            if not state.pending:
                heapq.heappop(heap)
                state.queued = False
                continue
            if state.tat > key:
                heapq.heapreplace(heap, (state.tat, next(self._seq), state))
                continue
            wait = max(key, self._global_tat) - now
            if wait > _EPS:
                return float(wait)
            # Round-robin: it goes to the back of its time until the limiter answers.
            heapq.heapreplace(heap, (now, next(self._seq), state))
            return state
        return None

    def _keys(self, state: _Group) -> list[tuple[str, float]]:
        """What one bulk message to ``state`` asks the limiter for: the global and its group."""
        keys = [(_GLOBAL, self._global_interval)] if self._global_interval else []
        if state.interval:
            keys.append((_GROUP + state.name, state.interval))
        return keys

    def _sync(self, state: _Group, grant: Grant, now: float) -> None:
        """Take the group's rate and recovery from the backoff every process shares."""
        if grant.backoff == state.shared or state.configured is None:
            return
        state.shared = grant.backoff
        backoff = recover(
            Backoff.decode(grant.backoff),
            configured=state.configured,
            factor=self.limits.backoff_factor,
            cooldown=self.limits.cooldown,
            now=self._clock.now(),
        )
        if backoff is not None:  # wall-clock times, as every process reads them, to monotonic
            wall = self._clock.now()
            backoff = Backoff(
                backoff.rate,
                now - (wall - backoff.reduced_at),
                now + (backoff.recover_at - wall),
            )
        self._set_backoff(state, backoff)

    @staticmethod
    def _backoff_of(state: _Group) -> Backoff | None:
        """The group's own backoff (monotonic times), as the record the shared rules read."""
        if state.rate is None or state.reduced_at is None or state.recover_at is None:
            return None
        return Backoff(state.rate, state.reduced_at, state.recover_at)

    def _set_backoff(self, state: _Group, backoff: Backoff | None, /) -> None:
        """Take ``backoff`` (monotonic times; None: not backed off) as the group's rate."""
        if backoff is None:
            state.rate, state.recover_at, state.reduced_at = state.configured, None, None
        else:
            state.rate, state.reduced_at, state.recover_at = (
                backoff.rate,
                backoff.reduced_at,
                backoff.recover_at,
            )
        assert state.rate is not None  # only groups with a configured rate back off
        state.interval = 60.0 / state.rate * (1 + self.limits.spacing_margin)

    def _pick(self, now: float) -> str | float | None:
        """The domain that may receive a message at ``now`` (permits charged), or how long
        to wait for one, or None when nothing is pending."""
        heap = self._heap
        while self._total:
            key, _, state = heap[0]  # every group with pending work is in the heap
            if not state.pending:
                heapq.heappop(heap)
                state.queued = False
                continue
            if state.tat > key:  # a priority send or a backoff pushed it back
                heapq.heapreplace(heap, (state.tat, next(self._seq), state))
                continue
            wait = max(key, self._global_tat) - now
            if wait > _EPS:
                return float(wait)
            # No await from here on: the permits are consumed as the caller sends.
            self._recover(state, now)
            state.tat = max(state.tat, now) + state.interval
            self._global_tat = max(self._global_tat, now) + self._global_interval
            domain = self._take_domain(state.domains)
            state.pending -= 1
            if state.pending:
                heapq.heapreplace(heap, (state.tat, next(self._seq), state))
            else:
                heapq.heappop(heap)
                state.queued = False
            return domain
        return None

    async def priority(self, domain: str) -> None:
        """Wait for the global permit only, ahead of bulk, then charge ``domain``'s limiter.

        Charging pushes bulk to that domain back by one interval, but a priority send
        never waits for the domain's spacing: a login link must leave within a second.
        """
        if self._unlimited:
            return
        if self.limiter is not None:
            await self._priority_shared(domain, self.limiter)
            return
        if self._global_interval:
            self._priority_waiting += 1
            self._priority_idle.clear()
            try:
                async with self._priority_lock:
                    while (wait := self._global_tat - self._clock.monotonic()) > _EPS:
                        await self._clock.sleep(min(wait, _MAX_SLEEP))
                    now = self._clock.monotonic()
                    self._global_tat = max(self._global_tat, now) + self._global_interval
            finally:
                self._priority_waiting -= 1
                if not self._priority_waiting:
                    self._priority_idle.set()
        state = self._state(domain)
        if state.interval:  # an unlimited group has nothing to charge
            now = self._clock.monotonic()
            self._recover(state, now)
            state.tat = max(state.tat, now) + state.interval

    async def _priority_shared(self, domain: str, limiter: Limiter) -> None:
        """:meth:`priority` with the limiter: ask it for the global permit, force the group's."""
        if self._global_interval:
            self._priority_waiting += 1
            self._priority_idle.clear()
            try:
                async with self._priority_lock:
                    while True:
                        asked = [(_GLOBAL, self._global_interval)]
                        grant = await limiter.acquire(asked, now=self._clock.now())
                        if grant.granted:
                            break
                        await self._clock.sleep(min(grant.wait, _MAX_SLEEP))
            finally:
                self._priority_waiting -= 1
                if not self._priority_waiting:
                    self._priority_idle.set()
        state = self._state(domain)
        if state.interval:
            asked = [(_GROUP + state.name, state.interval)]
            grant = await limiter.acquire(asked, now=self._clock.now(), force=True)
            now = self._clock.monotonic()
            self._sync(state, grant, now)
            state.tat = max(state.tat, now) + state.interval

    # -- throttling ----------------------------------------------------------------

    async def learn(self, domain: str, code: int | None) -> None:
        """:meth:`feedback`, shared: with a limiter, a throttle slows ``domain``'s group for
        every process that shares it, and recovers for all of them alike.

        The backoff changes by compare-and-swap on the limiter, so two processes throttled
        at once slow the group one step, as one process would; then its ``tat`` is pushed
        one new interval on, as :meth:`feedback` does.
        """
        limiter = self.limiter
        if limiter is None:
            self.feedback(domain, code)
            return
        if code is None or code not in self.limits.throttle_codes or self._unlimited:
            return
        state = self._state(domain)
        if state.configured is None:
            return
        limits, key = self.limits, _GROUP + state.name
        seen = state.shared
        for _ in range(_SWAPS):
            backoff, slowed = throttle(
                Backoff.decode(seen),
                configured=state.configured,
                factor=limits.backoff_factor,
                floor=limits.min_domain_per_minute,
                cooldown=limits.cooldown,
                margin=limits.spacing_margin,
                now=self._clock.now(),
            )
            stored = await limiter.swap_backoff(key, old=seen, new=backoff.encode())
            if stored == backoff.encode():
                break
            seen = stored  # another process changed it first: apply the reply to theirs
        now = self._clock.monotonic()
        self._sync(state, Grant((), stored), now)
        if slowed:
            asked = [(key, state.interval)]
            await limiter.acquire(asked, now=self._clock.now(), force=True)
            state.tat = max(state.tat, now + state.interval)

    def feedback(self, domain: str, code: int | None) -> None:
        """Learn from the reply to a message for ``domain``: a throttle code slows its group.

        The group's rate is multiplied by ``backoff_factor`` (not below the minimum)
        and recovers one step per quiet ``cooldown``. Replies arriving within one new
        interval of a slowdown count as the same episode (messages already in flight),
        so they restart the cooldown without slowing further. Unlimited groups have no
        rate to lower and ignore throttling.
        """
        if code is None or code not in self.limits.throttle_codes or self._unlimited:
            return
        state = self._state(domain)
        if state.rate is None or state.configured is None:
            return
        limits = self.limits
        now = self._clock.monotonic()
        backoff, slowed = throttle(
            self._backoff_of(state),
            configured=state.configured,
            factor=limits.backoff_factor,
            floor=limits.min_domain_per_minute,
            cooldown=limits.cooldown,
            margin=limits.spacing_margin,
            now=now,
        )
        self._set_backoff(state, backoff)
        if slowed:
            state.tat = max(state.tat, now + state.interval)

    def _recover(self, state: _Group, now: float) -> None:
        """Apply the recovery steps due by ``now``."""
        if state.recover_at is None or now < state.recover_at or state.configured is None:
            return
        backoff = recover(
            self._backoff_of(state),
            configured=state.configured,
            factor=self.limits.backoff_factor,
            cooldown=self.limits.cooldown,
            now=now,
        )
        self._set_backoff(state, backoff)

    # -- reporting -----------------------------------------------------------------

    def eta(self) -> float | None:
        """Seconds to send all pending work at the current limits; None if unknowable.

        The slowest of the global limit and each group's own limit decides, so a run
        dominated by one big domain is not promised the global rate.
        """
        if not self._total:
            return 0.0
        estimates: list[float] = []
        if self._global_interval:
            estimates.append(self._total * self._global_interval)
        if not self._unlimited:
            now = self._clock.monotonic()
            for state in self._groups.values():
                if state.pending and state.configured is not None:
                    self._recover(state, now)
                    wait = max(state.tat - now, 0.0)
                    estimates.append(wait + (state.pending - 1) * state.interval)
        return max(estimates) if estimates else None

    def eta_bottleneck(self) -> str | None:
        """The group whose own limit makes :meth:`eta` longer than the global limit would.

        None when the global limit (or nothing) decides: then a higher per-domain rate
        would not finish sooner.
        """
        if not self._total or self._unlimited:
            return None
        slowest, longest = None, self._total * (self._global_interval or 0.0)
        now = self._clock.monotonic()
        for state in self._groups.values():
            if state.pending and state.configured is not None:
                self._recover(state, now)
                estimate = max(state.tat - now, 0.0) + (state.pending - 1) * state.interval
                if estimate > longest:
                    slowest, longest = state.name, estimate
        return slowest

    def snapshot(self) -> list[GroupState]:
        """Every group with pending work or backing off, most pending first."""
        if self._unlimited:
            counts: dict[str, int] = {}
            for domain, n in self._pending.items():
                name = self.group(domain)
                counts[name] = counts.get(name, 0) + n
            states = [GroupState(name, None, None, n, None) for name, n in counts.items()]
        else:
            now = self._clock.monotonic()
            wall = self._clock.now()
            states = []
            for state in self._groups.values():
                self._recover(state, now)
                if not state.pending and state.recover_at is None:
                    continue
                done = self._recovered_at(state)
                until = None if done is None else wall + (done - now)
                states.append(
                    GroupState(state.name, state.configured, state.rate, state.pending, until)
                )
        states.sort(key=lambda s: (-s.pending, s.name))
        return states

    def _recovered_at(self, state: _Group) -> float | None:
        """Monotonic time a backed-off group is back at its configured rate, unless throttled."""
        if state.recover_at is None or state.configured is None or state.rate is None:
            return None
        ratio = math.log(state.configured / state.rate) / -math.log(self.limits.backoff_factor)
        steps = max(math.ceil(ratio - 1e-9), 1)
        return state.recover_at + (steps - 1) * self.limits.cooldown
