"""Who sender will not write to, and when bulk sending must stop: the bounce loop's rules.

Providers suspend an account at about 100 bounces a day, so sender keeps well clear:

- a **hard bounce** or a **complaint** suppresses the address at once;
- **soft bounces** suppress after ``soft_limit`` within ``soft_window`` (3 in 7 days),
  counting only those since the address last accepted a message;
- an **auto-reply** is never a bounce;
- a recipient **refused in the SMTP dialogue** (4xx or 5xx at RCPT or DATA) is a bounce
  like a DSN, classified from the reply (:func:`keep_refusal`): one per message;
- a bounce whose signed return path does not verify is kept as forged and changes
  nothing, so nobody can get a participant suppressed by mailing a fake bounce;
- the **bounce budget**: ``budget`` hard-bounced addresses in a sliding 24 hours
  (80 by default; copies of a bounce, or many for one address, count once), or a
  hard-bounce rate above ``max_rate`` once ``min_sent`` messages went out in that
  window, pauses bulk sending until an operator resumes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sender.addresses import address_key
from sender.compose.links import ReturnPathSigner, message_of_key, participant_of_key
from sender.config import DAY, BouncePolicy
from sender.feedback.bounces import (
    Bounce,
    BounceKind,
    classify,
    envelope_recipients,
    parse_bounce,
    parse_ses_notification,
)
from sender.models import DeliveryResult, Participant
from sender.store import BounceRecord, Budget, Feedback

__all__ = [
    "BounceOutcome",
    "CleanupRow",
    "apply_bounce",
    "budget_reason",
    "cleanup_report",
    "ingest_bounce",
    "ingest_ses_notification",
    "is_budget_pause",
    "keep_refusal",
    "recommend",
]


async def apply_bounce(
    store: Feedback, record: BounceRecord, /, *, policy: BouncePolicy, now: float
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


_BUDGET, _RATE = "bounce budget", "bounce rate"  # how budget_reason's reasons begin


def is_budget_pause(reason: str | None, /) -> bool:
    """Whether a run's paused reason is :func:`budget_reason`'s (``--force`` goes on)."""
    return bool(reason) and str(reason).startswith((_BUDGET, _RATE))


async def budget_reason(store: Budget, /, *, policy: BouncePolicy, now: float) -> str | None:
    """Why bulk sending must pause now, or None while the bounce budget holds."""
    since = now - policy.window
    hard = await store.hard_bounces_since(since)
    hours = policy.window / 3600
    if hard >= policy.budget:
        return (
            f"{_BUDGET}: {hard} hard-bounced addresses in {hours:g} h "
            f"(limit {policy.budget}); "
            "clean up the addresses (`sender bounces report`), then resume"
        )
    if hard >= policy.min_sent * policy.max_rate:  # only then can the rate be exceeded
        sent = await store.sent_since(since)
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
    enhanced status and text (a 5xx is hard, a full mailbox or a 4xx soft), then
    suppression and the budget treat it the same. ``key`` names the message sent
    (``m<outbox id>``, or a single send's Message-ID), so a message retried after
    a 4xx keeps one soft bounce, not one per attempt. Anything else (accepted, a
    refused MAIL FROM, a lost connection) keeps nothing. Returns why the address
    was suppressed now, if it was.
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
        reason=reason,
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
        findings = [Bounce(None, BounceKind.UNKNOWN, None, "", "other")]
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
            reason=finding.reason,
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
    kind: str  # the worst kind seen: complaint > hard > soft > unknown
    status: str | None
    diagnostic: str
    reason: str
    count: int
    first_at: float
    last_at: float
    suppressed: bool
    action: str  # "change address", "disable account", "disable mail", ...
    rule: str  # why that action


_SEVERITY = {"complaint": 4, "hard": 3, "soft": 2, "unknown": 1}


def recommend(kind: str, reason: str, *, first_at: float, last_at: float) -> tuple[str, str]:
    """The action an admin should take for an address, and the rule behind it."""
    if kind == "complaint":
        return "disable mail", "the participant marked our mail as spam: write no more"
    if reason == "no_domain":
        return "change address", "the domain does not exist or accepts no mail"
    if reason == "unknown_user":
        if last_at - first_at >= 30 * DAY:
            return "disable account", "the mailbox is unknown and still bounced 30 days later"
        return "change address", "the mailbox does not exist at that domain"
    if reason == "mailbox_full":
        return (
            "ask the participant to free space, then remove the suppression",
            "the mailbox is full",
        )
    if reason == "policy":
        return (
            "check sender authentication (SPF, DKIM, DMARC) or ask the recipient's IT",
            "the receiving server refused the mail by policy, not the address",
        )
    if kind == "hard":
        return "change address", "a permanent failure for this address"
    if kind == "soft":
        return "wait, then retry", "temporary failures; suppressed only after repeated ones"
    return "review by hand", "the bounce could not be classified"


async def cleanup_report(store: Feedback, /, *, since: float) -> list[CleanupRow]:
    """One row per address with bounces (not auto-replies, not forged) since ``since``."""
    grouped: dict[str, list[BounceRecord]] = {}
    for record in await store.bounces(since=since):
        if record.forged or record.kind == "autoreply" or not record.address:
            continue
        grouped.setdefault(record.address, []).append(record)
    people = await store.participants_by_address(list(grouped))
    suppressed = await store.suppressed(list(grouped))
    rows = []
    for address, records in sorted(grouped.items()):
        worst = max(records, key=lambda r: (_SEVERITY.get(r.kind, 0), r.at))
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
            )
        )
    return rows
