"""The outbox's rules that need no SQL: every backend asks its questions, then calls these.

A backend fetches what a rule needs in the same statements it would run anyway (no extra
round trip) and leaves the deciding to this module, so a rule has one home whatever the
database: which rows of an ingest are duplicates, what an attempt's outcome may be, which
soft bounces a delivery forgave, and how bounces count toward the budget. Only claims and
counts are each backend's own SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sender.errors import InputError
from sender.models import LoginCode, Participant
from sender.store.records import InvitationRecord, NewRow, Outcome, participant_from_columns
from sender.vocabulary import OUTCOME_STATES, MessageState

__all__ = [
    "INTERRUPTED_REPLACED",
    "PROBLEM_STATES",
    "IngestPlan",
    "bounced_addresses",
    "claim_order",
    "latest_invitations",
    "outcome_code",
    "outcome_due",
    "plan_ingest",
    "stored_text",
    "unencodable",
    "unforgiven_bounces",
]


# What requeue_stale records on a message replaced (a corrected address) while it was sent.
INTERRUPTED_REPLACED = "interrupted while sending; the address was corrected since"

# The states Progress.problems lists: what an operator may need to act on.
PROBLEM_STATES = (MessageState.FAILED, MessageState.DEFERRED, MessageState.SUPPRESSED)


def claim_order(due_at: float, priority: int, message_id: int, /) -> tuple[float, int, int]:
    """The order claims leave a domain in: earliest due, then higher priority, then input.

    Each backend's claim SQL sorts the same way (``ORDER BY due_at, priority DESC, id``);
    a backend that claims several rows at once sorts what came back with this.
    """
    return (due_at, -priority, message_id)


def latest_invitations(uid: str, rows: Iterable[Sequence[Any]], /) -> list[InvitationRecord]:
    """Who was invited to event ``uid``, from its runs' sent messages in SEQUENCE order.

    ``rows`` are ``PARTICIPANT_COLUMNS``, then the run's sequence and method and the
    message's last attempt time, sorted by participant, sequence, time: for each
    participant the message of the highest SEQUENCE wins (a CANCEL after a REQUEST).
    """
    latest: dict[str, InvitationRecord] = {}
    for row in rows:
        *person, sequence, method, at = row
        participant = participant_from_columns(*person)
        latest[participant.participant_id] = InvitationRecord(
            uid=uid,
            participant=participant,
            sequence=int(sequence),
            method=str(method),
            sent_at=at,
        )
    return list(latest.values())


@dataclass(slots=True)
class IngestPlan:
    """What one ``add_rows`` batch stores: new participants, new skipped rows, duplicates."""

    queued: list[tuple[NewRow, Participant]] = field(default_factory=list)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (row, email, reason)
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (row, first row)


def plan_ingest(
    ordered: Sequence[NewRow], /, *, first_row: Mapping[str, int], stored_skips: Iterable[int]
) -> IngestPlan:
    """Split a batch sorted by row into what to store, given what the run holds already.

    ``first_row`` maps the batch's participant ids already in the run to their rows;
    ``stored_skips`` are the skipped rows already stored in the batch's row range. A
    participant seen on another row (stored, or earlier in the batch) is a skipped
    duplicate naming that row; a row stored before (a resumed ingest) is left out.
    """
    first = dict(first_row)
    skips = set(stored_skips)
    plan = IngestPlan()
    for new in ordered:
        person = new.participant
        if person is None:
            if new.row not in skips:
                skips.add(new.row)
                reason = stored_text(new.skip_reason or "skipped")
                plan.skipped.append((new.row, stored_text(new.email or ""), reason))
            continue
        earlier = first.get(person.participant_id)
        if earlier is None:
            first[person.participant_id] = new.row
            plan.queued.append((new, person))
        elif earlier != new.row and new.row not in skips:
            skips.add(new.row)
            plan.duplicates.append((new.row, earlier))
            plan.skipped.append((new.row, stored_text(person.email), f"duplicate of row {earlier}"))
    return plan


def stored_text(value: str, /) -> str:
    """Raw input may hold lone surrogates (bytes a CSV reader escaped); store them as U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")  # the bytes a CSV reader escaped
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace")
    return value


def unencodable(rows: Sequence[NewRow], /) -> InputError:
    """Name the first participant field that cannot be stored as UTF-8."""
    for new in rows:
        person = new.participant
        if person is None:
            continue
        fields = {
            "email": person.email,
            "name": person.name,
            "participant_id": person.participant_id,
            "course_id": person.course_id,
            "locale": person.locale,
            **person.vars,
        }
        for name, value in fields.items():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return InputError("holds characters that are not UTF-8", field=name, row=new.row)
    return InputError("a row holds characters that are not UTF-8")


def outcome_due(outcome: Outcome, /) -> float | None:
    """When a message with this outcome is claimable again (deferred ones only), or None.

    Raises ValueError for an outcome no attempt can end in, or a deferral without a time.
    """
    if outcome.state not in OUTCOME_STATES:
        raise ValueError(f"cannot record a {outcome.state} outcome")
    if outcome.state is not MessageState.DEFERRED:
        return None
    if outcome.next_attempt_at is None:
        raise ValueError("a deferred outcome needs next_attempt_at")
    return outcome.next_attempt_at


def outcome_code(outcome: Outcome, /) -> LoginCode | None:
    """The login code an outcome keeps: a sent message's; one never delivered keeps none."""
    return outcome.code if outcome.state is MessageState.SENT else None


def unforgiven_bounces(
    bounces: Iterable[tuple[int | None, str, float]], /, *, delivered: float | None
) -> int:
    """How many of an address's bounces (``message, fingerprint, at``) still count.

    A message delivered to the address at ``delivered`` forgives every bounce before it
    (soft bounces are forgiven once mail gets through); copies of one bounce count once,
    at most one per outbox message.
    """
    after = float("-inf") if delivered is None else delivered
    return len(
        {_per_message(message, fingerprint) for message, fingerprint, at in bounces if at > after}
    )


def bounced_addresses(bounces: Iterable[tuple[str | None, int | None, str]], /) -> int:
    """How many addresses the bounces (``address, message, fingerprint``) are about.

    Each address counts once, however many bounces (or copies of one) it had; a bounce
    that names no address counts once per outbox message.
    """
    return len(
        {
            address if address is not None else _per_message(message, fingerprint)
            for address, message, fingerprint in bounces
        }
    )


def _per_message(message: int | None, fingerprint: str) -> str:
    return fingerprint if message is None else f"m{message}"
