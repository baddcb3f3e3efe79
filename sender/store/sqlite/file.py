"""One open outbox file: opening (and migrating) it, transactions, errors, closing.

Each role's SQLite implementation (runs, outbox, progress, events, feedback) builds on
this class; :class:`~sender.store.sqlite.SqliteStore` puts them together.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sender.errors import ConfigurationError, InputError
from sender.home import DIR_MODE, tighten
from sender.lifecycle import AsyncResource
from sender.store.common import SqlBackend
from sender.store.sqlite.checkpoint import CHECKPOINT_PAGES, Checkpointer
from sender.store.sqlite.schema import (
    BUSY_TIMEOUT_MS,
    CACHE_KIB,
    SCHEMA_VERSION,
    checkpoint,
    connect,
    create_wal_file,
    migrate,
)

__all__ = ["MEMBER", "NOT_QUEUED", "SqliteFile"]

# The {member} of sender.store.sql's statements: a column is one of a bound JSON array.
MEMBER = "{column} IN (SELECT value FROM json_each(?))"
# The {queued_hint}: the partial state index leaves queued rows out, and a query must
# say it does too before the planner uses it (see schema).
NOT_QUEUED = " AND state <> 'queued'"

_log = logging.getLogger("sender.store")


class SqliteFile(AsyncResource, SqlBackend):
    """The connection to one outbox file and the plumbing every SQLite role shares."""

    def __init__(self, path: Path | str, /, *, checkpoint_pages: int = CHECKPOINT_PAGES) -> None:
        self._path = Path(path)
        self._runs: dict[str, tuple[int, str]] = {}  # run_id -> (key, template); never change
        if checkpoint_pages < 1:
            raise ConfigurationError(
                f"checkpoint_pages must be at least 1, not {checkpoint_pages}",
                setting="checkpoint_pages",
            )
        self._checkpoint_pages = checkpoint_pages
        self._wal_limit = 0  # bytes; set by _setup from the page size
        self._checkpointer: Checkpointer | None = None
        self._write_lock = threading.Lock()  # held by every write, and by a checkpoint's last pass
        self._db: sqlite3.Connection | None = None
        self._create_or_check()
        with self._errors():
            self._db = connect(self._path)
            try:
                self._setup(self._db)
            except sqlite3.DatabaseError as exc:
                self.close()
                if exc.sqlite_errorcode in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
                    raise self._not_an_outbox(str(exc)) from exc
                raise
            except BaseException:
                self.close()
                raise
        for path in (self._path, *self._wal_files()):
            tighten(path)  # names and addresses: 0600, also in a file an older version made

    def _create_or_check(self) -> None:
        """Make a new outbox whole (0600, schema included), or check that the file is one.

        A new file is built under a temporary name and linked into place, so no process
        ever opens a half-made outbox; an empty or foreign file is refused, never started
        over (that would send a run again).
        """
        try:
            self._path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"outbox {self._path}: cannot create its directory: {exc.strerror}",
                setting="outbox",
            ) from exc
        try:
            if not self._path.exists():
                with self._errors():
                    create_wal_file(self._path, lambda db: migrate(db, 0))
            elif self._path.is_file() and self._path.stat().st_size == 0:
                raise self._not_an_outbox("the file is empty")
        except OSError as exc:
            raise ConfigurationError(
                f"outbox {self._path}: cannot create it: {exc.strerror}", setting="outbox"
            ) from exc

    def _not_an_outbox(self, why: str) -> ConfigurationError:
        return ConfigurationError(
            f"outbox {self._path} is not a sender outbox ({why}); move it aside to start "
            "a new one, or restore it from a backup",
            setting="outbox",
        )

    def _wal_files(self) -> tuple[Path, Path]:
        return (
            self._path.with_name(self._path.name + "-wal"),
            self._path.with_name(self._path.name + "-shm"),
        )

    def _setup(self, db: sqlite3.Connection) -> None:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread does it
        # After a checkpoint the WAL starts again from its beginning, and the first commit
        # cuts the file back to this limit; so the file outgrows it only when about
        # checkpoint_pages pages are waiting, which is what the checkpointer looks for.
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        self._wal_limit = self._checkpoint_pages * page_size
        db.execute(f"PRAGMA journal_size_limit = {self._wal_limit}")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"outbox {self._path} has schema version {version}; "
                f"this sender reads version {SCHEMA_VERSION}. Upgrade sender.",
                setting="outbox",
            )
        with self._transaction() as tx:
            (version,) = tx.execute("PRAGMA user_version").fetchone()
            if version == 0:  # new outboxes are made whole (create_wal_file); this is not one
                raise self._not_an_outbox("an SQLite file without sender's tables")
            migrate(tx, version)

    @property
    def path(self) -> Path:
        return self._path

    # --- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate sqlite3's exceptions, the one place they enter, into ConfigurationError."""
        try:
            yield
        except sqlite3.Error as exc:
            raise ConfigurationError(f"outbox {self._path}: {exc}", setting="outbox") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE``: take the write lock first, so no read snapshot goes stale."""
        with self._writing() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # some errors (SQLITE_FULL, IOERR) roll back by themselves
                    db.execute("ROLLBACK")
                raise

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several SELECTs see one state of the file."""
        db = self._connection()
        db.execute("BEGIN")
        try:
            yield db
        finally:
            if db.in_transaction:
                db.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise ConfigurationError(f"outbox {self._path} is closed", setting="outbox")
        return self._db

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The connection, for statements that write, under the write lock.

        The first write starts the checkpointer: lazily, so a store that only
        reads (``sender status``) starts no thread.
        """
        db = self._connection()
        if self._checkpointer is None:
            self._checkpointer = Checkpointer(
                self._path, wal_limit=self._wal_limit, write_lock=self._write_lock
            )
            weakref.finalize(self, self._checkpointer.stop)  # a store dropped unclosed
        with self._write_lock:
            yield db

    def _run(self, run_id: str) -> tuple[int, str]:
        """The run's integer key and template, cached: neither changes once created."""
        found = self._runs.get(run_id)
        if found is None:
            row = (
                self._connection()
                .execute("SELECT id, template FROM runs WHERE run_id = ?", (run_id,))
                .fetchone()
            )
            if row is None:
                raise InputError(f"no run named {run_id!r}", field="run_id")
            found = self._runs[run_id] = (row[0], row[1])
        return found

    @contextmanager
    def _for_run(self, run_id: str) -> Iterator[tuple[int, str]]:
        """The run's key and template, with sqlite3's errors translated for the whole block."""
        with self._errors():
            yield self._run(run_id)

    def _one(self, statement: str, parameters: Sequence[object] = ()) -> Any:
        """The first row one read returns, or None."""
        with self._errors():
            return self._connection().execute(statement, parameters).fetchone()

    def _value(self, statement: str, parameters: Sequence[object] = ()) -> Any:
        """The one value (a COUNT, a MIN) a read returns in its first row."""
        return self._one(statement, parameters)[0]

    def _all(self, statement: str, parameters: Sequence[object] = ()) -> list[Any]:
        """Every row one read returns."""
        with self._errors():
            return self._connection().execute(statement, parameters).fetchall()

    # --- the primitives the shared roles (sender.store.common) run on ----------------------

    async def _rows(self, statement: str, parameters: Sequence[object] = ()) -> list[Any]:
        return self._all(statement, parameters)

    async def _row(self, statement: str, parameters: Sequence[object] = ()) -> Any:
        return self._one(statement, parameters)

    async def _write(self, statement: str, parameters: Sequence[object] = ()) -> int:
        with self._errors(), self._writing() as db:
            return db.execute(statement, parameters).rowcount

    async def _write_all(self, statements: Sequence[tuple[str, Sequence[object]]]) -> list[int]:
        with self._errors(), self._transaction() as db:
            return [
                db.execute(statement, parameters).rowcount for statement, parameters in statements
            ]

    async def _write_rows(self, statement: str, parameters: Sequence[object] = ()) -> list[Any]:
        # fetchall: the statement commits (autocommit) once its rows are read
        with self._errors(), self._writing() as db:
            return db.execute(statement, parameters).fetchall()

    async def _key(self, run_id: str) -> tuple[int, str]:
        with self._errors():
            return self._run(run_id)

    def _bind_list(self, values: Sequence[str]) -> str:
        """A JSON array, for ``IN (SELECT value FROM json_each(?))``."""
        return json.dumps(list(values))

    def close(self) -> None:
        """Stop the checkpointer and close the connection; committed work is already durable.

        A store that wrote checkpoints once more before closing (PASSIVE: a TRUNCATE would
        wait for, and hold up, another process's writes), so its WAL is not left behind
        for others to fold in. Idempotent.
        """
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
        if self._db is not None:
            db, self._db = self._db, None
            try:
                if checkpointer is not None:
                    checkpoint(db)
            except sqlite3.Error as exc:  # housekeeping: the next writer checkpoints instead
                _log.warning("outbox %s: the checkpoint on close failed: %s", self._path, exc)
            finally:
                with self._errors():
                    db.close()

    async def aclose(self) -> None:
        self.close()
