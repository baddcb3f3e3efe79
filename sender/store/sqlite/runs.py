"""Runs in SQLite: the runs table, leases by conditional update."""

from __future__ import annotations

import json
from collections.abc import Mapping

from sender.store.records import RUN_COLUMNS, RunInfo, run_from_columns
from sender.store.sqlite.file import SqliteFile
from sender.vocabulary import RunState

__all__ = ["SqliteRuns"]

_SELECT_RUN = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"  # noqa: S608 (constants)


class SqliteRuns(SqliteFile):
    """:class:`~sender.store.base.Runs` for :class:`~sender.store.sqlite.SqliteStore`."""

    async def create_run(
        self,
        run_id: str,
        /,
        *,
        template: str,
        source: str,
        now: float,
        options: Mapping[str, str | float | int | None] | None = None,
        event: tuple[str, int, str] | None = None,
    ) -> tuple[RunInfo, bool]:
        """Create the run, or return the existing one; the bool says whether it was new."""
        stored_options = json.dumps(dict(options or {}), sort_keys=True)
        uid, sequence, method = event if event is not None else (None, None, None)
        with self._errors():
            with self._writing() as db:
                cursor = db.execute(
                    "INSERT INTO runs (run_id, template, source, created_at, options,"
                    " event_uid, sequence, method)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
                    (run_id, template, source, now, stored_options, uid, sequence, method),
                )
            info = self._get_run(run_id)
        if info is None:  # only a run deleted in between gets here
            raise KeyError(run_id)
        return info, cursor.rowcount == 1

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

    async def get_run(self, run_id: str, /) -> RunInfo | None:
        with self._errors():
            return self._get_run(run_id)

    def _get_run(self, run_id: str) -> RunInfo | None:
        row = self._one(_SELECT_RUN + " WHERE run_id = ?", (run_id,))
        return None if row is None else run_from_columns(row)

    async def latest_run(self) -> RunInfo | None:
        """The most recently created run, for ``sender status`` without a run id."""
        with self._errors():
            return self._latest_run()

    async def runs(self, *, limit: int = 100) -> list[RunInfo]:
        """The most recent runs first, at most ``limit`` (``sender status --all``)."""
        rows = self._all(_SELECT_RUN + " ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))
        return [run_from_columns(row) for row in rows]

    def _latest_run(self) -> RunInfo | None:
        row = self._one(_SELECT_RUN + " ORDER BY created_at DESC, id DESC LIMIT 1")
        return None if row is None else run_from_columns(row)

    async def acquire_run(self, run_id: str, /, *, owner: str, now: float, ttl: float) -> bool:
        """Take the run's lease unless another owner's heartbeat is younger than ``ttl``."""
        with self._for_run(run_id) as (key, _), self._writing() as db:
            cursor = db.execute(
                "UPDATE runs SET owner = ?, heartbeat_at = ?"
                " WHERE id = ? AND (owner IS NULL OR owner = ? OR heartbeat_at IS NULL"
                "                   OR heartbeat_at < ?)",
                (owner, now, key, owner, now - ttl),
            )
        return cursor.rowcount == 1

    async def heartbeat(self, run_id: str, /, *, owner: str, now: float) -> bool:
        """Renew the lease; False when ``owner`` no longer holds it (stop sending)."""
        with self._for_run(run_id) as (key, _), self._writing() as db:
            cursor = db.execute(
                "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND owner = ?", (now, key, owner)
            )
        return cursor.rowcount == 1

    async def release_run(self, run_id: str, /, *, owner: str) -> None:
        with self._for_run(run_id) as (key, _), self._writing() as db:
            db.execute(
                "UPDATE runs SET owner = NULL, heartbeat_at = NULL WHERE id = ? AND owner = ?",
                (key, owner),
            )

    async def set_run_state(
        self, run_id: str, state: RunState, /, *, now: float, reason: str | None = None
    ) -> None:
        """Pausing keeps the first ``paused_since``; any other state clears both pause fields."""
        paused = state is RunState.PAUSED
        with self._for_run(run_id) as (key, _), self._writing() as db:
            db.execute(
                "UPDATE runs SET state = ?, paused_reason = ?,"
                " paused_since = CASE WHEN ? THEN CASE WHEN state = 'paused'"
                " THEN COALESCE(paused_since, ?) ELSE ? END END"
                " WHERE id = ?",
                (state.value, reason if paused else None, paused, now, now, key),
            )
