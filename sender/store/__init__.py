"""The durable outbox: the ``Store`` roles, their records, the SQLite backend, ``open_store``.

``PostgresStore`` is in :mod:`sender.store.postgres` (psycopg is an optional extra);
:func:`open_store` builds either from a URL.
"""

from sender.store.base import (
    BounceLog,
    Budget,
    EventLog,
    Feedback,
    Outbox,
    Progress,
    Runs,
    Store,
    SuppressionList,
)
from sender.store.records import (
    Attempt,
    BounceRecord,
    DomainProgress,
    EventRecord,
    IngestResult,
    InvitationRecord,
    MessageRecord,
    NewRow,
    OutboxMessage,
    Outcome,
    RsvpRecord,
    RunInfo,
    Suppression,
)
from sender.store.sqlite import SqliteStore, find_latest_run
from sender.store.url import open_store
from sender.vocabulary import FINAL_STATES, MessageState, RunState

__all__ = [
    "FINAL_STATES",
    "Attempt",
    "BounceLog",
    "BounceRecord",
    "Budget",
    "DomainProgress",
    "EventLog",
    "EventRecord",
    "Feedback",
    "IngestResult",
    "InvitationRecord",
    "MessageRecord",
    "MessageState",
    "NewRow",
    "Outbox",
    "OutboxMessage",
    "Outcome",
    "Progress",
    "RsvpRecord",
    "RunInfo",
    "RunState",
    "Runs",
    "SqliteStore",
    "Store",
    "Suppression",
    "SuppressionList",
    "find_latest_run",
    "open_store",
]
