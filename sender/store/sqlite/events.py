"""Calendar events and RSVP answers in SQLite; invitations derived from sent messages."""

from __future__ import annotations

from sender.store.records import (
    EVENT_COLUMNS,
    PARTICIPANT_COLUMNS,
    RSVP_COLUMNS,
    EventRecord,
    InvitationRecord,
    RsvpRecord,
    event_from_columns,
    event_values,
    rsvp_from_columns,
)
from sender.store.rules import latest_invitations
from sender.store.sqlite.file import SqliteFile

__all__ = ["SqliteEvents"]

# Constants of this module and record fields, never input.
_SELECT_EVENT = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"  # noqa: S608
_SAVE_EVENT = (
    f"INSERT OR REPLACE INTO events ({', '.join(EVENT_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)
_SELECT_RSVP = f"SELECT {', '.join(RSVP_COLUMNS)} FROM rsvps"  # noqa: S608
_SELECT_INVITED = (
    f"SELECT {', '.join('m.' + column for column in PARTICIPANT_COLUMNS)},"  # noqa: S608
    "       r.sequence, r.method, m.last_attempt_at"
    "  FROM messages m JOIN runs r ON m.run = r.id"
    " WHERE r.event_uid = ? AND m.state = 'sent' AND m.state <> 'queued'"
    " ORDER BY m.participant_id, r.sequence, m.last_attempt_at"
)


class SqliteEvents(SqliteFile):
    """:class:`~sender.store.base.EventLog` for :class:`~sender.store.sqlite.SqliteStore`."""

    async def save_event(self, record: EventRecord, /) -> None:
        """Insert or replace the event's record: the one statement that writes ``events``."""
        with self._errors(), self._writing() as db:
            db.execute(_SAVE_EVENT, event_values(record))

    async def get_event(self, uid: str, /) -> EventRecord | None:
        row = self._one(_SELECT_EVENT + " WHERE uid = ?", (uid,))
        return None if row is None else event_from_columns(row)

    async def events(self) -> list[EventRecord]:
        """Every event sent, the most recently changed first."""
        rows = self._all(_SELECT_EVENT + " ORDER BY updated_at DESC, uid")
        return [event_from_columns(row) for row in rows]

    async def invitations(self, uid: str, /) -> list[InvitationRecord]:
        """Every participant sent a message of the event, with the last SEQUENCE and method.

        Derived from the ``sent`` messages of the event's runs; for each participant
        the message of the highest SEQUENCE wins (a CANCEL after a REQUEST, say).
        """
        with self._errors(), self._snapshot() as db:
            rows = db.execute(_SELECT_INVITED, (uid,)).fetchall()
        return latest_invitations(uid, rows)

    async def add_rsvp(self, record: RsvpRecord, /) -> bool:
        """Keep an answer; False (and nothing stored) when the same answer is already kept."""
        return self._insert_once(
            "rsvps", RSVP_COLUMNS, tuple(getattr(record, column) for column in RSVP_COLUMNS)
        )

    async def rsvps(self, uid: str | None = None, /) -> list[RsvpRecord]:
        """Answers in the order they were received, of one event or of all."""
        rows = (
            self._all(_SELECT_RSVP + " WHERE uid = ? ORDER BY id", (uid,))
            if uid is not None
            else self._all(_SELECT_RSVP + " ORDER BY id")
        )
        return [rsvp_from_columns(row) for row in rows]
