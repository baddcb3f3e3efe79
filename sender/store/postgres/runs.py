"""Runs in PostgreSQL: the runs table, leases by conditional update."""

from __future__ import annotations

import json
from collections.abc import Mapping

from sender.store.postgres.database import PostgresDatabase
from sender.store.records import RUN_COLUMNS, RunInfo, run_from_columns
from sender.vocabulary import RunState

__all__ = ["PostgresRuns"]

_SELECT_RUN = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"  # noqa: S608 (constants)


class PostgresRuns(PostgresDatabase):
    """:class:`~sender.store.base.Runs` for :class:`~sender.store.postgres.PostgresStore`."""

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
            created = await self._rowcount(
                "INSERT INTO runs (run_id, template, source, created_at, options,"
                " event_uid, sequence, method)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO NOTHING",
                (run_id, template, source, now, stored_options, uid, sequence, method),
            )
            info = await self._get_run(run_id)
        if info is None:  # only a run deleted in between gets here
            raise KeyError(run_id)
        return info, created == 1

    async def update_run_options(
        self, run_id: str, options: Mapping[str, str | float | int | None], /
    ) -> None:
        """Merge ``options`` into the run's stored ones, in one transaction."""
        with self._errors():
            key, _ = await self._run(run_id)
            async with self._transaction() as db:
                cursor = await db.execute(
                    "SELECT options FROM runs WHERE id = %s FOR UPDATE", (key,)
                )
                row = await cursor.fetchone()
                merged = json.loads((row[0] if row else None) or "{}") | dict(options)
                await db.execute(
                    "UPDATE runs SET options = %s WHERE id = %s",
                    (json.dumps(merged, sort_keys=True), key),
                )

    async def get_run(self, run_id: str, /) -> RunInfo | None:
        with self._errors():
            return await self._get_run(run_id)

    async def _get_run(self, run_id: str) -> RunInfo | None:
        row = await self._fetchone(_SELECT_RUN + " WHERE run_id = %s", (run_id,))
        return None if row is None else run_from_columns(row)

    async def latest_run(self) -> RunInfo | None:
        """The most recently created run, for ``sender status`` without a run id."""
        with self._errors():
            row = await self._fetchone(_SELECT_RUN + " ORDER BY created_at DESC, id DESC LIMIT 1")
        return None if row is None else run_from_columns(row)

    async def runs(self, *, limit: int = 100) -> list[RunInfo]:
        """The most recent runs first, at most ``limit`` (``sender status --all``)."""
        with self._errors():
            rows = await self._fetchall(
                _SELECT_RUN + " ORDER BY created_at DESC, id DESC LIMIT %s", (limit,)
            )
        return [run_from_columns(row) for row in rows]

    async def acquire_run(self, run_id: str, /, *, owner: str, now: float, ttl: float) -> bool:
        """Take the run's lease unless another owner's heartbeat is younger than ``ttl``."""
        with self._errors():
            key, _ = await self._run(run_id)
            taken = await self._rowcount(
                "UPDATE runs SET owner = %s, heartbeat_at = %s"
                " WHERE id = %s AND (owner IS NULL OR owner = %s OR heartbeat_at IS NULL"
                "                    OR heartbeat_at < %s)",
                (owner, now, key, owner, now - ttl),
            )
        return taken == 1

    async def heartbeat(self, run_id: str, /, *, owner: str, now: float) -> bool:
        """Renew the lease; False when ``owner`` no longer holds it (stop sending)."""
        with self._errors():
            key, _ = await self._run(run_id)
            renewed = await self._rowcount(
                "UPDATE runs SET heartbeat_at = %s WHERE id = %s AND owner = %s",
                (now, key, owner),
            )
        return renewed == 1

    async def release_run(self, run_id: str, /, *, owner: str) -> None:
        with self._errors():
            key, _ = await self._run(run_id)
            await self._rowcount(
                "UPDATE runs SET owner = NULL, heartbeat_at = NULL WHERE id = %s AND owner = %s",
                (key, owner),
            )

    async def set_run_state(
        self, run_id: str, state: RunState, /, *, now: float, reason: str | None = None
    ) -> None:
        """Pausing keeps the first ``paused_since``; any other state clears both pause fields."""
        paused = state is RunState.PAUSED
        with self._errors():
            key, _ = await self._run(run_id)
            await self._rowcount(
                "UPDATE runs SET state = %s, paused_reason = %s::text,"
                " paused_since = CASE WHEN %s THEN CASE WHEN state = 'paused'"
                " THEN COALESCE(paused_since, %s) ELSE %s END END"
                " WHERE id = %s",
                (state.value, reason if paused else None, paused, now, now, key),
            )
