"""Pacing: global and per-domain limits, interleaving, priority lane, backoff, retry timing."""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
import math
import random
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sender.errors import ConfigurationError
from sender.pacing.schedule import (
    BUILTIN_DOMAIN_GROUPS,
    GroupState,
    RateLimits,
    RetryPolicy,
    Scheduler,
    parse_domain_rate,
)
from sender.testing import ManualClock

SPACING_30 = 60 / 30 * 1.02  # seconds between messages to one group at 30/min


def make(**limits: object) -> tuple[Scheduler, ManualClock]:
    clock = ManualClock()
    return Scheduler(RateLimits(**limits), clock=clock), clock  # type: ignore[arg-type]


async def drain(
    scheduler: Scheduler, clock: ManualClock, *, until: float = math.inf
) -> dict[str, list[float]]:
    """Pick until nothing is pending (or the clock passes ``until``); send times per domain."""
    sent: dict[str, list[float]] = defaultdict(list)
    while clock.monotonic() < until and (domain := await scheduler.next_bulk()) is not None:
        sent[domain].append(clock.monotonic())
    return sent


def most_in_window(times: list[float], width: float) -> int:
    """The most sends in any closed window ``[t, t + width]`` starting at a send."""
    times = sorted(times)
    return max(bisect.bisect_right(times, t + width) - i for i, t in enumerate(times))


def most_in_open_window(times: list[float], width: float) -> int:
    """The most sends in any half-open window ``[t, t + width)``, allowing float noise."""
    times = sorted(times)
    return max(bisect.bisect_left(times, t + width - 1e-9) - i for i, t in enumerate(times))


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# -- global limit -------------------------------------------------------------------


async def test_global_rate_spaces_picks_evenly() -> None:
    """N picks at 14/s take (N-1)/14 s and no window of w seconds holds more than ceil(14w)."""
    scheduler, clock = make(global_per_second=14.0, domain_per_minute=None)
    scheduler.set_pending({"a.org": 60, "b.org": 40})
    sent = await drain(scheduler, clock)
    times = sorted(sent["a.org"] + sent["b.org"])
    assert len(times) == 100
    assert times[-1] - times[0] == pytest.approx(99 / 14)
    for width in (0.3, 1.0, 2.5):
        assert most_in_open_window(times, width) <= math.ceil(width * 14)


async def test_waits_are_bounded_clock_sleeps() -> None:
    """A long wait is cut into clock sleeps of at most a second, never real time."""
    scheduler, clock = make(domain_per_minute=6.0)
    scheduler.add_pending("a.org", 2)
    await drain(scheduler, clock)
    assert clock.monotonic() == pytest.approx(10 * 1.02)
    assert clock.sleeps
    assert max(clock.sleeps) <= 1.0


async def test_new_work_is_noticed_while_waiting() -> None:
    """A domain that gets work while next_bulk waits for another is served within a step."""
    scheduler, clock = make()
    scheduler.add_pending("a.org", 2)
    assert await scheduler.next_bulk() == "a.org"
    task = asyncio.create_task(scheduler.next_bulk())
    await asyncio.sleep(0)  # the task sleeps its first step, waiting for a.org
    scheduler.add_pending("b.org")
    assert await task == "b.org"
    assert clock.monotonic() == pytest.approx(1.0)


async def test_concurrent_callers_share_one_timeline() -> None:
    """Several engine slots waiting at once queue behind one waiter, so time is not multiplied."""
    scheduler, clock = make()
    scheduler.add_pending("one.org", 30)
    results = await asyncio.gather(*(drain(scheduler, clock) for _ in range(4)))
    times = sorted(t for result in results for t in result["one.org"])
    assert len(times) == 30
    assert times[-1] == pytest.approx(29 * SPACING_30)
    assert min(gaps(times)) == pytest.approx(SPACING_30)


