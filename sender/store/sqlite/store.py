"""SqliteStore: every role of the outbox over one SQLite file (see the package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sender.store.sql as sql
from sender.store.common import SharedRedemptions, SharedWebhooks, SharedWorkers
from sender.store.records import RunInfo
from sender.store.sqlite.events import SqliteEvents
from sender.store.sqlite.feedback import SqliteFeedback
from sender.store.sqlite.file import MEMBER
from sender.store.sqlite.outbox import SqliteOutbox
from sender.store.sqlite.progress import SqliteProgress
from sender.store.sqlite.runs import SqliteRuns

if TYPE_CHECKING:
    from sender.store.base import Store

__all__ = ["SqliteStore", "find_latest_run"]


class SqliteStore(
    SqliteRuns,
    SharedWorkers,
    SqliteOutbox,
    SqliteProgress,
    SqliteEvents,
    SqliteFeedback,
    SharedWebhooks,
    SharedRedemptions,
):
    """The :class:`~sender.store.base.Store` in one SQLite file, e.g. ``.sender/outbox.sqlite3``.

    Opens (creating the file, its parent directories and the schema) in the
    constructor, so it can be built from synchronous code; close it with
    :meth:`aclose` or use ``async with``. A file that cannot be opened or
    written raises :class:`~sender.errors.ConfigurationError` naming the path,
    then and on every later call; no ``sqlite3`` exception escapes.
    Methods that need a run raise :class:`~sender.errors.InputError` (field ``run_id``)
    for a run that does not exist.

    One instance per event loop thread; open another instance (or process)
    for concurrent access to the same file. The first write starts a daemon
    thread that checkpoints the WAL once about ``checkpoint_pages`` pages have
    built up; :meth:`close` stops it.
    """

    _FAN_OUT = sql.FAN_OUT.format(member=MEMBER.format(column="e.type"))
    _SENT_PER_DAY = sql.SENT_PER_DAY.format(
        day="CAST(a.at / 86400 AS INTEGER)", member=MEMBER.format(column="m.domain")
    )
    _PENDING_TO = sql.PENDING_TO.format(member=MEMBER.format(column="m.domain"))


def find_latest_run(path: Path | str, /) -> RunInfo | None:
    """The latest run in the outbox at ``path``, or None; never creates the file.

    A synchronous helper for ``sender status`` without a run id.
    """
    if not Path(path).is_file():
        return None
    store = SqliteStore(path)
    try:
        with store._errors():
            return store._latest_run()
    finally:
        store.close()


if TYPE_CHECKING:

    def _conforms(path: Path) -> Store:
        return SqliteStore(path)
