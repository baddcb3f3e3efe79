"""Calendar events and RSVP answers in PostgreSQL; invitations derived from sent messages."""

from __future__ import annotations

from sender.store.postgres.database import PostgresDatabase
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

__all__ = ["PostgresEvents"]

# Constants of this module and record fields, never input.
_SELECT_EVENT = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"  # noqa: S608
_SAVE_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))})"
    " ON CONFLICT (uid) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in EVENT_COLUMNS[1:])
)
_SELECT_RSVP = f"SELECT {', '.join(RSVP_COLUMNS)} FROM rsvps"  # noqa: S608
_SELECT_INVITED = (
    f"SELECT {', '.join('m.' + column for column in PARTICIPANT_COLUMNS)},"  # noqa: S608
    "       r.sequence, r.method, m.last_attempt_at"
    "  FROM messages m JOIN runs r ON m.run = r.id"
    " WHERE r.event_uid = %s AND m.state = 'sent'"
    " ORDER BY m.participant_id, r.sequence, m.last_attempt_at"
)


class PostgresEvents(PostgresDatabase):
    """:class:`~sender.store.base.EventLog` for :class:`~sender.store.postgres.PostgresStore`."""

    async def save_event(self, record: EventRecord, /) -> None:
        """Insert or replace the event's record: the one statement that writes ``events``."""
        with self._errors():
            await self._rowcount(_SAVE_EVENT, event_values(record))

    async def get_event(self, uid: str, /) -> EventRecord | None:
        with self._errors():
            row = await self._fetchone(_SELECT_EVENT + " WHERE uid = %s", (uid,))
        return None if row is None else event_from_columns(row)

    async def events(self) -> list[EventRecord]:
        """Every event sent, the most recently changed first."""
        with self._errors():
            rows = await self._fetchall(_SELECT_EVENT + " ORDER BY updated_at DESC, uid")
        return [event_from_columns(row) for row in rows]

    async def invitations(self, uid: str, /) -> list[InvitationRecord]:
        """Every participant sent a message of the event, with the last SEQUENCE and method."""
        with self._errors():
            rows = await self._fetchall(_SELECT_INVITED, (uid,))
        return latest_invitations(uid, rows)

    async def add_rsvp(self, record: RsvpRecord, /) -> bool:
        """Keep an answer; False (and nothing stored) when the same answer is already kept."""
        return await self._insert_once(
            "rsvps", RSVP_COLUMNS, tuple(getattr(record, column) for column in RSVP_COLUMNS)
        )

    async def rsvps(self, uid: str | None = None, /) -> list[RsvpRecord]:
        """Answers in the order they were received, of one event or of all."""
        with self._errors():
            rows = (
                await self._fetchall(_SELECT_RSVP + " WHERE uid = %s ORDER BY id", (uid,))
                if uid is not None
                else await self._fetchall(_SELECT_RSVP + " ORDER BY id")
            )
        return [rsvp_from_columns(row) for row in rows]
