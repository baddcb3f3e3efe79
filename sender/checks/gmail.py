"""Is this sender a Gmail bulk sender? Counted from the outbox, with what that requires.

Google calls a sender a *bulk sender* once it sends close to 5,000 messages or more to
personal Gmail accounts within 24 hours, counted over everything sent from the same
organizational ("primary") domain, and keeps calling it one from then on (Google's
Email sender guidelines FAQ). A bulk sender must:

- pass SPF **and** DKIM, publish DMARC (``p=none`` at least), and align the From domain
  with the SPF or the DKIM domain;
- carry one-click unsubscribe (RFC 8058 ``List-Unsubscribe`` and
  ``List-Unsubscribe-Post``) on subscription mail, honoured within two days;
- keep the spam rate that Postmaster Tools shows below 0.3%.

What counts here, and why:

- **Recipient domains ``gmail.com`` and ``googlemail.com`` only** (:data:`GMAIL_DOMAINS`).
  Those are the personal Gmail accounts the threshold counts. Domains whose MX is Google's
  are Google Workspace customers: their mail is not "to personal Gmail accounts", the
  FAQ says the requirements do not apply to Workspace inbound mail, and finding them
  would need an MX look-up per recipient domain. They are left out, on purpose.
- **Per UTC day**, from the attempt log (:meth:`sender.store.base.Volume.sent_per_day`):
  the highest day in the last ``days`` days. Google's window is any 24 hours, so a day
  split across two UTC days can hide a peak; :data:`NEAR` leaves room for that.
- **A projection**: today's count so far plus every message still to send to Gmail in
  runs that are not done (:meth:`~sender.store.base.Volume.pending_to`), as if they all
  went out today. Pacing may spread them over several days; the projection says what the
  queue *could* do.

:func:`gmail_bulk_estimate` is the library function (``sender doctor`` and the admin health
page call it); :func:`gmail_check` turns an estimate and a doctor report into one check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sender.checks.doctor import Check, DoctorReport
from sender.errors import ConfigurationError
from sender.store.base import DailySent, Volume

__all__ = [
    "BULK_THRESHOLD",
    "DEFAULT_DAYS",
    "GMAIL_DOMAINS",
    "NEAR",
    "REQUIREMENTS",
    "GmailEstimate",
    "estimate_from",
    "gmail_bulk_estimate",
    "gmail_check",
]

GMAIL_DOMAINS = ("gmail.com", "googlemail.com")  # personal Gmail accounts
BULK_THRESHOLD = 5_000  # messages a day to personal Gmail accounts
NEAR = 4_000  # "close to 5,000": 80% of it, our choice (Google gives no number)
DEFAULT_DAYS = 30
_DAY = 86_400

#: What Gmail requires of a bulk sender, and which doctor checks show each (none: not DNS).
REQUIREMENTS: Mapping[str, tuple[str, ...]] = {
    "SPF passes": ("spf", "spf-lookups", "spf-void"),
    "DKIM passes": ("dkim",),
    "DMARC is published": ("dmarc",),
    "From aligns with SPF or DKIM": ("dmarc-alignment",),
    "one-click unsubscribe (RFC 8058) on subscription mail": (),
    "spam rate below 0.3% (Postmaster Tools)": (),
}


@dataclass(frozen=True, slots=True)
class GmailEstimate:
    """Mail to personal Gmail accounts: per day in the window, the peak, and the projection."""

    days: int  # the window, in UTC days, today included
    per_day: tuple[tuple[str, int], ...]  # ("YYYY-MM-DD", sent) for each day with any, oldest first
    peak_date: str | None  # the day with the most (the latest of equal ones); None: nothing sent
    peak: int
    today: int  # sent so far today (UTC)
    pending: int  # still to send to Gmail in runs that are not done
    threshold: int = BULK_THRESHOLD

    @property
    def projected(self) -> int:
        """Today's count if everything still queued for Gmail went out today."""
        return self.today + self.pending

    @property
    def status(self) -> str:
        """``bulk`` (a day reached the threshold), ``near`` (close to it, or projected to
        reach it), or ``below``."""
        if self.peak >= self.threshold:
            return "bulk"
        if self.peak >= NEAR or self.projected >= NEAR:
            return "near"
        return "below"

    def as_dict(self) -> dict[str, object]:
        """Plain data for ``--json`` and the health page."""
        return {
            "domains": list(GMAIL_DOMAINS),
            "days": self.days,
            "per_day": [{"date": date, "sent": sent} for date, sent in self.per_day],
            "peak_date": self.peak_date,
            "peak": self.peak,
            "today": self.today,
            "pending": self.pending,
            "projected": self.projected,
            "threshold": self.threshold,
            "status": self.status,
            "requirements": list(REQUIREMENTS),
        }