async def test_cancelled_wait_consumes_nothing() -> None:
    """Cancelling a waiting next_bulk leaves the work pending and the scheduler usable."""
    scheduler, _ = make()
    scheduler.add_pending("a.org", 2)
    await scheduler.next_bulk()
    task = asyncio.create_task(scheduler.next_bulk())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert scheduler.pending() == 1
    assert await scheduler.next_bulk() == "a.org"
    assert await scheduler.next_bulk() is None


# -- per-domain limits and interleaving ----------------------------------------------


async def test_uneven_domains_never_overshoot_and_big_domain_stays_busy() -> None:
    """600/200/50/10/1 messages at 30/min: no 60-s window over 30, big domain >= 90% busy."""
    scheduler, clock = make(global_per_second=50.0, domain_per_minute=30.0)
    sizes = {"big.org": 600, "mid.org": 200, "small.org": 50, "tiny.org": 10, "one.org": 1}
    scheduler.set_pending(sizes)
    sent = await drain(scheduler, clock)
    assert {domain: len(times) for domain, times in sent.items()} == sizes
    for times in sent.values():
        assert most_in_window(times, 60.0) <= 30
    big = sent["big.org"]
    achieved_per_minute = (len(big) - 1) / (big[-1] - big[0]) * 60
    assert achieved_per_minute / 30 >= 0.9
    assert sent["one.org"][0] < 5 / 50 + 1e-9  # in the first round
    assert sent["tiny.org"][-1] < 10 * SPACING_30  # small domains finish early


async def test_first_round_serves_every_domain() -> None:
    """The first picks visit every domain once before any domain gets a second message."""
    scheduler, _ = make(global_per_second=100.0)
    scheduler.set_pending({"big.org": 5000, "a.org": 1, "b.org": 1, "c.org": 2})
    first = [await scheduler.next_bulk() for _ in range(4)]
    assert set(first) == {"a.org", "b.org", "big.org", "c.org"}


@pytest.mark.parametrize(
    "limits",
    [
        {"global_per_second": 100.0, "domain_per_minute": 30.0},
        {"global_per_second": 14.0, "domain_per_minute": None},
        {"global_per_second": None, "domain_per_minute": 30.0},
        {"global_per_second": None, "domain_per_minute": None},
    ],
    ids=["both", "global-only", "domain-only", "unlimited"],
)
async def test_picks_rotate_across_equal_domains(limits: dict[str, float | None]) -> None:
    """With equal limits consecutive picks go round the domains instead of draining one."""
    scheduler, _ = make(**limits)
    scheduler.set_pending({"a.org": 4, "b.org": 4, "c.org": 4})
    picks = [await scheduler.next_bulk() for _ in range(12)]
    assert picks == ["a.org", "b.org", "c.org"] * 4
    assert await scheduler.next_bulk() is None


async def test_domain_is_returned_as_given() -> None:
    """next_bulk returns the pending key unchanged, while limits go by the lower-cased group."""
    scheduler, clock = make()
    scheduler.set_pending({"Uni.NO": 1, "uni.no": 1})
    sent = await drain(scheduler, clock)
    assert set(sent) == {"Uni.NO", "uni.no"}
    assert abs(sent["Uni.NO"][0] - sent["uni.no"][0]) == pytest.approx(SPACING_30)


async def test_set_pending_replaces_and_add_pending_adds() -> None:
    """set_pending replaces the known work; add_pending adds to it; negatives are refused."""
    scheduler, clock = make()
    scheduler.set_pending({"a.org": 5, "b.org": 2})
    scheduler.set_pending({"b.org": 1, "c.org": 0})
    scheduler.add_pending("d.org", 2)
    assert scheduler.pending() == 3
    sent = await drain(scheduler, clock)
    assert {d: len(t) for d, t in sent.items()} == {"b.org": 1, "d.org": 2}
    assert await scheduler.next_bulk() is None
    with pytest.raises(ValueError, match="negative"):
        scheduler.add_pending("a.org", -1)
    with pytest.raises(ValueError, match="negative"):
        scheduler.set_pending({"a.org": -1})


