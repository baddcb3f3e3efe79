"""PostgresStore: every role of the outbox over one PostgreSQL database."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sender.store.sql as sql
from sender.store.common import SharedRedemptions, SharedWebhooks, SharedWorkers
from sender.store.postgres.database import MEMBER
from sender.store.postgres.events import PostgresEvents
from sender.store.postgres.feedback import PostgresFeedback
from sender.store.postgres.outbox import PostgresOutbox
from sender.store.postgres.progress import PostgresProgress
from sender.store.postgres.runs import PostgresRuns

if TYPE_CHECKING:
    from sender.store.base import Store

__all__ = ["PostgresStore"]


class PostgresStore(
    PostgresRuns,
    SharedWorkers,
    SharedWebhooks,
    SharedRedemptions,
    PostgresOutbox,
    PostgresProgress,
    PostgresEvents,
    PostgresFeedback,
):
    """The :class:`~sender.store.base.Store` in a PostgreSQL database any number of hosts share.

    Built from a URL (``postgresql://user@host:port/db``) without connecting; the first
    call (or ``async with``, or :meth:`start`) connects, migrates the schema under an
    advisory lock, and opens a pool of ``min_size`` to ``max_size`` connections. A
    database that cannot be reached raises :class:`~sender.errors.ConfigurationError`
    naming the URL without its password; no psycopg exception escapes. Methods that need
    a run raise :class:`~sender.errors.InputError` (field ``run_id``) for an unknown run.

    One instance per event loop; every state change two workers could race on is one
    statement or one transaction, so any number of instances, processes and hosts may
    share the database.
    """

    _FAN_OUT = sql.FAN_OUT.format(member=MEMBER.format(column="e.type"))
    _SENT_PER_DAY = sql.SENT_PER_DAY.format(
        day="CAST(FLOOR(a.at / 86400) AS BIGINT)", member=MEMBER.format(column="m.domain")
    )
    _PENDING_TO = sql.PENDING_TO.format(member=MEMBER.format(column="m.domain"))


if TYPE_CHECKING:

    def _conforms() -> Store:
        return PostgresStore("postgresql://localhost/sender")
