"""WAL checkpoints in a background thread, off the event loop."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from sender.store.sqlite.schema import BUSY_TIMEOUT_MS, checkpoint, connect

__all__ = ["CHECKPOINT_PAGES", "Checkpointer"]

_log = logging.getLogger("sender.store")

CHECKPOINT_PAGES = 8192  # ~32 MB of WAL between checkpoints: fewer fsyncs while ingesting
_CHECKPOINT_POLL_SECONDS = 0.5  # how often the checkpointer looks at the WAL's size
_CHECKPOINT_STOP_SECONDS = 5.0  # how long close() waits for a checkpoint in progress
_CHECKPOINT_BUSY_MS = 10  # the last pass of a round waits this long for other processes


class Checkpointer:
    """A daemon thread that checkpoints the WAL on its own connection.

    A checkpoint fsyncs; on the event loop thread it stalled every send for 60-85 ms.
    """

    def __init__(self, path: Path, *, wal_limit: int, write_lock: threading.Lock) -> None:
        self._path = path
        self._wal = path.with_name(path.name + "-wal")
        self._wal_limit = wal_limit
        self._write_lock = write_lock
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"sender-checkpointer {path}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end, without waiting for it."""
        self._stopping.set()

    def close(self) -> None:
        """End the thread; a checkpoint in progress gets a few seconds to finish."""
        self._stopping.set()
        self._thread.join(_CHECKPOINT_STOP_SECONDS)
        if self._thread.is_alive():
            _log.warning("outbox %s: the checkpointer did not stop in time", self._path)

    def _loop(self) -> None:
        db: sqlite3.Connection | None = None
        failing = False
        while not self._stopping.wait(_CHECKPOINT_POLL_SECONDS):
            try:
                if self._wal_size() > self._wal_limit:
                    if db is None:
                        db = connect(self._path)
                    self._round(db)
            except Exception as exc:  # the thread must outlive any one failure
                # The first failure in a row is a warning, repeats are debug: a full
                # disk would otherwise log twice a second.
                _log.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "outbox %s: a background checkpoint failed; will retry: %s",
                    self._path,
                    exc,
                    exc_info=not isinstance(exc, sqlite3.Error | OSError),
                )
                failing = True
            else:
                if failing:
                    _log.info("outbox %s: background checkpoints work again", self._path)
                failing = False
        if db is not None:
            try:
                db.close()
            except sqlite3.Error as exc:
                _log.warning("outbox %s: closing the checkpointer failed: %s", self._path, exc)

    def _round(self, db: sqlite3.Connection) -> None:
        """Copy the whole WAL into the database file, so the next write starts it over.

        Two PASSIVE passes, which block no one, copy the bulk and then what was
        written meanwhile. The last pass copies the few frames left with every writer
        kept out: this store's by its write lock (they wait for exactly that long),
        other processes' by FULL, which takes SQLite's write lock. It gives up on
        them after a few milliseconds, since this store's writes wait meanwhile;
        the next round tries again.
        """
        checkpoint(db)
        checkpoint(db)
        if self._write_lock.acquire(timeout=_CHECKPOINT_POLL_SECONDS):
            try:
                db.execute(f"PRAGMA busy_timeout = {_CHECKPOINT_BUSY_MS}")
                db.execute("PRAGMA wal_checkpoint(FULL)").fetchall()
            finally:
                self._write_lock.release()
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def _wal_size(self) -> int:
        try:
            return self._wal.stat().st_size
        except FileNotFoundError:  # no WAL yet, or the last connection removed it
            return 0
