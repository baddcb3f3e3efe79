"""Who sender will not write to, and when bulk sending must stop: the bounce loop's rules.

Providers suspend an account at about 100 bounces a day, so sender keeps well clear. What
a finding does follows from its reason (:data:`sender.vocabulary.REASON_RULES`):

- **the address is dead** (user unknown, host unknown, has moved, not accepting mail) in a
  permanent report, or **a complaint**: the address is suppressed at once;
- **the mailbox is unwell** (full, suspended, over quota, expired; and a temporary
  "user unknown"): suppressed after ``soft_limit`` within ``soft_window`` (3 in 7 days),
  counting only those since the address last accepted a message;
- **the sender or the message was refused** (SPF/DKIM/DMARC, a blocklisted IP, a content
  filter, ...): the participant is never suppressed. The refusal is kept with its reason
  and shown per receiving provider with the doctor's hint (:func:`sender_side_problems`);
  ``sender_side_pause`` of them from one provider within ``sender_side_window`` pause bulk
  mail to that provider (:func:`paused_providers`), while other providers go on;
- an **auto-reply**, a delivery report, a greylisting or a delay warning changes nothing;
- a recipient **refused in the SMTP dialogue** (4xx or 5xx at RCPT or DATA) is a bounce
  like a DSN, classified from the reply (:func:`keep_refusal`): one per message;
- a bounce whose signed return path does not verify is kept as forged and changes
  nothing, so nobody can get a participant suppressed by mailing a fake bounce;
- the **bounce budget**: ``budget`` hard-bounced addresses in a sliding 24 hours
  (80 by default; copies of a bounce, or many for one address, count once), or a
  hard-bounce rate above ``max_rate`` once ``min_sent`` messages went out in that
  window, pauses bulk sending until an operator resumes it;
- the **complaint rate**: complaints / delivered over ``window`` (24 h), per stream and per
  sending domain (the streams that share a From domain share its reputation). Above
  ``complaint_warn`` (0.1%) ``sender status`` warns; above ``complaint_pause`` (0.3%, the
  line where Gmail stops delivering) bulk runs of the stream pause with the reason, by
  the budget's own mechanism (:func:`budget_reason`). Judged only once
  ``complaint_min_delivered`` (1000) messages were delivered in the window, where one
  complaint is 0.1%: below that a rate says nothing yet.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sender.addresses import address_key, domain_of
from sender.compose.links import ReturnPathSigner, message_of_key, participant_of_key
from sender.config import DAY, BouncePolicy
from sender.feedback.bounces import (
    Bounce,
    BounceKind,
    action_of,
    classify,
    envelope_recipients,
    parse_bounce,
    parse_ses_notification,
)
from sender.models import DeliveryResult, Participant
from sender.store import BounceRecord, Budget, Feedback
from sender.vocabulary import REASON_RULES, Action, Reason, reason_of, reasons_with

__all__ = [
    "COUNTED_REASONS",
    "REPORT_FIELDS",
    "SENDER_SIDE_REASONS",
    "BounceOutcome",
    "CleanupRow",
    "ComplaintRate",
    "SenderSideProblem",
    "apply_bounce",
    "bounce_report",
    "bounce_verdict",
    "budget_reason",
    "cleanup_report",
    "complaint_rates",
    "complaint_reason",
    "ingest_bounce",
    "ingest_ses_notification",
    "is_budget_pause",
    "keep_refusal",
    "paused_providers",
    "provider_of",
    "recommend",
    "sender_side_problems",
]

#: Reasons whose findings count toward ``soft_limit``: an unwell mailbox, and a dead-address
#: reason in a temporary report (a permanent one suppressed at once).
COUNTED_REASONS = frozenset(
    {*reasons_with(Action.COUNT), *reasons_with(Action.SUPPRESS)} - {Reason.COMPLAINT}
)
#: Reasons that say the sender or the message was refused, not the address.
SENDER_SIDE_REASONS = reasons_with(Action.SENDER_SIDE)


async def apply_bounce(
    store: Feedback, record: BounceRecord, /, *, policy: BouncePolicy, now: float
) -> str | None:
    """Keep one bounce and apply the rules; returns why the address was suppressed, if it was.

    The action comes from the record's reason and kind (:func:`~sender.feedback.bounces.action_of`).
    A bounce seen before (same fingerprint) changes nothing the second time.
    """
    if not await store.add_bounce(record) or record.forged or not record.address:
        return None
    action = action_of(record.reason, record.kind)
    if action is Action.SUPPRESS:
        status = f" {record.status}" if record.status else ""
        why = f"{record.kind} bounce{status} ({record.reason})"
        if record.kind == "complaint":
            why = "complaint (marked as spam)"
        if await store.suppress(record.address, kind=record.kind, reason=why, now=now):
            return why
        return None
    if action is Action.COUNT:
        count = await store.count_bounces(
            record.address, reasons=COUNTED_REASONS, since=now - policy.soft_window
        )
        if count >= policy.soft_limit:
            days = policy.soft_window / DAY
            why = f"{count} soft bounces within {days:g} days ({record.reason})"
            if await store.suppress(record.address, kind="soft", reason=why, now=now):
                return why
    return None


_BUDGET, _RATE = "bounce budget", "bounce rate"  # how budget_reason's reasons begin
_COMPLAINTS = "complaint rate"


def is_budget_pause(reason: str | None, /) -> bool:
    """Whether a run's paused reason is :func:`budget_reason`'s (``--force`` goes on)."""
    return bool(reason) and str(reason).startswith((_BUDGET, _RATE, _COMPLAINTS))


@dataclass(frozen=True, slots=True)
class ComplaintRate:
    """Complaints / delivered over the window, for one stream or one sending domain."""

    scope: str  # "stream" or "domain"
    name: str  # the stream, or the sending domain
    streams: tuple[str, ...]  # the streams it covers
    delivered: int
    complaints: int
    level: str  # "ok", "warn", "pause", or "too_few" (below complaint_min_delivered)

    @property
    def rate(self) -> float:
        return self.complaints / self.delivered if self.delivered else 0.0

    def describe(self, hours: float) -> str:
        what = f"{self.name} mail" if self.scope == "stream" else f"mail from {self.name}"
        return (
            f"{_COMPLAINTS} {self.rate:.2%} for {what}: {self.complaints} complaint(s) for "
            f"{self.delivered} delivered in {hours:g} h"
        )


def _level(delivered: int, complaints: int, policy: BouncePolicy) -> str:
    if delivered < policy.complaint_min_delivered:
        return "too_few"
    rate = complaints / delivered
    if rate > policy.complaint_pause:
        return "pause"
    return "warn" if rate > policy.complaint_warn else "ok"


async def complaint_rates(
    store: Budget, /, *, policy: BouncePolicy, now: float, domains: Mapping[str, str]
) -> list[ComplaintRate]:
    """Each stream's and each sending domain's complaint rate over ``policy.window``.

    ``domains`` maps each stream to its sending domain (its From's,
    :meth:`~sender.config.SenderSettings.sending_domains`). Without a complaint in the
    window this is one indexed count and ``[]``.
    """
    counts = await store.complaints_by_stream(now - policy.window)
    if not counts:
        return []
    rates = [
        ComplaintRate("stream", stream, (stream,), sent, n, _level(sent, n, policy))
        for stream, (sent, n) in counts.items()
    ]
    by_domain: dict[str, list[str]] = {}
    for stream in counts:
        by_domain.setdefault(domains.get(stream, "?"), []).append(stream)
    for domain, streams in sorted(by_domain.items()):
        sent = sum(counts[s][0] for s in streams)
        n = sum(counts[s][1] for s in streams)
        rates.append(
            ComplaintRate("domain", domain, tuple(streams), sent, n, _level(sent, n, policy))
        )
    return rates


def complaint_reason(
    rates: Sequence[ComplaintRate], stream: str, /, *, policy: BouncePolicy
) -> str | None:
    """Why bulk runs of ``stream`` must pause: its rate, or its sending domain's, is above
    ``complaint_pause``; None otherwise."""
    for rate in rates:
        if rate.level == "pause" and stream in rate.streams:
            return (
                f"{rate.describe(policy.window / 3600)} (> {policy.complaint_pause:.1%}); "
                "find out why people mark it as spam (`sender bounces report`), then resume"
            )
    return None


async def budget_reason(
    store: Budget,
    /,
    *,
    policy: BouncePolicy,
    now: float,
    stream: str | None = None,
    domains: Mapping[str, str] | None = None,
) -> str | None:
    """Why bulk sending must pause now, or None while the bounce budget holds.

    With ``stream`` (a bulk run's), its complaint rate is judged too
    (:func:`complaint_rates`; ``domains`` maps streams to sending domains).
    """
    reason = await _bounce_reason(store, policy=policy, now=now)
    if reason is not None or stream is None:
        return reason
    rates = await complaint_rates(store, policy=policy, now=now, domains=domains or {})
    return complaint_reason(rates, stream, policy=policy)


async def _bounce_reason(store: Budget, /, *, policy: BouncePolicy, now: float) -> str | None:
    since = now - policy.window
    hard = await store.hard_bounces_since(since)
    # The messages sent are counted only when the rate can be exceeded: the costlier query.
    rate_matters = policy.budget > hard >= policy.min_sent * policy.max_rate
    sent = await store.sent_since(since) if rate_matters else 0
    return bounce_verdict(hard, sent, policy=policy)


def bounce_verdict(hard: int, sent: int, /, *, policy: BouncePolicy) -> str | None:
    """Why bulk sending must pause, given ``hard`` hard-bounced addresses and ``sent``
    messages in the policy's window (0 when the rate cannot be exceeded), or None."""
    hours = policy.window / 3600
    if hard >= policy.budget:
        return (
            f"{_BUDGET}: {hard} hard-bounced addresses in {hours:g} h "
            f"(limit {policy.budget}); "
            "clean up the addresses (`sender bounces report`), then resume"
        )
    if sent >= policy.min_sent and hard / sent > policy.max_rate:
        return (
            f"{_RATE}: {hard} hard-bounced addresses for {sent} messages in {hours:g} h "
            f"({hard / sent:.1%} > {policy.max_rate:.0%}); clean up, then resume"
        )
    return None


async def keep_refusal(
    store: Feedback,
    result: DeliveryResult,
    /,
    *,
    key: str,
    policy: BouncePolicy,
    now: float,
    message: int | None = None,
) -> str | None:
    """Keep a recipient the server refused at RCPT or DATA as a bounce, and apply the rules.

    A synchronous refusal is a bounce like a DSN: classified from the reply's code,
    enhanced status and text into a reason, then suppression, the budget and the
    provider pause treat it the same (a 550 5.7.26 DMARC refusal suppresses nobody).
    ``key`` names the message sent (``m<outbox id>``, or a single send's Message-ID), so
    a message retried after a 4xx keeps one soft bounce, not one per attempt. Anything
    else (accepted, a refused MAIL FROM, a lost connection) keeps nothing. Returns why
    the address was suppressed now, if it was.
    """
    reply = result.reply
    if reply is None or not result.refused_recipient:
        return None
    kind, reason = classify(reply.enhanced_status, reply.text, code=reply.code)
    record = BounceRecord(
        fingerprint=f"smtp:{key}:{kind.value}",
        address=result.email,
        kind=kind.value,
        status=reply.enhanced_status,
        diagnostic=str(reply),
        reason=reason.value,
        at=now,
        source="smtp",
        message=message,
        participant_id=result.participant_id,
    )
    return await apply_bounce(store, record, policy=policy, now=now)


@dataclass(frozen=True, slots=True)
class BounceOutcome:
    """One finding of a bounce as kept, and whether it suppressed its address now."""

    record: BounceRecord
    suppressed: str | None  # why the address was suppressed by this bounce, if it was


async def ingest_bounce(
    store: Feedback,
    data: bytes,
    /,
    *,
    return_paths: ReturnPathSigner | None,
    policy: BouncePolicy,
    now: float,
    envelope_to: str | None = None,
    source: str = "",
) -> list[BounceOutcome]:
    """Parse one message, attribute each finding, keep it and apply the rules.

    ``envelope_to`` is the address the bounce came in for (the inbound listener's
    RCPT TO); without it, the headers a saved file keeps are read. A bounce sent to
    the bounce domain must carry a return path we signed: it then names the exact
    outbox message, even when the report names no address. One that does not
    verify is kept as forged and changes nothing. A message already ingested
    (the same bytes) is not counted again. Mail that is no bounce at all (a person
    writing to the bounce domain) returns ``[]``: it is for a person to read, not a
    forgery; only when it came to a return path that verifies is it noted, attributed,
    as ``unknown`` (the clean-up report's "review by hand").
    """
    findings = parse_bounce(data)
    candidates = [envelope_to] if envelope_to else envelope_recipients(data)
    if not findings:
        ours = [a for a in candidates if return_paths is not None and return_paths.owns(a)]
        if return_paths is None or not any(return_paths.verify(a) is not None for a in ours):
            return []
        # Mail to a signed return path that no detector understood: attributed by the
        # return path, and never counted as a hard bounce.
        findings = [Bounce(None, BounceKind.UNKNOWN, None, "", Reason.UNDEFINED)]
    digest = hashlib.sha256(data).hexdigest()[:32]
    return await _keep(
        store,
        findings,
        candidates,
        digest,
        return_paths=return_paths,
        policy=policy,
        now=now,
        source=source,
    )


async def ingest_ses_notification(
    store: Feedback,
    payload: str | bytes | Mapping[str, object],
    /,
    *,
    policy: BouncePolicy,
    now: float,
    source: str = "ses",
) -> list[BounceOutcome]:
    """Keep what an Amazon SES bounce or complaint notification says, for an LMS endpoint.

    SES reports the recipient itself, so no return path is needed. The SNS
    signature is not checked here: the endpoint must verify it (or be private).
    """
    findings = parse_ses_notification(payload)
    raw = payload if isinstance(payload, str | bytes) else json.dumps(payload, sort_keys=True)
    blob = raw.encode() if isinstance(raw, str) else raw
    digest = hashlib.sha256(blob).hexdigest()[:32]
    return await _keep(
        store, findings, [], digest, return_paths=None, policy=policy, now=now, source=source
    )


async def _keep(
    store: Feedback,
    findings: Sequence[Bounce],
    candidates: Sequence[str],
    digest: str,
    *,
    return_paths: ReturnPathSigner | None,
    policy: BouncePolicy,
    now: float,
    source: str,
) -> list[BounceOutcome]:
    message_id: int | None = None
    participant_id: str | None = None
    owner: str | None = None  # the address our own records say the message went to
    forged = False
    ours = [a for a in candidates if return_paths is not None and return_paths.owns(a)]
    if ours and return_paths is not None:
        key = next((k for a in ours if (k := return_paths.verify(a)) is not None), None)
        if key is None:
            forged = True
        else:
            message_id = message_of_key(key)
            if message_id is not None:
                sent = await store.message(message_id)
                if sent is not None:
                    owner, participant_id = address_key(sent.email), sent.participant_id
            elif key.startswith("p"):
                participant_id = participant_of_key(key)
    outcomes = []
    for index, finding in enumerate(findings):
        # A verified return path is the authority: a forwarded mailbox may report
        # another address than the one we wrote to.
        address = owner or finding.recipient
        record = BounceRecord(
            fingerprint=f"{digest}:{index}",
            address=address,
            kind=finding.kind.value,
            status=finding.status,
            diagnostic=finding.diagnostic,
            reason=finding.reason.value,
            at=now,
            source=source,
            message=message_id,
            participant_id=participant_id,
            forged=forged,
        )
        why = await apply_bounce(store, record, policy=policy, now=now)
        outcomes.append(BounceOutcome(record, why))
    return outcomes


@dataclass(frozen=True, slots=True)
class CleanupRow:
    """One affected participant in the clean-up report, with what to do and why."""

    address: str
    participant: Participant | None  # None when no run ever had this address
    kind: str  # of the finding that decides: its action's, then the latest
    status: str | None
    diagnostic: str
    reason: str
    count: int
    first_at: float
    last_at: float
    suppressed: bool
    action: str  # "change address", "disable account", "disable mail", ...
    rule: str  # why that action
    sender_side: bool = False  # only the sender or the message was refused: not the address

    def as_dict(self, get_link: Callable[[Participant], str], /) -> dict[str, object]:
        """The row as ``sender bounces report`` writes it (CSV, ``--json``, the HTTP API),
        with a fresh Get Link from ``get_link`` for a known participant."""
        person = self.participant
        return {
            "participant_id": person.participant_id if person else "",
            "name": person.name if person else "",
            "email": self.address,
            "kind": self.kind,
            "reason": self.reason,
            "sender_side": self.sender_side,
            "status": self.status or "",
            "diagnostic": self.diagnostic,
            "count": self.count,
            "last_bounce": datetime.fromtimestamp(self.last_at, UTC).isoformat(),
            "suppressed": self.suppressed,
            "action": self.action,
            "rule": self.rule,
            "get_link": get_link(person) if person else "",
        }


#: The clean-up report's columns, in order (``sender bounces report --csv``, the admin
#: pages' CSV): :meth:`CleanupRow.as_dict`'s keys.
REPORT_FIELDS = (
    "participant_id",
    "name",
    "email",
    "kind",
    "reason",
    "sender_side",
    "status",
    "diagnostic",
    "count",
    "last_bounce",
    "suppressed",
    "action",
    "rule",
    "get_link",
)

# Which finding decides a row: a complaint, then a dead address, then an unwell mailbox,
# then a sender-side refusal; auto-replies and the like never make a row.
_SEVERITY = {Action.SUPPRESS: 4, Action.COUNT: 3, Action.SENDER_SIDE: 2}


def recommend(kind: str, reason: str, *, first_at: float, last_at: float) -> tuple[str, str]:
    """The action an admin should take for an address, and the rule behind it.

    It follows from the reason (:data:`~sender.vocabulary.REASON_RULES`); for a sender-side
    refusal it is the doctor's hint, since the participant's address is fine.
    """
    known = reason_of(reason)
    if kind == "complaint" or known is Reason.COMPLAINT:
        return "disable mail", "the participant marked our mail as spam: write no more"
    action = action_of(known, kind)
    if action is Action.SENDER_SIDE:
        return (
            f"fix the sending side: {REASON_RULES[known].hint}",
            f"the receiving server refused the sender or the message ({known}), not the address",
        )
    if known in {Reason.HOST_UNKNOWN, Reason.NOT_ACCEPTING}:
        return "change address", "the domain does not exist or accepts no mail"
    if known is Reason.HAS_MOVED:
        return "change address", "the mailbox has moved and left no forwarding address"
    if known is Reason.USER_UNKNOWN and action is Action.SUPPRESS:
        if last_at - first_at >= 30 * DAY:
            return "disable account", "the mailbox is unknown and still bounced 30 days later"
        return "change address", "the mailbox does not exist at that domain"
    if known in {Reason.MAILBOX_FULL, Reason.QUOTA_EXCEEDED}:
        return (
            "ask the participant to free space, then remove the suppression",
            "the mailbox is full",
        )
    if known is Reason.SUSPENDED:
        return (
            "ask the participant whether the account still exists, or change address",
            "the mailbox is disabled or suspended",
        )
    if action is Action.COUNT and known is not Reason.UNDEFINED:
        return (
            "wait, then retry",
            f"{known}: suppressed only after repeated failures",
        )
    return "review by hand", "the bounce could not be classified"


async def cleanup_report(store: Feedback, /, *, since: float) -> list[CleanupRow]:
    """One row per address with bounces (not auto-replies, not forged) since ``since``.

    A row whose findings are all sender-side says so (``sender_side``): the address is
    fine, and :func:`sender_side_problems` sums them up per provider.
    """
    grouped: dict[str, list[BounceRecord]] = {}
    for record in await store.bounces(since=since):
        if record.forged or not record.address:
            continue
        if action_of(record.reason, record.kind) is Action.NOTHING and record.kind != "unknown":
            continue
        grouped.setdefault(record.address, []).append(record)
    people = await store.participants_by_address(list(grouped))
    suppressed = await store.suppressed(list(grouped))
    rows = []
    for address, records in sorted(grouped.items()):
        worst = max(
            records,
            key=lambda r: (
                _SEVERITY.get(action_of(r.reason, r.kind), 1),
                r.kind == "complaint",
                r.at,
            ),
        )
        first_at = min(r.at for r in records)
        last_at = max(r.at for r in records)
        action, rule = recommend(worst.kind, worst.reason, first_at=first_at, last_at=last_at)
        rows.append(
            CleanupRow(
                address=address,
                participant=people.get(address),
                kind=worst.kind,
                status=worst.status,
                diagnostic=worst.diagnostic,
                reason=worst.reason,
                count=len(records),
                first_at=first_at,
                last_at=last_at,
                suppressed=address in suppressed,
                action=action,
                rule=rule,
                sender_side=action_of(worst.reason, worst.kind) is Action.SENDER_SIDE,
            )
        )
    return rows


# --- sender-side refusals, per receiving provider --------------------------------------


def provider_of(address: str, groups: Mapping[str, str], /) -> str:
    """The receiving provider of an address: its domain's group (pacing's domain groups)."""
    domain = domain_of(address).lower().rstrip(".")
    return groups.get(domain, domain)


@dataclass(frozen=True, slots=True)
class SenderSideProblem:
    """Refusals of the sender or the message by one receiving provider, for one reason."""

    provider: str  # the domain, or its group (gmail.com for googlemail.com)
    reason: str
    count: int
    first_at: float
    last_at: float
    hint: str  # the doctor's hint for the reason
    diagnostic: str  # the latest refusal's words
    paused: bool  # bulk mail to this provider is paused now (:func:`paused_providers`)


async def bounce_report(
    store: Feedback,
    /,
    *,
    since: float,
    now: float,
    policy: BouncePolicy,
    groups: Mapping[str, str],
) -> tuple[list[CleanupRow], list[SenderSideProblem]]:
    """The clean-up report since ``since``: the affected addresses, and the sender-side
    refusals per provider (the addresses are fine there; the sending side needs fixing)."""
    rows = await cleanup_report(store, since=since)
    problems = await sender_side_problems(store, since=since, now=now, policy=policy, groups=groups)
    return rows, problems


async def sender_side_problems(
    store: Feedback,
    /,
    *,
    since: float,
    now: float,
    policy: BouncePolicy,
    groups: Mapping[str, str],
) -> list[SenderSideProblem]:
    """Sender-side refusals since ``since``, one entry per provider and reason, most first."""
    records = [
        r
        for r in await store.bounces(
            since=min(since, now - policy.sender_side_window), reasons=SENDER_SIDE_REASONS
        )
        if not r.forged and r.address
    ]
    paused = _paused(records, policy=policy, now=now, groups=groups)
    grouped: dict[tuple[str, str], list[BounceRecord]] = {}
    for record in records:
        if record.at >= since:
            key = (provider_of(record.address or "", groups), record.reason)
            grouped.setdefault(key, []).append(record)
    problems = [
        SenderSideProblem(
            provider=provider,
            reason=reason,
            count=len(found),
            first_at=found[0].at,
            last_at=found[-1].at,
            hint=REASON_RULES[reason_of(reason)].hint,
            diagnostic=found[-1].diagnostic,
            paused=provider in paused,
        )
        for (provider, reason), found in grouped.items()
    ]
    return sorted(problems, key=lambda p: (-p.count, p.provider, p.reason))


async def paused_providers(
    store: Feedback, /, *, policy: BouncePolicy, now: float, groups: Mapping[str, str]
) -> dict[str, str]:
    """Providers that bulk mail must skip now, each with why (the reason and the hint).

    A provider is paused while ``sender_side_pause`` sender-side refusals from it fall
    within the last ``sender_side_window``: sending on would burn the sender's reputation
    there. The pause lifts by itself as they age out of the window.
    """
    records = await store.bounces(
        since=now - policy.sender_side_window, reasons=SENDER_SIDE_REASONS
    )
    return _paused(
        [r for r in records if not r.forged and r.address], policy=policy, now=now, groups=groups
    )


def _paused(
    records: Sequence[BounceRecord],
    *,
    policy: BouncePolicy,
    now: float,
    groups: Mapping[str, str],
) -> dict[str, str]:
    since = now - policy.sender_side_window
    per_provider: dict[str, Counter[str]] = {}
    for record in records:
        if record.at >= since:
            provider = provider_of(record.address or "", groups)
            per_provider.setdefault(provider, Counter())[record.reason] += 1
    paused = {}
    minutes = policy.sender_side_window / 60
    for provider, reasons in per_provider.items():
        total = sum(reasons.values())
        if total < policy.sender_side_pause:
            continue
        reason, _ = reasons.most_common(1)[0]
        hint = REASON_RULES[reason_of(reason)].hint
        paused[provider] = (
            f"bulk mail to {provider} paused: {total} sender-side refusals in {minutes:g} min "
            f"(limit {policy.sender_side_pause}), mostly {reason}: {hint}"
        )
    return paused
