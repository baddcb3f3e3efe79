"""The words the store and the logic above it share: message and run states, RSVP outcomes.

These are stored as their string values, so a value never changes once released; a new
state is a new member. They live in the foundation, below the store, so that code which
only needs to name a state (the CLI's status table, the bulk engine) does not reach into
a storage module for it.

Message states::

    queued ──claim──▶ sending ──▶ sent
      ▲                  │
      │                  ├──▶ deferred ──(due)──▶ claimable again
      │                  ├──▶ failed        (permanent, or retries exhausted)
      └──requeue_stale───┘──▶ suppressed    (never sent; bounce handling)
    skipped                                 (bad input; recorded at ingest)
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_STATES", "OUTCOME_STATES", "MessageState", "RsvpOutcome", "RunState"]


class MessageState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    SKIPPED = "skipped"


# Final until an operator acts (``reset_failed`` for ``sender retry``).
FINAL_STATES = frozenset(
    {MessageState.SENT, MessageState.FAILED, MessageState.SUPPRESSED, MessageState.SKIPPED}
)

# What one attempt can end in: SKIPPED too, for a row valid at ingest whose template could
# not render it. QUEUED and SENDING are the store's own doing, never an attempt's outcome.
OUTCOME_STATES = frozenset(
    {
        MessageState.SENT,
        MessageState.DEFERRED,
        MessageState.FAILED,
        MessageState.SUPPRESSED,
        MessageState.SKIPPED,
    }
)


class RunState(StrEnum):
    ACTIVE = "active"  # has work to do (or is doing it)
    PAUSED = "paused"  # stopped on purpose; ``paused_reason`` says why
    DONE = "done"  # nothing left but final states


class RsvpOutcome(StrEnum):
    """What a calendar answer counts for; every answer is kept, with its outcome."""

    RECORDED = "recorded"  # it counts
    STALE = "stale"  # answers an older SEQUENCE
    UNKNOWN_EVENT = "unknown_event"
    NOT_INVITED = "not_invited"
    SENDER_MISMATCH = "sender_mismatch"  # From is not the attendee
    UNAUTHENTICATED = "unauthenticated"  # no aligned DKIM signature, no trusted DMARC pass
