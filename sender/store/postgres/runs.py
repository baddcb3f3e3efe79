"""Runs in PostgreSQL: what :class:`~sender.store.common.SharedRuns` leaves, the options merge."""

from __future__ import annotations

import json
from collections.abc import Mapping

from sender.store.common import SharedRuns
from sender.store.postgres.database import PostgresDatabase

__all__ = ["PostgresRuns"]


class PostgresRuns(SharedRuns, PostgresDatabase):
    """:class:`~sender.store.base.Runs` for :class:`~sender.store.postgres.PostgresStore`."""

    async def update_run_options(
        self, run_id: str, options: Mapping[str, str | float | int | None], /
    ) -> None:
        """Merge ``options`` into the run's stored ones, in one transaction."""
        key, _ = await self._key(run_id)
        with self._errors():
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