# -- overrides and groups -------------------------------------------------------------


async def test_override_sets_one_domains_rate() -> None:
    """An override gives its domain its own spacing; others keep the default."""
    scheduler, clock = make(global_per_second=100.0, domain_overrides={"Partner.EDU": 120.0})
    scheduler.set_pending({"partner.edu": 10, "other.org": 3})
    sent = await drain(scheduler, clock)
    assert gaps(sent["partner.edu"]) == pytest.approx([0.5 * 1.02] * 9)
    assert gaps(sent["other.org"]) == pytest.approx([SPACING_30] * 2)


async def test_gmail_and_googlemail_share_one_limiter() -> None:
    """Built-in groups: gmail.com and googlemail.com messages are spaced as one domain."""
    scheduler, clock = make(global_per_second=100.0)
    assert scheduler.group("GoogleMail.com") == scheduler.group("gmail.com") == "gmail.com"
    assert scheduler.group("hotmail.com") == scheduler.group("live.com") == "outlook.com"
    assert scheduler.group("me.com") == "icloud.com"
    assert scheduler.group("ymail.com") == "yahoo.com"
    scheduler.set_pending({"gmail.com": 3, "googlemail.com": 3})
    sent = await drain(scheduler, clock)
    times = sorted(sent["gmail.com"] + sent["googlemail.com"])
    assert gaps(times) == pytest.approx([SPACING_30] * 5)
    assert len(sent["googlemail.com"]) == 3


async def test_custom_group_shares_limit_and_takes_override() -> None:
    """A custom group shares one limiter, and an override on its name applies to all members."""
    scheduler, clock = make(
        global_per_second=100.0,
        domain_groups={"uio.no": "UiO", "ifi.uio.no": "uio"},
        domain_overrides={"uio": 60.0},
    )
    assert scheduler.group("ifi.uio.no") == "uio"
    scheduler.set_pending({"uio.no": 2, "ifi.uio.no": 2})
    sent = await drain(scheduler, clock)
    assert gaps(sorted(sent["uio.no"] + sent["ifi.uio.no"])) == pytest.approx([1.02] * 3)


async def test_override_on_member_limits_its_whole_group() -> None:
    """An override keyed by a member domain limits the group; the lowest override wins."""
    scheduler, clock = make(
        global_per_second=100.0, domain_overrides={"hotmail.com": 20.0, "live.com": 15.0}
    )
    scheduler.set_pending({"outlook.com": 2, "hotmail.com": 1})
    sent = await drain(scheduler, clock)
    assert gaps(sorted(sent["outlook.com"] + sent["hotmail.com"])) == pytest.approx([4.08] * 2)


def test_custom_groups_override_builtin_ones() -> None:
    """domain_groups entries beat built-in ones, and builtin_groups=False drops them."""
    moved = Scheduler(RateLimits(domain_groups={"googlemail.com": "googlemail.com"}))
    assert moved.group("googlemail.com") == "googlemail.com"
    assert moved.group("gmail.com") == "gmail.com"
    assert Scheduler(RateLimits(builtin_groups=False)).group("hotmail.com") == "hotmail.com"
    assert BUILTIN_DOMAIN_GROUPS["mac.com"] == "icloud.com"


# -- adaptive backoff --------------------------------------------------------------------


