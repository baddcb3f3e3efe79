"""The shared limits of processes on one machine: a small SQLite file beside the outbox.

Its own file (``limits.sqlite3`` in the outbox's folder), not a table of the outbox: a
decision is a write transaction, a few per message, and in a file of its own those never
wait behind the outbox's batches or its WAL checkpoints. Each decision is one
``BEGIN IMMEDIATE`` transaction (read the keys, decide with
:func:`~sender.pacing.limits.gcra`, write), so any number of processes share it. The file
is opened on first use: a scheduler with no limits to keep never creates it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sender.errors import ConfigurationError
from sender.pacing.limits import Grant, gcra
from sender.store.sqlite.schema import create_wal_file

__all__ = ["SqliteLimiter", "limits_file"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS limits (
        key      TEXT PRIMARY KEY,
        tat      REAL NOT NULL,
        backoff  TEXT
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS limit_leases (
        key        TEXT NOT NULL,
        holder     TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (key, holder)
    ) WITHOUT ROWID""",
)
_BUSY_TIMEOUT = 10.0  # seconds; a decision holds the lock for microseconds


def _create(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        db.execute(statement)


def limits_file(outbox: Path, /) -> Path:
    """Where the limits of the outbox at ``outbox`` live: ``limits.sqlite3`` beside it."""
    return outbox.parent / "limits.sqlite3"


class SqliteLimiter:
    """A :class:`~sender.pacing.limits.Limiter` in a SQLite file every local process shares."""

    def __init__(self, path: Path, /) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    def __reduce__(self) -> tuple[type[SqliteLimiter], tuple[Path]]:
        """Pickled, it is its file: a worker process opens its own connection to it."""
        return (type(self), (self.path,))

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            with self._errors():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not self.path.exists():
                    create_wal_file(self.path, _create)
                db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None)
                # A file an older sender made: switched to WAL and given its tables here.
                # (Both are reads when already done, so openers at once cannot deadlock.)
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")  # limits need no fsync
                _create(db)
                self._db = db
        return self._db

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite3's errors, the one place they enter, as one clear ConfigurationError."""
        try:
            yield
        except sqlite3.Error as exc:
            raise ConfigurationError(f"limits {self.path}: {exc}", setting="limits") from exc
        except OSError as exc:
            raise ConfigurationError(
                f"limits {self.path}: {exc.strerror}", setting="limits"
            ) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        with self._errors():
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    async def acquire(
        self, keys: Sequence[tuple[str, float]], /, *, now: float, force: bool = False
    ) -> Grant:
        names = [key for key, _ in keys]
        if not names:
            return Grant(())
        with self._transaction() as db:
            marks = ",".join("?" * len(names))
            found = {
                key: (tat, backoff)
                for key, tat, backoff in db.execute(
                    f"SELECT key, tat, backoff FROM limits WHERE key IN ({marks})",  # noqa: S608
                    names,
                )
            }
            tats = [found[key][0] if key in found else 0.0 for key in names]
            waits, charged = gcra(tats, [interval for _, interval in keys], now=now, force=force)
            if charged is not None:
                db.executemany(
                    "INSERT INTO limits (key, tat) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
                    zip(names, charged, strict=True),
                )
        last = found.get(names[-1])
        return Grant(waits, last[1] if last else None)

    async def swap_backoff(self, key: str, /, *, old: str | None, new: str | None) -> str | None:
        with self._transaction() as db:
            row = db.execute("SELECT backoff FROM limits WHERE key = ?", (key,)).fetchone()
            stored: str | None = row[0] if row else None
            if stored == old:
                db.execute(
                    "INSERT INTO limits (key, tat, backoff) VALUES (?, 0, ?)"
                    " ON CONFLICT (key) DO UPDATE SET backoff = excluded.backoff",
                    (key, new),
                )
                stored = new
        return stored

    async def lease(self, key: str, /, *, holder: str, cap: int, ttl: float, now: float) -> bool:
        with self._transaction() as db:
            db.execute("DELETE FROM limit_leases WHERE key = ? AND expires_at <= ?", (key, now))
            (held,) = db.execute(
                "SELECT count(*) FROM limit_leases WHERE key = ? AND holder != ?", (key, holder)
            ).fetchone()
            if held >= cap:
                return False
            db.execute(
                "INSERT INTO limit_leases (key, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key, holder) DO UPDATE SET expires_at = excluded.expires_at",
                (key, holder, now + ttl),
            )
        return True

    async def release(self, key: str, /, *, holder: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM limit_leases WHERE key = ? AND holder = ?", (key, holder))

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    async def aclose(self) -> None:
        self.close()
