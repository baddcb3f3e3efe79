"""The durable outbox: the ``Store`` contract and its embedded SQLite implementation."""

from sender.store.base import (
    FINAL_STATES,
    Attempt,
    BounceRecord,
    DomainProgress,
    EventRecord,
    IngestResult,
    InvitationRecord,
    MessageRecord,
    MessageState,
    NewRow,
    OutboxMessage,
    Outcome,
    RsvpRecord,
    RunInfo,
    RunState,
    Store,
    Suppression,
)
from sender.store.sqlite import SqliteStore, find_latest_run

__all__ = [
    "FINAL_STATES",
    "Attempt",
    "BounceRecord",
    "DomainProgress",
    "EventRecord",
    "IngestResult",
    "InvitationRecord",
    "MessageRecord",
    "MessageState",
    "NewRow",
    "OutboxMessage",
    "Outcome",
    "RsvpRecord",
    "RunInfo",
    "RunState",
    "SqliteStore",
    "Store",
    "Suppression",
    "find_latest_run",
]