def estimate_from(
    daily: Sequence[DailySent], pending: Mapping[str, int], /, *, now: float, days: int
) -> GmailEstimate:
    """The estimate from the store's answers (no store: pass ``[]`` and ``{}``)."""
    today = int(now // _DAY)
    totals: dict[int, int] = {}
    dates: dict[int, str] = {}
    for row in daily:
        if today - days < row.day <= today:
            totals[row.day] = totals.get(row.day, 0) + row.sent
            dates[row.day] = row.date
    peak_day = max(totals, key=lambda day: (totals[day], day), default=None)
    return GmailEstimate(
        days=days,
        per_day=tuple((dates[day], totals[day]) for day in sorted(totals)),
        peak_date=dates[peak_day] if peak_day is not None else None,
        peak=totals[peak_day] if peak_day is not None else 0,
        today=totals.get(today, 0),
        pending=sum(pending.get(domain, 0) for domain in GMAIL_DOMAINS),
    )


async def gmail_bulk_estimate(
    store: Volume, /, *, now: float, days: int = DEFAULT_DAYS
) -> GmailEstimate:
    """Whether this sender crosses 5,000 messages a day to Gmail: last ``days`` UTC days.

    Two index-free queries (the attempt log since the window's first midnight, and the
    unsent messages); ask on demand, not per message.
    """
    if not 1 <= days <= 366:
        raise ConfigurationError("days must be 1 to 366", setting="gmail_days")
    since = (int(now // _DAY) - days + 1) * _DAY
    daily = await store.sent_per_day(GMAIL_DOMAINS, since=since)
    pending = await store.pending_to(GMAIL_DOMAINS)
    return estimate_from(daily, pending, now=now, days=days)


def gmail_check(estimate: GmailEstimate, report: DoctorReport | None = None, /) -> Check:
    """``gmail-bulk``: the estimate in one line and, for a (near) bulk sender, what is missing.

    With ``report`` (the doctor's), the DNS requirements are read from its checks: a
    requirement fails when one of its checks is not ok, or when DKIM was not checked.
    Below the threshold the check is ok; near it, missing requirements only warn.
    """
    if estimate.peak_date is None:
        seen = f"nothing sent to Gmail in the last {estimate.days} days"
    else:
        seen = (
            f"at most {estimate.peak} a day to Gmail in the last {estimate.days} days "
            f"(on {estimate.peak_date})"
        )
    projection = f"{estimate.today} today + {estimate.pending} queued = {estimate.projected}"
    head = f"Gmail: {seen}; projected {projection}; bulk senders send {estimate.threshold}+"
    unsubscribe = "subscription mail needs one-click unsubscribe (RFC 8058)"
    if estimate.status == "below":
        return Check("gmail-bulk", True, f"{head}: not a bulk sender.")
    missing: list[str] = []
    if report is not None:
        found = {check.name: check for check in report.checks}
        for requirement, names in REQUIREMENTS.items():
            checks = [found[name] for name in names if name in found]
            failed = any(not c.ok or c.unknown for c in checks)
            unchecked = any(c.name == "dkim" and "not checked" in c.message for c in checks)
            if failed or unchecked:
                missing.append(requirement + (" (not checked)" if unchecked else ""))
    word = "a bulk sender" if estimate.status == "bulk" else "close to bulk"
    if missing:
        message = f"{head}: {word}, and Gmail requires: {'; '.join(missing)}; {unsubscribe}."
        return Check("gmail-bulk", False, message, advisory=estimate.status == "near")
    message = f"{head}: {word}; SPF, DKIM and DMARC align as required; {unsubscribe}."
    return Check("gmail-bulk", True, message)
