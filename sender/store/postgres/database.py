"""One PostgreSQL outbox: its URL, the connection pool, migrations, errors, closing.

Each role's PostgreSQL implementation (runs, outbox, progress, events, feedback) builds
on this class; :class:`~sender.store.postgres.PostgresStore` puts them together.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Self

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from sender.errors import ConfigurationError, InputError
from sender.lifecycle import AsyncResource
from sender.store.common import SqlBackend
from sender.store.postgres.schema import migrate
from sender.storeurl import redacted_store_url

__all__ = ["MEMBER", "PostgresDatabase", "psycopg_marks"]

# The {member} of sender.store.sql's statements: a column is one of a bound text array.
MEMBER = "{column} = ANY(?::text[])"

CONNECT_TIMEOUT = 10.0  # seconds to connect (and to wait for a pooled connection)


class PostgresDatabase(AsyncResource, SqlBackend):
    """The connection pool to one outbox database and the plumbing every role shares.

    Nothing connects in the constructor (a store is built from synchronous code, as
    SQLite's is): the first call connects once on its own, migrates the schema under the
    advisory lock, then opens the pool. A database that cannot be reached raises
    :class:`~sender.errors.ConfigurationError` naming the URL without its password.
    """

    def __init__(self, url: str, /, *, min_size: int = 1, max_size: int = 10) -> None:
        if min_size < 0 or max_size < max(min_size, 1):
            raise ConfigurationError(
                f"a store's pool needs 0 <= min_size <= max_size and max_size >= 1,"
                f" not {min_size} and {max_size}",
                setting="store",
            )
        self._url = url
        self._name = redacted_store_url(url)
        self._min_size = min_size
        self._max_size = max_size
        self._runs: dict[str, tuple[int, str]] = {}  # run_id -> (key, template); never change
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._opening = asyncio.Lock()
        self._closed = False
        self._kept: AsyncConnection[Any] | None = None  # see _row_kept
        self._kept_busy = False

    def __reduce__(self) -> tuple[type[Self], tuple[str]]:
        """Pickled, a database is its URL: unpickled (in a worker process), it connects anew
        on first use. Through a private pipe only: the URL may hold a password."""
        return (type(self), (self._url,))

    @property
    def url(self) -> str:
        """The store URL without its password."""
        return self._name

    async def start(self) -> None:
        """Connect and migrate now, rather than on the first call."""
        with self._errors():
            await self._open()

    # --- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate psycopg's exceptions, the one place they enter, into ConfigurationError."""
        try:
            yield
        except psycopg.OperationalError as exc:
            raise ConfigurationError(
                f"store {self._name}: cannot reach the database: {_first_line(exc)}",
                setting="store",
            ) from exc
        except psycopg.Error as exc:
            raise ConfigurationError(
                f"store {self._name}: {_first_line(exc)}", setting="store"
            ) from exc

    async def _open(self) -> AsyncConnectionPool[AsyncConnection[Any]]:
        if self._closed:
            raise ConfigurationError(f"store {self._name} is closed", setting="store")
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                # One connection of its own first: a wrong URL fails now, in one clear line,
                # not after the pool's timeout; and the schema is current before any query.
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
                ) as conn:
                    await migrate(conn, name=self._name)
                # No server-side prepared statements: a generic plan made while a table was
                # small (a fresh run) kept scanning it as ingest grew it (100x slower), and
                # a pooler in transaction mode (PgBouncer) cannot keep them anyway.
                pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
                    self._url,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    kwargs={"autocommit": True, "prepare_threshold": None},
                    timeout=CONNECT_TIMEOUT,
                    open=False,
                    name="sender.store",
                )
                await pool.open()
                if self._closed:  # closed while opening
                    await pool.close()
                    raise ConfigurationError(f"store {self._name} is closed", setting="store")
                self._pool = pool
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection in autocommit: each statement is its own transaction."""
        pool = await self._open()
        async with pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection inside one transaction (committed unless the block raises)."""
        async with self._connection() as conn, conn.transaction():
            yield conn

    # --- the primitives the shared roles (sender.store.common) run on ----------------------

    async def _rows(
        self, statement: str, parameters: Sequence[object] | Mapping[str, object] = ()
    ) -> list[Any]:
        """Every row one read returns (named parameters too, for the claim)."""
        with self._errors():
            async with self._connection() as conn:
                cursor = await conn.execute(psycopg_marks(statement), parameters)
                return await cursor.fetchall()

    async def _row(self, statement: str, parameters: Sequence[object] = ()) -> Any:
        with self._errors():
            async with self._connection() as conn:
                cursor = await conn.execute(psycopg_marks(statement), parameters)
                return await cursor.fetchone()

    async def _row_kept(self, statement: str, parameters: Sequence[object] = ()) -> Any:
        """:meth:`_row` over a connection of its own while calls come one at a time.

        For a statement asked before each message: a pool checkout costs about a tenth of
        a one-statement call. A call made while another is on its way takes a pooled
        connection. A kept connection the server dropped (a restart, an idle timeout) is
        replaced and the statement sent again, so only a statement that may run twice
        without harm belongs here.
        """
        if self._kept_busy:
            return await self._row(statement, parameters)
        self._kept_busy = True
        try:
            with self._errors():
                query = psycopg_marks(statement)
                kept = self._kept
                if kept is not None and not kept.closed:
                    try:
                        return await (await kept.execute(query, parameters)).fetchone()
                    except psycopg.OperationalError:
                        self._kept = None
                        await kept.close()
                kept = self._kept = await self._connect_kept()
                return await (await kept.execute(query, parameters)).fetchone()
        finally:
            self._kept_busy = False

    async def _connect_kept(self) -> AsyncConnection[Any]:
        await self._open()  # migrated, and refused once closed
        conn = await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, prepare_threshold=None, connect_timeout=int(CONNECT_TIMEOUT)
        )
        if self._closed:  # closed while connecting
            await conn.close()
            raise ConfigurationError(f"store {self._name} is closed", setting="store")
        return conn

    async def _write(self, statement: str, parameters: Sequence[object] = ()) -> int:
        with self._errors():
            async with self._connection() as conn:
                cursor = await conn.execute(psycopg_marks(statement), parameters)
                return cursor.rowcount

    async def _write_rows(self, statement: str, parameters: Sequence[object] = ()) -> list[Any]:
        with self._errors():
            async with self._connection() as conn:
                cursor = await conn.execute(psycopg_marks(statement), parameters)
                return await cursor.fetchall()

    async def _write_all(self, statements: Sequence[tuple[str, Sequence[object]]]) -> list[int]:
        counts = []
        with self._errors():
            async with self._transaction() as conn:
                for statement, parameters in statements:
                    cursor = await conn.execute(psycopg_marks(statement), parameters)
                    counts.append(cursor.rowcount)
        return counts

    async def _key(self, run_id: str) -> tuple[int, str]:
        """The run's integer key and template, cached: neither changes once created."""
        found = self._runs.get(run_id)
        if found is None:
            row = await self._row("SELECT id, template FROM runs WHERE run_id = ?", (run_id,))
            if row is None:
                raise InputError(f"no run named {run_id!r}", field="run_id")
            found = self._runs[run_id] = (int(row[0]), str(row[1]))
        return found

    def _bind_list(self, values: Sequence[str]) -> list[str]:
        return list(values)

    async def aclose(self) -> None:
        """Close the pool and the kept connection; committed work is durable. Idempotent."""
        self._closed = True
        kept, self._kept = self._kept, None
        pool, self._pool = self._pool, None
        with self._errors():
            if kept is not None:
                await kept.close()
            if pool is not None:
                await pool.close()


@functools.lru_cache(maxsize=256)
def psycopg_marks(statement: str, /) -> bytes:
    """A statement of sender's with psycopg's ``%s`` for each ``?`` mark, as bytes.

    Statements are this package's constants (psycopg wants them as literals or bytes);
    the shared ones (:mod:`sender.store.sql`) mark parameters with ``?`` and hold no
    ``%``, and this backend's own already use ``%s`` and hold no ``?``.
    """
    return statement.replace("?", "%s").encode()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
