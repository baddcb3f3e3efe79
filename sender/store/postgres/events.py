"""Calendar events and RSVP answers in PostgreSQL: :class:`~sender.store.common.SharedEvents`."""

from __future__ import annotations

import sender.store.sql as sql
from sender.store.common import SharedEvents
from sender.store.postgres.database import PostgresDatabase

__all__ = ["PostgresEvents"]


class PostgresEvents(SharedEvents, PostgresDatabase):
    """:class:`~sender.store.base.EventLog` for :class:`~sender.store.postgres.PostgresStore`."""

    _INVITED = sql.SELECT_INVITED.format(queued_hint="")
