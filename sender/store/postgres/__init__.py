"""The shared outbox: one PostgreSQL database that processes on many hosts share.

psycopg 3 (async) with psycopg_pool's ``AsyncConnectionPool``, imported here and nowhere
else in sender (the ``postgres`` extra installs both). Claims are ``FOR UPDATE SKIP
LOCKED`` in one statement that claims and returns the rows; the schema is versioned in
``schema_version`` and migrated in place under an advisory lock, so several processes
may start at once.

The pieces: ``schema`` (tables, the limiter's functions, migrations), ``database`` (the URL,
the pool, errors, closing), and one module per role of :class:`~sender.store.base.Store`:
``runs``, ``outbox``, ``progress``, ``events``, ``feedback``; ``store`` puts them together;
``limits`` is the shared rate limits' state.
"""

from sender.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
