"""Who sender will not write to, and when bulk sending must stop: the bounce loop's rules.

Providers suspend an account at about 100 bounces a day, so sender keeps well clear:

- a **hard bounce** or a **complaint** suppresses the address at once;
- **soft bounces** suppress after ``soft_limit`` within ``soft_window`` (3 in 7 days),
  counting only those since the address last accepted a message;
- an **auto-reply** is never a bounce;
- a bounce whose signed return path does not verify is kept as forged and changes
  nothing, so nobody can get a participant suppressed by mailing a fake bounce;
- the **bounce budget**: ``budget`` hard bounces in a sliding 24 hours (80 by
  default), or a hard-bounce rate above ``max_rate`` once ``min_sent`` messages went
  out in that window, pauses bulk sending until an operator resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sender.errors import ConfigurationError
from sender.store import BounceRecord, Store

__all__ = ["BouncePolicy", "apply_bounce", "budget_reason"]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class BouncePolicy:
    """When bounces suppress an address, and when they pause bulk sending."""

    soft_limit: int = 3
    soft_window: float = 7 * DAY
    budget: int = 80  # hard bounces per window; providers suspend at about 100 a day
    max_rate: float = 0.05  # hard bounces / messages sent in the window ...
    min_sent: int = 200  # ... judged once this many were sent
    window: float = DAY
    pause_single_sends: bool = False  # get_link and one invitation still go by default

    def __post_init__(self) -> None:
        if self.soft_limit < 1 or self.budget < 1 or self.min_sent < 1:
            raise ConfigurationError("bounce limits must be at least 1", setting="bounce_budget")
        if not 0 < self.max_rate <= 1 or self.window <= 0 or self.soft_window <= 0:
            raise ConfigurationError(
                "bounce rate must be in (0, 1] and windows positive", setting="bounce_budget"
            )


async def apply_bounce(
    store: Store, record: BounceRecord, /, *, policy: BouncePolicy, now: float
) -> str | None:
    """Keep one bounce and apply the rules; returns why the address was suppressed, if it was.

    A bounce seen before (same fingerprint) changes nothing the second time.
    """
    if not await store.add_bounce(record) or record.forged or not record.address:
        return None
    if record.kind in ("hard", "complaint"):
        why = f"{record.kind} bounce" + (f" {record.status}" if record.status else "")
        if record.kind == "complaint":
            why = "complaint (marked as spam)"
        if await store.suppress(record.address, kind=record.kind, reason=why, now=now):
            return why
        return None
    if record.kind == "soft":
        count = await store.count_bounces(
            record.address, kind="soft", since=now - policy.soft_window
        )
        if count >= policy.soft_limit:
            days = policy.soft_window / DAY
            why = f"{count} soft bounces within {days:g} days"
            if await store.suppress(record.address, kind="soft", reason=why, now=now):
                return why
    return None


async def budget_reason(store: Store, /, *, policy: BouncePolicy, now: float) -> str | None:
    """Why bulk sending must pause now, or None while the bounce budget holds."""
    since = now - policy.window
    hard = await store.hard_bounces_since(since)
    hours = policy.window / 3600
    if hard >= policy.budget:
        return (
            f"bounce budget: {hard} hard bounces in {hours:g} h (limit {policy.budget}); "
            "clean up the addresses (`sender bounces report`), then resume"
        )
    if hard >= policy.min_sent * policy.max_rate:  # only then can the rate be exceeded
        sent = await store.sent_since(since)
        if sent >= policy.min_sent and hard / sent > policy.max_rate:
            return (
                f"bounce rate: {hard} hard bounces for {sent} messages in {hours:g} h "
                f"({hard / sent:.1%} > {policy.max_rate:.0%}); clean up, then resume"
            )
    return None
