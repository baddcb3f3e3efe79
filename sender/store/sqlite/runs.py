"""Runs in SQLite: what :class:`~sender.store.common.SharedRuns` leaves, the options merge."""

from __future__ import annotations

import json
from collections.abc import Mapping

import sender.store.sql as sql
from sender.store.common import SharedRuns
from sender.store.records import RunInfo, run_from_columns
from sender.store.sqlite.file import SqliteFile

__all__ = ["SqliteRuns"]


class SqliteRuns(SharedRuns, SqliteFile):
    """:class:`~sender.store.base.Runs` for :class:`~sender.store.sqlite.SqliteStore`."""

    async def update_run_options(
        self, run_id: str, options: Mapping[str, str | float | int | None], /
    ) -> None:
        """Merge ``options`` into the run's stored ones, in one transaction."""
        with self._for_run(run_id) as (key, _), self._transaction() as db:
            (stored,) = db.execute("SELECT options FROM runs WHERE id = ?", (key,)).fetchone()
            merged = json.loads(stored or "{}") | dict(options)
            db.execute(
                "UPDATE runs SET options = ? WHERE id = ?",
                (json.dumps(merged, sort_keys=True), key),
            )

    def _latest_run(self) -> RunInfo | None:
        """:meth:`latest_run` without the event loop, for :func:`find_latest_run`."""
        row = self._one(sql.RECENT_RUNS, (1,))
        return None if row is None else run_from_columns(row)
