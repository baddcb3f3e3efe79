"""Calendar events and RSVP answers in SQLite: :class:`~sender.store.common.SharedEvents`."""

from __future__ import annotations

import sender.store.sql as sql
from sender.store.common import SharedEvents
from sender.store.sqlite.file import SqliteFile

__all__ = ["SqliteEvents"]


class SqliteEvents(SharedEvents, SqliteFile):
    """:class:`~sender.store.base.EventLog` for :class:`~sender.store.sqlite.SqliteStore`."""

    _INVITED = sql.SELECT_INVITED.format(queued_hint=" AND m.state <> 'queued'")