async def test_throttle_slows_only_that_domain_until_cooldown() -> None:
    """A 451 halves one domain's rate for the cooldown; the other domain's spacing is unchanged."""
    scheduler, clock = make(global_per_second=100.0, cooldown=300.0)
    scheduler.set_pending({"slow.org": 1000, "fast.org": 1000})
    before = await drain(scheduler, clock, until=20.0)
    throttled_at = clock.monotonic()
    scheduler.feedback("slow.org", 451)
    during = await drain(scheduler, clock, until=throttled_at + 300.0)
    after = await drain(scheduler, clock, until=throttled_at + 400.0)

    assert gaps(before["slow.org"]) == pytest.approx([SPACING_30] * (len(before["slow.org"]) - 1))
    slow = during["slow.org"]
    assert slow[0] - before["slow.org"][-1] >= 2 * SPACING_30 - 1e-9
    assert gaps(slow) == pytest.approx([2 * SPACING_30] * (len(slow) - 1))
    fast = before["fast.org"] + during["fast.org"] + after["fast.org"]
    assert gaps(fast) == pytest.approx([SPACING_30] * (len(fast) - 1))
    assert gaps(after["slow.org"]) == pytest.approx([SPACING_30] * (len(after["slow.org"]) - 1))


def test_repeated_throttling_steps_down_and_recovers_step_by_step() -> None:
    """Each throttle episode multiplies the rate by the factor; each quiet cooldown undoes one."""
    scheduler, clock = make(cooldown=300.0, min_domain_per_minute=5.0)

    def rate() -> float | None:
        (state,) = scheduler.snapshot()
        return state.per_minute

    scheduler.feedback("a.org", 421)
    assert rate() == 15.0
    clock.advance(5.0)  # longer than the new spacing: a new episode
    scheduler.feedback("a.org", 452)
    assert rate() == 7.5
    clock.advance(10.0)
    scheduler.feedback("a.org", 450)
    assert rate() == 5.0  # the floor
    clock.advance(299.0)
    assert rate() == 5.0
    clock.advance(1.0)
    assert rate() == 10.0
    clock.advance(300.0)
    assert rate() == 20.0
    clock.advance(300.0)
    assert scheduler.snapshot() == []  # back at 30/min, nothing pending: nothing to report


def test_throttles_from_messages_in_flight_count_once() -> None:
    """Throttle replies arriving together (messages already in flight) lower the rate once."""
    scheduler, clock = make()
    for _ in range(5):
        scheduler.feedback("a.org", 451)
        clock.advance(0.1)
    assert [s.per_minute for s in scheduler.snapshot()] == [15.0]


async def test_other_reply_codes_change_nothing() -> None:
    """Success, permanent failures and missing replies leave the spacing alone."""
    scheduler, clock = make(global_per_second=100.0)
    scheduler.set_pending({"a.org": 6})
    for code in (250, 550, None, 250, 554):
        await scheduler.next_bulk()
        scheduler.feedback("a.org", code)
    sent = await drain(scheduler, clock)
    assert clock.monotonic() == pytest.approx(5 * SPACING_30)
    assert len(sent["a.org"]) == 1
    assert scheduler.snapshot() == []


async def test_snapshot_reports_rates_pending_and_backoff() -> None:
    """snapshot lists groups with configured and current rate, pending and when backoff ends."""
    scheduler, clock = make(cooldown=300.0)
    scheduler.set_pending({"gmail.com": 2, "googlemail.com": 1, "a.org": 1})
    scheduler.feedback("a.org", 451)
    assert scheduler.snapshot() == [
        GroupState("gmail.com", 30.0, 30.0, 3, None),
        GroupState("a.org", 30.0, 15.0, 1, clock.now() + 300.0),
    ]


# -- priority lane ---------------------------------------------------------------------


@pytest.mark.parametrize("bulk_first", [True, False])
async def test_priority_takes_the_global_permit_before_waiting_bulk(bulk_first: bool) -> None:
    """While bulk waits for the global permit, a priority send gets it first."""
    scheduler, clock = make(global_per_second=0.5, domain_per_minute=None)
    scheduler.add_pending("bulk.org", 5)
    assert await scheduler.next_bulk() == "bulk.org"  # t=0; the next permit is at t=2
    done: dict[str, float] = {}

    async def bulk() -> None:
        await scheduler.next_bulk()
        done["bulk"] = clock.monotonic()

    async def priority() -> None:
        await scheduler.priority("lms.example.org")
        done["priority"] = clock.monotonic()

    first, second = (bulk, priority) if bulk_first else (priority, bulk)
    one = asyncio.create_task(first())
    await asyncio.sleep(0)
    await asyncio.gather(one, second())
    assert done == {"priority": pytest.approx(2.0), "bulk": pytest.approx(4.0)}


async def test_priority_ignores_domain_spacing_but_pushes_bulk_back() -> None:
    """A priority send to a busy domain waits only for the global permit; bulk moves back."""
    scheduler, clock = make(global_per_second=14.0, domain_per_minute=30.0)
    scheduler.add_pending("uni.no", 3)
    assert await scheduler.next_bulk() == "uni.no"
    await scheduler.priority("UNI.no")
    assert clock.monotonic() == pytest.approx(1 / 14)
    assert await scheduler.next_bulk() == "uni.no"
    assert clock.monotonic() == pytest.approx(2 * SPACING_30)


async def test_priority_leaves_within_one_global_interval_during_a_big_run() -> None:
    """During a busy run at 14/s, every priority send waits at most 1/14 s of clock time."""
    scheduler, clock = make(global_per_second=14.0)
    scheduler.set_pending({f"d{i}.org": 100 for i in range(50)})

    picked = []

    async def run_engine() -> None:
        while domain := await scheduler.next_bulk():
            picked.append(domain)
            await asyncio.sleep(0)  # claiming the message from the store

    run = asyncio.create_task(run_engine())
    waits = []
    for i in range(20):
        for _ in range(i % 4 + 1):
            await asyncio.sleep(0)
        start = clock.monotonic()
        await scheduler.priority(f"d{i}.org")
        waits.append(clock.monotonic() - start)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert max(waits) <= 1 / 14 + 1e-9
    assert max(waits) > 0  # bulk was really competing for the permit
    assert len(picked) > 20


async def test_unlimited_scheduler_is_plain_round_robin() -> None:
    """With every limit off, picks never wait, priority returns at once, throttles are ignored."""
    scheduler, clock = make(global_per_second=None, domain_per_minute=None)
    scheduler.set_pending({"a.org": 2, "b.org": 1})
    await scheduler.priority("a.org")
    scheduler.feedback("a.org", 451)
    assert [await scheduler.next_bulk() for _ in range(4)] == ["a.org", "b.org", "a.org", None]
    assert clock.monotonic() == 0.0
    scheduler.add_pending("c.org", 2)
    assert scheduler.eta() is None
    assert scheduler.snapshot() == [GroupState("c.org", None, None, 2, None)]


# -- eta --------------------------------------------------------------------------------


def test_eta_follows_the_slowest_limit() -> None:
    """600 messages to one domain at 30/min take ~20 min however high the global limit."""
    scheduler, _ = make(global_per_second=1000.0)
    scheduler.set_pending({"big.org": 600, **{f"d{i}.org": 1 for i in range(100)}})
    assert scheduler.eta() == pytest.approx(599 * SPACING_30)
    many, _ = make(global_per_second=14.0)
    many.set_pending({f"d{i}.org": 2 for i in range(700)})
    assert many.eta() == pytest.approx(1400 / 14)


def test_eta_when_unknown_or_done() -> None:
    """eta is 0 with nothing pending and None when no limit says how long it takes."""
    scheduler, _ = make(global_per_second=None, domain_per_minute=None)
    assert scheduler.eta() == 0.0
    scheduler.add_pending("a.org")
    assert scheduler.eta() is None


def test_eta_uses_the_backed_off_rate() -> None:
    """A throttled domain's eta reflects its current, lower rate."""
    scheduler, _ = make(global_per_second=100.0)
    scheduler.set_pending({"a.org": 11})
    scheduler.feedback("a.org", 451)
    assert scheduler.eta() == pytest.approx(11 * 2 * SPACING_30)


# -- retry timing -------------------------------------------------------------------------


def test_first_retry_comes_after_first_retry_within_jitter() -> None:
    """The first retry is first_retry seconds away, give or take the jitter."""
    policy = RetryPolicy()
    rng = random.Random(1)
    delays = [
        policy.next_attempt_at(attempts=1, first_attempt_at=1000.0, now=1000.0, rng=rng) - 1000.0  # type: ignore[operator]
        for _ in range(200)
    ]
    assert 270.0 <= min(delays) < 285.0
    assert 315.0 < max(delays) <= 330.0


def test_retry_delays_grow_exponentially_to_the_cap() -> None:
    """Without jitter delays double from first_retry and stop at max_interval."""
    policy = RetryPolicy(jitter=0.0, max_age=1e9)
    rng = random.Random(0)
    delays = [
        policy.next_attempt_at(attempts=n, first_attempt_at=0.0, now=0.0, rng=rng)
        for n in (1, 2, 3, 4, 5, 6, 7, 100, 5000)
    ]
    assert delays == [300.0, 600.0, 1200.0, 2400.0, 4800.0, 9600.0, 14400.0, 14400.0, 14400.0]


def test_retry_gives_up_past_max_age() -> None:
    """None once the next attempt would come later than max_age after the first."""
    policy = RetryPolicy(jitter=0.0, max_age=3600.0)
    rng = random.Random(0)
    assert policy.next_attempt_at(attempts=2, first_attempt_at=0.0, now=2900.0, rng=rng) == 3500.0
    assert policy.next_attempt_at(attempts=2, first_attempt_at=0.0, now=3100.0, rng=rng) is None


def test_retry_is_deterministic_with_a_seeded_rng() -> None:
    """The same seed gives the same retry times."""
    policy = RetryPolicy()

    def times(seed: int) -> list[float | None]:
        rng = random.Random(seed)
        return [
            policy.next_attempt_at(attempts=n, first_attempt_at=0.0, now=0.0, rng=rng)
            for n in range(1, 8)
        ]

    assert times(7) == times(7)
    assert times(7) != times(8)


def test_retry_needs_at_least_one_attempt() -> None:
    """Asking for a retry before any attempt is a programming error."""
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy().next_attempt_at(attempts=0, first_attempt_at=0, now=0, rng=random.Random())


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_minute"),
    [
        ("30/min", 30.0),
        ("30/m", 30.0),
        (" 30 / minute ", 30.0),
        ("2/s", 120.0),
        ("2/sec", 120.0),
        ("100/h", 100 / 60),
        ("100/hours", 100 / 60),
        ("1440/d", 1.0),
        ("30", 30.0),
        ("7.5", 7.5),
        ("30/MIN", 30.0),
    ],
)
def test_parse_domain_rate(text: str, per_minute: float) -> None:
    """Rates with a unit convert to per minute; a bare number is per minute."""
    assert parse_domain_rate(text) == pytest.approx(per_minute)


@pytest.mark.parametrize(
    "text", ["", "fast", "0/min", "-3/min", "30/fortnight", "30/", "/min", "inf", "nan", "1e3"]
)
def test_parse_domain_rate_refuses_junk(text: str) -> None:
    """Anything but a positive number with an optional unit raises ConfigurationError."""
    with pytest.raises(ConfigurationError) as info:
        parse_domain_rate(text, setting="domain_rate")
    assert info.value.setting == "domain_rate"


# (settings class, keyword arguments, the setting the refusal names)
BAD_SETTINGS = [
    (RetryPolicy, {"first_retry": 0}, "first_retry"),
    (RetryPolicy, {"multiplier": 0.5}, "multiplier"),
    (RetryPolicy, {"max_interval": 10.0}, "max_interval"),
    (RetryPolicy, {"jitter": 1.0}, "jitter"),
    (RetryPolicy, {"max_age": -1}, "max_age"),
    (RateLimits, {"global_per_second": 0}, "global_per_second"),
    (RateLimits, {"global_per_second": -14.0}, "global_per_second"),
    (RateLimits, {"domain_per_minute": math.nan}, "domain_per_minute"),
    (RateLimits, {"domain_per_minute": math.inf}, "domain_per_minute"),
    (RateLimits, {"domain_overrides": {"a.org": 0}}, "domain_overrides['a.org']"),
    (RateLimits, {"domain_overrides": {" ": 3}}, "domain_overrides"),
    (RateLimits, {"domain_groups": {"a.org": ""}}, "domain_groups"),
    (RateLimits, {"throttle_codes": frozenset({250})}, "throttle_codes"),
    (RateLimits, {"backoff_factor": 1.0}, "backoff_factor"),
    (RateLimits, {"backoff_factor": 0.0}, "backoff_factor"),
    (RateLimits, {"min_domain_per_minute": 0.0}, "min_domain_per_minute"),
    (RateLimits, {"cooldown": 0.0}, "cooldown"),
    (RateLimits, {"spacing_margin": -0.01}, "spacing_margin"),
]


@pytest.mark.parametrize(("settings", "kwargs", "setting"), BAD_SETTINGS)
def test_retry_and_rate_settings_refuse_nonsense(
    settings: type[RetryPolicy | RateLimits], kwargs: dict[str, object], setting: str
) -> None:
    """Nonsensical retry settings or limits raise ConfigurationError at construction, naming
    the setting."""
    with pytest.raises(ConfigurationError) as info:
        settings(**kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting


def test_rate_limits_are_immutable_and_hashable() -> None:
    """The mappings are copied and frozen, so limits can be shared and hashed."""
    overrides = {"A.org": 10.0}
    limits = RateLimits(domain_overrides=overrides, domain_groups={"x.org": "X"})
    overrides["b.org"] = 5.0
    assert dict(limits.domain_overrides) == {"a.org": 10.0}
    assert limits.domain_groups == {"x.org": "x"}
    assert hash(limits) == hash(
        RateLimits(domain_overrides={"a.org": 10}, domain_groups={"X.org": "x"})
    )
    with pytest.raises(TypeError):
        limits.domain_overrides["c.org"] = 1.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.cooldown = 1.0  # type: ignore[misc]


# -- property ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    domains=st.lists(st.tuples(st.integers(1, 25), st.integers(1, 60)), min_size=1, max_size=5),
    global_rate=st.one_of(st.none(), st.floats(0.2, 50.0)),
    throttled=st.sets(st.integers(0, 80), max_size=6),
    margin=st.sampled_from([0.0, 0.02]),
)
def test_no_window_ever_overshoots(
    domains: list[tuple[int, int]],
    global_rate: float | None,
    throttled: set[int],
    margin: float,
) -> None:
    """Random sizes, limits and throttles: no domain's 60-s or global 1-s window overshoots."""
    names = [f"d{i}.org" for i in range(len(domains))]
    limits = RateLimits(
        global_per_second=global_rate,
        domain_overrides={
            name: float(limit) for name, (_, limit) in zip(names, domains, strict=True)
        },
        spacing_margin=margin,
        cooldown=60.0,
    )
    clock = ManualClock()
    scheduler = Scheduler(limits, clock=clock)
    scheduler.set_pending({name: size for name, (size, _) in zip(names, domains, strict=True)})

    async def run() -> dict[str, list[float]]:
        sent: dict[str, list[float]] = defaultdict(list)
        picks = 0
        while (domain := await scheduler.next_bulk()) is not None:
            sent[domain].append(clock.monotonic())
            if picks in throttled:
                scheduler.feedback(domain, 451)
            picks += 1
        return sent

    sent = asyncio.run(run())
    count = most_in_window if margin else most_in_open_window
    for name, (size, limit) in zip(names, domains, strict=True):
        assert len(sent[name]) == size
        assert count(sent[name], 60.0) <= limit
    if global_rate is not None:
        everything = [t for times in sent.values() for t in times]
        assert most_in_open_window(everything, 1.0) <= math.ceil(global_rate)


async def test_refresh_drops_work_of_grouped_domains() -> None:
    """A refresh that removes one member's work keeps the rest of its group's work."""
    scheduler, clock = make()
    scheduler.set_pending({"gmail.com": 2, "googlemail.com": 2, "a.org": 1})
    scheduler.set_pending({"googlemail.com": 1, "a.org": 1})
    sent = await drain(scheduler, clock)
    assert {d: len(t) for d, t in sent.items()} == {"googlemail.com": 1, "a.org": 1}


_DOMAINS = st.sampled_from(["a.org", "b.org", "gmail.com", "googlemail.com", "C.org", "c.org"])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.dictionaries(_DOMAINS, st.integers(0, 4), max_size=5)),
        st.tuples(st.just("add"), st.tuples(_DOMAINS, st.integers(0, 3))),
        st.tuples(st.just("pick"), st.integers(1, 4)),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS, unlimited=st.booleans())
def test_bookkeeping_matches_a_simple_model(ops: list[tuple[str, object]], unlimited: bool) -> None:
    """Any mix of set_pending, add_pending and picks hands out exactly the work it was given."""
    rate = None if unlimited else 30.0
    scheduler = Scheduler(
        RateLimits(global_per_second=None if unlimited else 50.0, domain_per_minute=rate),
        clock=ManualClock(),
    )
    model: dict[str, int] = {}

    async def run() -> None:
        for op, arg in ops:
            if op == "set":
                assert isinstance(arg, dict)
                scheduler.set_pending(arg)
                model.clear()
                model.update({d: n for d, n in arg.items() if n})
            elif op == "add":
                assert isinstance(arg, tuple)
                scheduler.add_pending(*arg)
                if arg[1]:
                    model[arg[0]] = model.get(arg[0], 0) + arg[1]
            else:
                assert isinstance(arg, int)
                for _ in range(arg):
                    domain = await scheduler.next_bulk()
                    if domain is None:
                        assert not model
                        break
                    assert model.get(domain, 0) > 0
                    model[domain] -= 1
                    if not model[domain]:
                        del model[domain]
            assert scheduler.pending() == sum(model.values())
        while (domain := await scheduler.next_bulk()) is not None:
            model[domain] -= 1
        assert not any(model.values())

    asyncio.run(run())


def test_try_next_bulk_never_waits_and_respects_spacing() -> None:
    """try_next_bulk grants only what is allowed now, and never moves the clock."""
    clock = ManualClock()
    scheduler = Scheduler(RateLimits(global_per_second=None, domain_per_minute=60), clock=clock)
    scheduler.set_pending({"a.example": 2, "b.example": 1})
    granted = [scheduler.try_next_bulk() for _ in range(4)]
    assert sorted(d for d in granted if d) == ["a.example", "b.example"]
    assert granted[2:] == [None, None]  # a.example's second message must wait ~1 s
    assert clock.monotonic() == 0
    assert clock.sleeps == []
    clock.advance(60 / 60 * 1.02)
    assert scheduler.try_next_bulk() == "a.example"
    assert scheduler.try_next_bulk() is None
    assert scheduler.pending() == 0


def test_try_next_bulk_unlimited_drains_round_robin() -> None:
    """With limits off, try_next_bulk hands out every pending message at once, interleaved."""
    scheduler = Scheduler(RateLimits(global_per_second=None, domain_per_minute=None))
    scheduler.set_pending({"a.example": 2, "b.example": 2})
    granted = [scheduler.try_next_bulk() for _ in range(5)]
    assert granted[:4].count("a.example") == 2
    assert granted[:2] != ["a.example", "a.example"]
    assert granted[4] is None
