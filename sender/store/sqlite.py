"""The embedded outbox: one SQLite file in WAL mode that several processes may share.

Durability: WAL with ``synchronous=NORMAL`` keeps every committed transaction
through a process crash or SIGKILL (only a power cut can lose the last few).
Concurrency: every state change that two processes could race on is one
conditional statement (a claim is ``UPDATE … WHERE id = (SELECT … LIMIT 1)
RETURNING …``) or a ``BEGIN IMMEDIATE`` transaction, so ``sender status`` can
read while ``sender run`` writes, and a resumed run can start while the old
process is still dying.

The sqlite calls run inline on the event loop thread on purpose: a statement
takes tens of microseconds, while a hop to a worker thread and back costs more,
and since no method awaits, a cancelled task can never leave a transaction half
done. The slowest calls (an ``add_rows`` batch of 1,000 rows, the status
queries over a million rows) hold the loop for milliseconds up to ~0.1 s; the
busy timeout only bites when another process holds the write lock. WAL checkpoints
are the exception: one fsyncs and takes 60-85 ms per ~32 MB of WAL, so they run in a
background thread on a connection of its own, and the store's connection never
checkpoints (``wal_autocheckpoint = 0``). Under steady writes a background checkpoint
never catches up on its own (frames keep arriving while it copies), and the WAL can
only start over once one has; so each round ends with a short pass that keeps all
writers out, this store's by its write lock and other processes' by SQLite's, for
the few milliseconds of the last frames.

Schema (one row per input row, participants and skipped rows alike)::

    runs      id, run_id UNIQUE, template, source, created_at, state, paused_*,
              ingested_through, ingest_complete, owner, heartbeat_at
    messages  id, run → runs.id, row, state, template, participant columns
              (participant_id, email, name, course_id, locale, vars as JSON),
              email_key (sender.addresses' key of email, for suppression and bounces),
              domain, priority, due_at, attempts, first/last attempt, claim,
              message_id, last reply (code, enhanced_status, reply_text, detail),
              skip_reason, replaced_by (the message that replaced this one after
              the participant's address was corrected; NULL for current messages)
    attempts  message → messages.id, number, at, state, reply, detail

``due_at`` drives claiming: 0 (or the ``reset_failed`` time) when queued, the
next try when deferred, NULL when sending or final; only non-NULL rows are in
the claim index (run, domain, due_at, priority DESC). Skipped rows have
``participant_id`` NULL, so the unique participant key (run, participant_id,
template, over current messages: ``replaced_by`` NULL) does not apply to them;
they are unique on (run, row) instead. The state index leaves queued rows out,
so ingest writes one index fewer; queued counts are claimable rows minus
deferred ones.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sender.addresses import address_key
from sender.errors import ConfigurationError, InputError
from sender.home import DIR_MODE, create_once, tighten
from sender.models import Participant, SmtpReply
from sender.store.base import (
    Attempt,
    BounceRecord,
    DomainProgress,
    EventRecord,
    IngestResult,
    InvitationRecord,
    MessageRecord,
    MessageState,
    NewRow,
    OutboxMessage,
    Outcome,
    RsvpRecord,
    RunInfo,
    RunState,
    Suppression,
)

if TYPE_CHECKING:
    from sender.store.base import Store

__all__ = ["SqliteStore", "find_latest_run"]

_SCHEMA_VERSION = 5  # 2: options; 3: events, RSVP; 4: bounces, suppressions; 5: _SCHEMA_V5
_BUSY_TIMEOUT_MS = 10_000
_CACHE_KIB = 65_536  # the participant-key index of a million-row run fits
_CHECKPOINT_PAGES = 8192  # ~32 MB of WAL between checkpoints: fewer fsyncs while ingesting
_CHECKPOINT_POLL_SECONDS = 0.5  # how often the checkpointer looks at the WAL's size
_CHECKPOINT_STOP_SECONDS = 5.0  # how long close() waits for a checkpoint in progress
_CHECKPOINT_BUSY_MS = 10  # the last pass of a round waits this long for other processes

_log = logging.getLogger("sender.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id               INTEGER PRIMARY KEY,
    run_id           TEXT NOT NULL UNIQUE,
    template         TEXT NOT NULL,
    source           TEXT NOT NULL,
    created_at       REAL NOT NULL,
    state            TEXT NOT NULL DEFAULT 'active',
    paused_reason    TEXT,
    paused_since     REAL,
    ingested_through INTEGER NOT NULL DEFAULT 0,
    ingest_complete  INTEGER NOT NULL DEFAULT 0,
    owner            TEXT,
    heartbeat_at     REAL,
    options          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);

CREATE TABLE IF NOT EXISTS messages (
    id               INTEGER PRIMARY KEY,
    run              INTEGER NOT NULL REFERENCES runs (id),
    row              INTEGER NOT NULL,
    state            TEXT NOT NULL,
    template         TEXT NOT NULL,
    participant_id   TEXT,
    email            TEXT NOT NULL,
    name             TEXT,
    course_id        TEXT,
    locale           TEXT,
    vars             TEXT,
    domain           TEXT,
    priority         INTEGER NOT NULL DEFAULT 0,
    due_at           REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    first_attempt_at REAL,
    last_attempt_at  REAL,
    claimed_by       TEXT,
    claimed_at       REAL,
    message_id       TEXT,
    code             INTEGER,
    enhanced_status  TEXT,
    reply_text       TEXT,
    detail           TEXT,
    skip_reason      TEXT
);
-- Idempotent ingest: one message per participant and template in a run.
CREATE UNIQUE INDEX IF NOT EXISTS messages_key
    ON messages (run, participant_id, template);
-- Skipped rows (no participant) are unique per input row, so a resume cannot repeat them.
CREATE UNIQUE INDEX IF NOT EXISTS messages_skipped_row
    ON messages (run, row) WHERE participant_id IS NULL;
-- Claim order within a domain (rowid, i.e. id, is the implicit last key), pending_domains.
CREATE INDEX IF NOT EXISTS messages_due
    ON messages (run, domain, due_at, priority DESC) WHERE due_at IS NOT NULL;
-- Every state but queued, for counts, domain_progress, problems and the bulk updates.
-- Queued rows (the bulk of a fresh run) are left out, so ingest writes one index fewer:
-- their numbers are the claimable rows of messages_due minus the deferred ones here.
-- Queries repeat "state <> 'queued'" so the planner can prove the index applies.
CREATE INDEX IF NOT EXISTS messages_state
    ON messages (run, state, domain) WHERE state <> 'queued';

CREATE TABLE IF NOT EXISTS attempts (
    message          INTEGER NOT NULL REFERENCES messages (id),
    number           INTEGER NOT NULL,
    at               REAL NOT NULL,
    state            TEXT NOT NULL,
    code             INTEGER,
    enhanced_status  TEXT,
    reply_text       TEXT,
    detail           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_message ON attempts (message, number);
"""

_SCHEMA_V4 = """
-- Version 4: bounces and the suppression list.
CREATE TABLE IF NOT EXISTS bounces (
    id             INTEGER PRIMARY KEY,
    fingerprint    TEXT NOT NULL UNIQUE,   -- the same bounce ingested twice counts once
    address        TEXT,
    kind           TEXT NOT NULL,
    status         TEXT,
    diagnostic     TEXT NOT NULL DEFAULT '',
    reason         TEXT NOT NULL DEFAULT '',
    at             REAL NOT NULL,
    source         TEXT NOT NULL DEFAULT '',
    message        INTEGER,                -- the outbox message a signed return path named
    participant_id TEXT,
    forged         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS bounces_address ON bounces (address, at);
CREATE INDEX IF NOT EXISTS bounces_at ON bounces (kind, at);

CREATE TABLE IF NOT EXISTS suppressions (
    address   TEXT PRIMARY KEY,            -- the canonical key (since version 5)
    kind      TEXT NOT NULL,               -- hard, complaint, soft, manual
    reason    TEXT NOT NULL,
    since     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS suppression_log (
    id        INTEGER PRIMARY KEY,
    address   TEXT NOT NULL,
    action    TEXT NOT NULL,               -- added, removed
    kind      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    at        REAL NOT NULL
);
"""

# Version 5: shared by the fixes of issue 10; each appends its statements. Every statement
# must be idempotent: it runs on upgrade from 4 and on a new database.
_SCHEMA_V5 = """
-- Addresses in suppressions and bounces become their canonical key (sender.addresses),
-- computed in Python by the address_key() function each connection registers. Of the
-- suppressions that now share a key the strongest stays (a complaint, then a hard bounce,
-- then soft bounces, then a manual entry), the oldest of equals. suppression_log keeps all.
DELETE FROM suppressions WHERE rowid NOT IN (
    SELECT rowid FROM (
        SELECT rowid, ROW_NUMBER() OVER (
            PARTITION BY address_key(address)
            ORDER BY CASE kind WHEN 'complaint' THEN 0 WHEN 'hard' THEN 1
                               WHEN 'soft' THEN 2 ELSE 3 END, since, rowid
        ) AS rank FROM suppressions
    ) WHERE rank = 1
);
UPDATE suppressions SET address = address_key(address) WHERE address <> address_key(address);
UPDATE bounces SET address = address_key(address)
    WHERE address IS NOT NULL AND address <> address_key(address);
-- A participant whose address was corrected after their message was final gets a new
-- message. The old one stays (with its history and its address, for bounces) and names
-- its successor in replaced_by. The participant key applies to current messages only.
ALTER TABLE messages ADD COLUMN replaced_by INTEGER;
DROP INDEX IF EXISTS messages_key;
CREATE UNIQUE INDEX IF NOT EXISTS messages_key
    ON messages (run, participant_id, template) WHERE replaced_by IS NULL;
-- Replaced messages are history: counts subtract them (a few rows, through this index).
CREATE INDEX IF NOT EXISTS messages_replaced
    ON messages (run, state, domain) WHERE replaced_by IS NOT NULL;
-- Each message's address key (sender.addresses), computed in Python at ingest and
-- stored, so suppression and bounce queries compare keys without a Python call per row.
ALTER TABLE messages ADD COLUMN email_key TEXT;
UPDATE messages SET email_key = address_key(email)
    WHERE participant_id IS NOT NULL AND email_key IS NULL;
-- Bounce attribution and soft-bounce forgiveness look messages up by address key.
CREATE INDEX IF NOT EXISTS messages_email_key ON messages (email_key) WHERE email_key IS NOT NULL;
"""

_SCHEMA_V3 = """
-- Version 3: calendar events. A run that sends an event's mail names it.
ALTER TABLE runs ADD COLUMN event_uid TEXT;
ALTER TABLE runs ADD COLUMN sequence INTEGER;
ALTER TABLE runs ADD COLUMN method TEXT;
CREATE INDEX IF NOT EXISTS runs_event ON runs (event_uid) WHERE event_uid IS NOT NULL;

CREATE TABLE IF NOT EXISTS events (
    uid          TEXT PRIMARY KEY,
    course_id    TEXT NOT NULL,
    sequence     INTEGER NOT NULL,
    fingerprint  TEXT NOT NULL,
    event        TEXT NOT NULL,
    cancelled    INTEGER NOT NULL DEFAULT 0,
    changes      TEXT NOT NULL DEFAULT '',
    updated_at   REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS rsvps (
    id             INTEGER PRIMARY KEY,
    uid            TEXT NOT NULL,
    attendee       TEXT NOT NULL,
    partstat       TEXT NOT NULL,
    sequence       INTEGER NOT NULL,
    received_at    REAL NOT NULL,
    outcome        TEXT NOT NULL,
    dtstamp        REAL,
    comment        TEXT NOT NULL DEFAULT '',
    source         TEXT NOT NULL DEFAULT '',
    reason         TEXT NOT NULL DEFAULT '',
    participant_id TEXT
);
CREATE INDEX IF NOT EXISTS rsvps_uid ON rsvps (uid, id);
-- The same answer read twice (a file ingested again) is kept once.
CREATE UNIQUE INDEX IF NOT EXISTS rsvps_once
    ON rsvps (uid, attendee, sequence, partstat, COALESCE(dtstamp, -1), comment);
"""

_SELECT_RUN = """
SELECT run_id, template, source, created_at, state, paused_reason, paused_since,
       ingested_through, ingest_complete, owner, heartbeat_at, options,
       event_uid, sequence, method
  FROM runs
"""

_CLAIM = """
UPDATE messages
   SET state = 'sending', attempts = attempts + 1, due_at = NULL,
       claimed_by = ?, claimed_at = ?, first_attempt_at = COALESCE(first_attempt_at, ?)
 WHERE id = (SELECT id FROM messages
              WHERE run = ? AND domain = ? AND due_at IS NOT NULL AND due_at <= ?
              ORDER BY due_at, priority DESC, id
              LIMIT 1)
RETURNING id, row, email, name, participant_id, course_id, locale, vars,
          template, attempts, first_attempt_at, message_id,
          (SELECT kind || ': ' || reason FROM suppressions
            WHERE address = COALESCE(email_key, address_key(email)))
"""

# Both take the same parameters, so record_many binds each outcome once for both.
_RECORD = """
UPDATE messages
   SET state = ?1, due_at = ?2, last_attempt_at = ?3, code = ?4, enhanced_status = ?5,
       reply_text = ?6, detail = ?7, message_id = COALESCE(message_id, ?8)
 WHERE id = ?9 AND participant_id IS NOT NULL
"""

_LOG_ATTEMPT = """
INSERT INTO attempts (message, number, at, state, code, enhanced_status, reply_text, detail)
SELECT id, attempts, ?3, ?1, ?4, ?5, ?6, ?7 FROM messages WHERE id = ?9
"""

_INSERT_QUEUED = """
INSERT INTO messages (run, row, template, participant_id, email, name, course_id, locale,
                      vars, domain, priority, email_key, state, due_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0)
"""

_INSERT_SKIPPED = """
INSERT INTO messages (run, row, template, email, skip_reason, state)
VALUES (?, ?, ?, ?, ?, 'skipped')
ON CONFLICT DO NOTHING
"""

_OUTCOME_STATES = frozenset(
    {
        MessageState.SENT,
        MessageState.DEFERRED,
        MessageState.FAILED,
        MessageState.SUPPRESSED,
        MessageState.SKIPPED,  # valid at ingest, yet the template could not render it
    }
)


class SqliteStore:
    """The :class:`~sender.store.base.Store` in one SQLite file, e.g. ``.sender/outbox.sqlite3``.

    Opens (creating the file, its parent directories and the schema) in the
    constructor, so it can be built from synchronous code; close it with
    :meth:`aclose` or use ``async with``. A file that cannot be opened or
    written raises :class:`~sender.errors.ConfigurationError` naming the path,
    then and on every later call; no ``sqlite3`` exception escapes.
    Methods that need a run raise :class:`~sender.errors.InputError` (field ``run_id``)
    for a run that does not exist.

    One instance per event loop thread; open another instance (or process)
    for concurrent access to the same file. The first write starts a daemon
    thread that checkpoints the WAL once about ``checkpoint_pages`` pages have
    built up; :meth:`close` stops it.
    """

    def __init__(self, path: Path | str, /, *, checkpoint_pages: int = _CHECKPOINT_PAGES) -> None:
        self._path = Path(path)
        self._runs: dict[str, tuple[int, str]] = {}  # run_id -> (key, template); never change
        if checkpoint_pages < 1:
            raise ConfigurationError(
                f"checkpoint_pages must be at least 1, not {checkpoint_pages}",
                setting="checkpoint_pages",
            )
        self._checkpoint_pages = checkpoint_pages
        self._wal_limit = 0  # bytes; set by _setup from the page size
        self._checkpointer: _Checkpointer | None = None
        self._write_lock = threading.Lock()  # held by every write, and by a checkpoint's last pass
        self._db: sqlite3.Connection | None = None
        self._create_or_check()
        with self._errors():
            self._db = _connect(self._path)
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
                    create_once(self._path, _create_schema)
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
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        db.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread does it
        # After a checkpoint the WAL starts again from its beginning, and the first commit
        # cuts the file back to this limit; so the file outgrows it only when about
        # checkpoint_pages pages are waiting, which is what the checkpointer looks for.
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        self._wal_limit = self._checkpoint_pages * page_size
        db.execute(f"PRAGMA journal_size_limit = {self._wal_limit}")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version == _SCHEMA_VERSION:
            return
        if version > _SCHEMA_VERSION:
            raise ConfigurationError(
                f"outbox {self._path} has schema version {version}; "
                f"this sender reads version {_SCHEMA_VERSION}. Upgrade sender.",
                setting="outbox",
            )
        with self._transaction() as tx:
            (version,) = tx.execute("PRAGMA user_version").fetchone()
            if version == 0:  # new outboxes are made whole (_create_schema); this is not one
                raise self._not_an_outbox("an SQLite file without sender's tables")
            _migrate(tx, version)

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
            self._checkpointer = _Checkpointer(
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

    # --- runs -----------------------------------------------------------------------------

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
        with self._errors():
            key, _ = self._run(run_id)
            with self._transaction() as db:
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
        row = self._connection().execute(_SELECT_RUN + " WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else _run_info(row)

    async def latest_run(self) -> RunInfo | None:
        """The most recently created run, for ``sender status`` without a run id."""
        with self._errors():
            return self._latest_run()

    async def runs(self, *, limit: int = 100) -> list[RunInfo]:
        """The most recent runs first, at most ``limit`` (``sender status --all``)."""
        with self._errors():
            rows = (
                self._connection()
                .execute(_SELECT_RUN + " ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))
                .fetchall()
            )
        return [_run_info(row) for row in rows]

    def _latest_run(self) -> RunInfo | None:
        row = (
            self._connection()
            .execute(_SELECT_RUN + " ORDER BY created_at DESC, id DESC LIMIT 1")
            .fetchone()
        )
        return None if row is None else _run_info(row)

    async def acquire_run(self, run_id: str, /, *, owner: str, now: float, ttl: float) -> bool:
        """Take the run's lease unless another owner's heartbeat is younger than ``ttl``."""
        with self._errors():
            key, _ = self._run(run_id)
            with self._writing() as db:
                cursor = db.execute(
                    "UPDATE runs SET owner = ?, heartbeat_at = ?"
                    " WHERE id = ? AND (owner IS NULL OR owner = ? OR heartbeat_at IS NULL"
                    "                   OR heartbeat_at < ?)",
                    (owner, now, key, owner, now - ttl),
                )
            return cursor.rowcount == 1

    async def heartbeat(self, run_id: str, /, *, owner: str, now: float) -> bool:
        """Renew the lease; False when ``owner`` no longer holds it (stop sending)."""
        with self._errors():
            key, _ = self._run(run_id)
            with self._writing() as db:
                cursor = db.execute(
                    "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND owner = ?", (now, key, owner)
                )
            return cursor.rowcount == 1

    async def release_run(self, run_id: str, /, *, owner: str) -> None:
        with self._errors():
            key, _ = self._run(run_id)
            with self._writing() as db:
                db.execute(
                    "UPDATE runs SET owner = NULL, heartbeat_at = NULL WHERE id = ? AND owner = ?",
                    (key, owner),
                )

    async def set_run_state(
        self, run_id: str, state: RunState, /, *, now: float, reason: str | None = None
    ) -> None:
        """Pausing keeps the first ``paused_since``; any other state clears both pause fields."""
        paused = state is RunState.PAUSED
        with self._errors():
            key, _ = self._run(run_id)
            with self._writing() as db:
                db.execute(
                    "UPDATE runs SET state = ?, paused_reason = ?,"
                    " paused_since = CASE WHEN ? THEN CASE WHEN state = 'paused'"
                    " THEN COALESCE(paused_since, ?) ELSE ? END END"
                    " WHERE id = ?",
                    (state.value, reason if paused else None, paused, now, now, key),
                )

    # --- ingest ---------------------------------------------------------------------------

    async def add_rows(
        self, run_id: str, rows: Sequence[NewRow], /, *, complete: bool = False
    ) -> IngestResult:
        """Store rows in one transaction and advance ``ingested_through`` with them.

        Idempotent: the key is (run, participant id, template). A participant
        already in the run from *another* row is recorded as a skipped duplicate
        naming that row; the same row stored again (a resumed ingest) is ignored.
        A row with ``replaces`` gives a participant of the run a corrected address:
        a message not sent yet is changed in place; a final one (sent, failed, ...)
        stays as it was, replaced by a new queued message.
        The result counts only what this call stored.
        """
        ordered = sorted(rows, key=lambda r: r.row)
        corrections = [r for r in ordered if r.replaces and r.participant is not None]
        with self._errors():
            key, template = self._run(run_id)
            with self._transaction() as db:
                try:
                    corrected = sum(self._replace(db, key, template, new) for new in corrections)
                    queued, skipped, duplicates = self._ingest(
                        db, key, template, [r for r in ordered if r not in corrections]
                    )
                    db.executemany(_INSERT_QUEUED, queued)
                    db.executemany(_INSERT_SKIPPED, skipped)
                except UnicodeEncodeError:
                    raise _unencodable(ordered) from None
                db.execute(
                    "UPDATE runs SET ingested_through = MAX(ingested_through, ?),"
                    " ingest_complete = ingest_complete OR ? WHERE id = ?",
                    (ordered[-1].row if ordered else 0, complete, key),
                )
        return IngestResult(
            queued=len(queued),
            skipped=len(skipped),
            duplicates=tuple(duplicates),
            corrected=corrected,
        )

    @staticmethod
    def _replace(db: sqlite3.Connection, key: int, template: str, new: NewRow) -> bool:
        """Give the participant of ``new`` its corrected address; False when none to correct."""
        person = new.participant
        if person is None:
            return False
        found = db.execute(
            "SELECT id, state, email FROM messages WHERE run = ? AND participant_id = ?"
            " AND template = ? AND replaced_by IS NULL",
            (key, person.participant_id, template),
        ).fetchone()
        values = _queued_values(key, template, new, person)
        if found is None:
            db.execute(_INSERT_QUEUED, values)
            return False
        id_, state, email = found
        if email == person.email:
            return False  # corrected already (a resumed ingest)
        if state in (MessageState.QUEUED, MessageState.DEFERRED):
            db.execute(
                "UPDATE messages SET row = ?, email = ?, name = ?, course_id = ?, locale = ?,"
                " vars = ?, domain = ?, priority = ?, email_key = ?, state = 'queued', due_at = 0,"
                " attempts = 0, first_attempt_at = NULL, last_attempt_at = NULL,"
                " message_id = NULL, code = NULL, enhanced_status = NULL, reply_text = NULL,"
                " detail = NULL WHERE id = ?",
                (new.row, *values[4:], id_),
            )
            return True
        db.execute("UPDATE messages SET replaced_by = 0 WHERE id = ?", (id_,))
        cursor = db.execute(_INSERT_QUEUED, values)
        db.execute("UPDATE messages SET replaced_by = ? WHERE id = ?", (cursor.lastrowid, id_))
        return True

    @staticmethod
    def _ingest(
        db: sqlite3.Connection, key: int, template: str, ordered: Sequence[NewRow]
    ) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[int, int]]]:
        """Split a sorted batch into new queued rows, new skipped rows and duplicates."""
        ids = [r.participant.participant_id for r in ordered if r.participant is not None]
        first_row: dict[str, int] = {}
        if ids:
            first_row.update(
                db.execute(
                    "SELECT participant_id, row FROM messages"
                    " WHERE run = ? AND template = ? AND replaced_by IS NULL"
                    " AND participant_id IN (SELECT value FROM json_each(?))",
                    (key, template, json.dumps(ids)),
                ).fetchall()
            )
        stored_skips: set[int] = set()
        if ordered:
            stored_skips.update(
                row
                for (row,) in db.execute(
                    "SELECT row FROM messages WHERE run = ? AND participant_id IS NULL"
                    " AND row BETWEEN ? AND ?",
                    (key, ordered[0].row, ordered[-1].row),
                )
            )
        queued: list[tuple[object, ...]] = []
        skipped: list[tuple[object, ...]] = []
        duplicates: list[tuple[int, int]] = []
        for new in ordered:
            person = new.participant
            if person is None:
                if new.row not in stored_skips:
                    stored_skips.add(new.row)
                    reason = _text(new.skip_reason or "skipped")
                    skipped.append((key, new.row, template, _text(new.email or ""), reason))
                continue
            first = first_row.get(person.participant_id)
            if first is None:
                first_row[person.participant_id] = new.row
                queued.append(_queued_values(key, template, new, person))
            elif first != new.row and new.row not in stored_skips:
                stored_skips.add(new.row)
                duplicates.append((new.row, first))
                skipped.append(
                    (key, new.row, template, _text(person.email), f"duplicate of row {first}")
                )
        return queued, skipped, duplicates

    async def addresses_of(self, run_id: str, participant_ids: Sequence[str], /) -> dict[str, str]:
        """The address of each participant's current message in the run, for those it has."""
        if not participant_ids:
            return {}
        with self._errors():
            key, template = self._run(run_id)
            return dict(
                self._connection()
                .execute(
                    "SELECT participant_id, email FROM messages"
                    " WHERE run = ? AND template = ? AND replaced_by IS NULL"
                    " AND participant_id IN (SELECT value FROM json_each(?))",
                    (key, template, json.dumps(list(participant_ids))),
                )
                .fetchall()
            )

    async def participant_count(self, run_id: str, /) -> int:
        """How many participants the run has a message for (skipped rows not counted)."""
        with self._errors():
            key, template = self._run(run_id)
            (count,) = (
                self._connection()
                .execute(
                    "SELECT COUNT(*) FROM messages WHERE run = ? AND participant_id IS NOT NULL"
                    " AND template = ? AND replaced_by IS NULL",
                    (key, template),
                )
                .fetchone()
            )
            return int(count)

    # --- sending --------------------------------------------------------------------------

    async def requeue_stale(self, run_id: str, /) -> int:
        """Put ``sending`` rows back to ``queued`` (after a crash); returns how many.

        They go to the front (``due_at`` 0). Their ``attempts`` stay counted: the
        crashed attempt may have reached the server. One replaced by a corrected
        address since is never sent to the old address again: it is marked failed.
        """
        with self._errors():
            key, _ = self._run(run_id)
            with self._transaction() as db:
                db.execute(
                    "UPDATE messages SET state = 'failed', due_at = NULL, detail = ?"
                    " WHERE run = ? AND state = 'sending' AND state <> 'queued'"
                    " AND replaced_by IS NOT NULL",
                    ("interrupted while sending; the address was corrected since", key),
                )
                cursor = db.execute(
                    "UPDATE messages SET state = 'queued', due_at = 0"
                    " WHERE run = ? AND state = 'sending' AND state <> 'queued'"
                    " AND replaced_by IS NULL",
                    (key,),
                )
            return cursor.rowcount

    async def pending_domains(self, run_id: str, /, *, now: float) -> dict[str, int]:
        """Domains with claimable messages now (queued, or deferred and due), with counts."""
        with self._errors():
            key, _ = self._run(run_id)
            return dict(
                self._connection()
                .execute(
                    "SELECT domain, COUNT(*) FROM messages"
                    " WHERE run = ? AND due_at IS NOT NULL AND due_at <= ? GROUP BY domain",
                    (key, now),
                )
                .fetchall()
            )

    async def claim(
        self, run_id: str, domain: str, /, *, now: float, owner: str
    ) -> OutboxMessage | None:
        """Atomically move one claimable message of ``domain`` to ``sending``.

        Order: earliest ``due_at`` (queued rows first), then higher priority, then input order.
        """
        with self._errors():
            key, _ = self._run(run_id)
            with self._writing() as db:
                return self._claim(db, run_id, key, domain, now, owner)

    async def claim_many(
        self, run_id: str, domains: Sequence[str], /, *, now: float, owner: str
    ) -> list[OutboxMessage | None]:
        """One :meth:`claim` per entry of ``domains`` (repeats allowed) in one transaction.

        The list is aligned with ``domains``; None where that domain had nothing left.
        """
        with self._errors():
            key, _ = self._run(run_id)
            with self._transaction() as db:
                return [self._claim(db, run_id, key, domain, now, owner) for domain in domains]

    @staticmethod
    def _claim(
        db: sqlite3.Connection, run_id: str, key: int, domain: str, now: float, owner: str
    ) -> OutboxMessage | None:
        # fetchall, not fetchone: outside a transaction the statement commits when it is done.
        rows = db.execute(_CLAIM, (owner, now, now, key, domain, now)).fetchall()
        if not rows:
            return None
        (
            id_,
            row,
            email,
            name,
            participant_id,
            course_id,
            locale,
            variables,
            template,
            attempts,
            first_attempt_at,
            message_id,
            suppressed,
        ) = rows[0]
        return OutboxMessage(
            id=id_,
            run_id=run_id,
            row=row,
            participant=Participant(
                email=email,
                name=name,
                participant_id=participant_id,
                course_id=course_id,
                locale=locale,
                vars=json.loads(variables) if variables else {},
            ),
            template=template,
            domain=domain,
            attempts=attempts,
            first_attempt_at=first_attempt_at,
            message_id=message_id,
            suppressed=suppressed,
        )

    async def record(self, message_id: int, outcome: Outcome, /) -> None:
        """Store an attempt's outcome and append it to the attempt log, in one transaction.

        The first Message-ID recorded sticks. Raises ValueError for an outcome
        that is not SENT, DEFERRED (with ``next_attempt_at``), FAILED or
        SUPPRESSED, and KeyError for an unknown message; then nothing is stored.
        """
        await self.record_many([(message_id, outcome)])

    async def record_many(self, outcomes: Sequence[tuple[int, Outcome]], /) -> None:
        """:meth:`record` for several messages in one transaction: one commit, not one each.

        All or nothing: one bad outcome or unknown message stores none of them.
        """
        updates = []
        for message_id, outcome in outcomes:
            if outcome.state not in _OUTCOME_STATES:
                raise ValueError(f"cannot record a {outcome.state} outcome")
            due = None
            if outcome.state is MessageState.DEFERRED:
                if outcome.next_attempt_at is None:
                    raise ValueError("a deferred outcome needs next_attempt_at")
                due = outcome.next_attempt_at
            reply = outcome.reply
            updates.append(
                (
                    outcome.state.value,
                    due,
                    outcome.at,
                    reply.code if reply else None,
                    reply.enhanced_status if reply else None,
                    reply.text if reply else None,
                    outcome.detail,
                    outcome.message_id,
                    message_id,
                )
            )
        if not updates:
            return
        with self._errors(), self._transaction() as db:
            cursor = db.executemany(_RECORD, updates)
            if cursor.rowcount != len(updates):
                ids = [update[-1] for update in updates]
                found = {
                    id_
                    for (id_,) in db.execute(
                        "SELECT id FROM messages WHERE participant_id IS NOT NULL"
                        " AND id IN (SELECT value FROM json_each(?))",
                        (json.dumps(ids),),
                    )
                }
                raise KeyError(next(id_ for id_ in ids if id_ not in found))
            db.executemany(_LOG_ATTEMPT, updates)

    async def next_attempt_at(self, run_id: str, /) -> float | None:
        """The earliest time a deferred message of the run becomes due."""
        with self._errors():
            key, _ = self._run(run_id)
            (due,) = (
                self._connection()
                .execute(
                    "SELECT MIN(due_at) FROM messages"
                    " WHERE run = ? AND state = 'deferred' AND state <> 'queued'",
                    (key,),
                )
                .fetchone()
            )
        return None if due is None else float(due)

    async def reset_failed(self, run_id: str, /, *, now: float) -> int:
        """``failed`` and ``deferred`` back to ``queued`` for ``sender retry``; never ``sent``.

        Also makes the run active again. ``attempts`` and ``first_attempt_at`` are kept.
        A message replaced by a corrected address stays as it was: its address is wrong.
        """
        with self._errors():
            key, _ = self._run(run_id)
            with self._transaction() as db:
                cursor = db.execute(
                    "UPDATE messages SET state = 'queued', due_at = ?"
                    " WHERE run = ? AND state IN ('failed', 'deferred') AND state <> 'queued'"
                    " AND replaced_by IS NULL",
                    (now, key),
                )
                db.execute(
                    "UPDATE runs SET state = 'active', paused_reason = NULL, paused_since = NULL"
                    " WHERE id = ?",
                    (key,),
                )
            return cursor.rowcount

    # --- reporting ------------------------------------------------------------------------

    async def counts(self, run_id: str, /) -> dict[MessageState, int]:
        """Messages per state; every state is present, zeros included.

        Current messages only: one replaced by a corrected address is left out.
        """
        with self._errors():
            key, _ = self._run(run_id)
            with self._snapshot() as db:
                rows = db.execute(
                    "SELECT state, COUNT(*) FROM messages"
                    " WHERE run = ? AND state <> 'queued' GROUP BY state",
                    (key,),
                ).fetchall()
                replaced = db.execute(
                    "SELECT state, COUNT(*) FROM messages"
                    " WHERE run = ? AND replaced_by IS NOT NULL GROUP BY state",
                    (key,),
                ).fetchall()
                ((claimable,),) = db.execute(
                    "SELECT COUNT(*) FROM messages WHERE run = ? AND due_at IS NOT NULL", (key,)
                ).fetchall()
        counts = dict.fromkeys(MessageState, 0)
        counts.update((MessageState(state), count) for state, count in rows)
        for state, count in replaced:
            counts[MessageState(state)] -= count
        counts[MessageState.QUEUED] = claimable - counts[MessageState.DEFERRED]
        return counts

    async def domain_progress(self, run_id: str, /) -> list[DomainProgress]:
        """Per recipient domain, sorted by name: counts per state and the next deferred try.

        Skipped rows have no domain and are not listed; like :meth:`counts`, a message
        replaced by a corrected address is left out.
        """
        with self._errors():
            key, _ = self._run(run_id)
            with self._snapshot() as db:
                claimable = db.execute(
                    "SELECT domain, COUNT(*) FROM messages"
                    " WHERE run = ? AND due_at IS NOT NULL GROUP BY domain",
                    (key,),
                ).fetchall()
                rows = db.execute(
                    "SELECT state, domain, COUNT(*) FROM messages"
                    " WHERE run = ? AND state <> 'queued' AND domain IS NOT NULL"
                    " GROUP BY state, domain",
                    (key,),
                ).fetchall()
                replaced = db.execute(
                    "SELECT state, domain, COUNT(*) FROM messages"
                    " WHERE run = ? AND replaced_by IS NOT NULL AND domain IS NOT NULL"
                    " GROUP BY state, domain",
                    (key,),
                ).fetchall()
                due = dict(
                    db.execute(
                        "SELECT domain, MIN(due_at) FROM messages"
                        " WHERE run = ? AND state = 'deferred' AND state <> 'queued'"
                        " GROUP BY domain",
                        (key,),
                    ).fetchall()
                )
        counts: dict[str, dict[MessageState, int]] = {}
        for state, domain, count in rows:
            counts.setdefault(domain, dict.fromkeys(MessageState, 0))[MessageState(state)] = count
        for state, domain, count in replaced:
            counts[domain][MessageState(state)] -= count
        counts = {domain: states for domain, states in counts.items() if any(states.values())}
        for domain, count in claimable:
            per_state = counts.setdefault(domain, dict.fromkeys(MessageState, 0))
            per_state[MessageState.QUEUED] = count - per_state[MessageState.DEFERRED]
        return [
            DomainProgress(domain=domain, counts=counts[domain], next_attempt_at=due.get(domain))
            for domain in sorted(counts)
        ]

    async def attempts(self, message_id: int, /) -> list[Attempt]:
        """The attempt log of one message, oldest first."""
        with self._errors():
            rows = (
                self._connection()
                .execute(
                    "SELECT number, at, state, code, enhanced_status, reply_text, detail"
                    " FROM attempts WHERE message = ? ORDER BY number, rowid",
                    (message_id,),
                )
                .fetchall()
            )
        return [
            Attempt(
                message_id=message_id,
                number=number,
                at=at,
                state=MessageState(state),
                reply=None if code is None else SmtpReply(code, enhanced, text or ""),
                detail=detail,
            )
            for number, at, state, code, enhanced, text, detail in rows
        ]

    async def lookup(self, run_id: str, participant_id: str, /) -> MessageRecord | None:
        """The message of one participant in a run, if any."""
        with self._errors():
            key, _ = self._run(run_id)
            found = (
                self._connection()
                .execute(
                    _SELECT_MESSAGE
                    + " WHERE m.run = ? AND m.participant_id = ? AND m.replaced_by IS NULL"
                    " ORDER BY m.id LIMIT 1",
                    (key, participant_id),
                )
                .fetchone()
            )
        return None if found is None else _message_record(found)

    async def skipped(self, run_id: str, /, *, limit: int = 1000) -> list[tuple[int, str, str]]:
        """Skipped rows as (row, email or '', reason), in row order.

        Both kinds: rows skipped when read (bad data, duplicates, undeliverable
        addresses) and messages skipped when composed at send time.
        """
        with self._errors():
            key, _ = self._run(run_id)
            rows = (
                self._connection()
                .execute(
                    "SELECT row, email, COALESCE(skip_reason, detail, 'skipped') FROM messages"
                    " WHERE run = ? AND state = 'skipped' AND state <> 'queued'"
                    " ORDER BY row LIMIT ?",
                    (key, limit),
                )
                .fetchall()
            )
        return [(row, email or "", reason) for row, email, reason in rows]

    async def problems(
        self, run_id: str, /, *, limit: int = 1000
    ) -> list[tuple[int, str, MessageState, str]]:
        """Failed, deferred and suppressed rows as (row, email, state, last reply or detail)."""
        with self._errors():
            key, _ = self._run(run_id)
            rows = (
                self._connection()
                .execute(
                    "SELECT row, email, state, code, enhanced_status, reply_text, detail"
                    " FROM messages WHERE run = ? AND state <> 'queued'"
                    " AND state IN ('failed', 'deferred', 'suppressed') AND replaced_by IS NULL"
                    " ORDER BY row LIMIT ?",
                    (key, limit),
                )
                .fetchall()
            )
        return [
            (
                row,
                email,
                MessageState(state),
                (detail or "") if code is None else str(SmtpReply(code, enhanced, text or "")),
            )
            for row, email, state, code, enhanced, text, detail in rows
        ]

    # --- closing --------------------------------------------------------------------------

    # --- calendar events ----------------------------------------------------------------

    async def save_event(self, record: EventRecord, /) -> None:
        """Insert or replace the event's record."""
        with self._errors(), self._writing() as db:
            db.execute(
                "INSERT OR REPLACE INTO events (uid, course_id, sequence, fingerprint, event,"
                " cancelled, changes, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.uid,
                    record.course_id,
                    record.sequence,
                    record.fingerprint,
                    record.event,
                    int(record.cancelled),
                    ",".join(record.changes),
                    record.updated_at,
                ),
            )

    async def get_event(self, uid: str, /) -> EventRecord | None:
        with self._errors():
            row = self._connection().execute(_SELECT_EVENT + " WHERE uid = ?", (uid,)).fetchone()
        return None if row is None else _event_record(row)

    async def events(self) -> list[EventRecord]:
        """Every event sent, the most recently changed first."""
        with self._errors():
            rows = (
                self._connection()
                .execute(_SELECT_EVENT + " ORDER BY updated_at DESC, uid")
                .fetchall()
            )
        return [_event_record(row) for row in rows]

    async def invitations(self, uid: str, /) -> list[InvitationRecord]:
        """Every participant sent a message of the event, with the last SEQUENCE and method.

        Derived from the ``sent`` messages of the event's runs; for each participant
        the message of the highest SEQUENCE wins (a CANCEL after a REQUEST, say).
        """
        with self._errors(), self._snapshot() as db:
            rows = db.execute(
                "SELECT m.participant_id, m.email, m.name, m.course_id, m.locale, m.vars,"
                "       r.sequence, r.method, m.last_attempt_at"
                "  FROM messages m JOIN runs r ON m.run = r.id"
                " WHERE r.event_uid = ? AND m.state = 'sent' AND m.state <> 'queued'"
                " ORDER BY m.participant_id, r.sequence, m.last_attempt_at",
                (uid,),
            ).fetchall()
        latest: dict[str, InvitationRecord] = {}
        for pid, email, name, course, locale, variables, sequence, method, at in rows:
            latest[pid] = InvitationRecord(
                uid=uid,
                participant=Participant(
                    email=email,
                    name=name,
                    participant_id=pid,
                    course_id=course,
                    locale=locale,
                    vars=json.loads(variables) if variables else {},
                ),
                sequence=int(sequence),
                method=str(method),
                sent_at=at,
            )
        return list(latest.values())

    async def add_rsvp(self, record: RsvpRecord, /) -> bool:
        """Keep an answer; False (and nothing stored) when the same answer is already kept."""
        return self._insert_once("rsvps", asdict(record))

    async def rsvps(self, uid: str | None = None, /) -> list[RsvpRecord]:
        """Answers in the order they were received, of one event or of all."""
        query = (
            "SELECT uid, attendee, partstat, sequence, received_at, outcome, dtstamp, comment,"
            " source, reason, participant_id FROM rsvps"
        )
        with self._errors():
            db = self._connection()
            rows = (
                db.execute(query + " WHERE uid = ? ORDER BY id", (uid,)).fetchall()
                if uid is not None
                else db.execute(query + " ORDER BY id").fetchall()
            )
        return [
            RsvpRecord(
                uid=row[0],
                attendee=row[1],
                partstat=row[2],
                sequence=int(row[3]),
                received_at=float(row[4]),
                outcome=row[5],
                dtstamp=row[6],
                comment=row[7],
                source=row[8],
                reason=row[9],
                participant_id=row[10],
            )
            for row in rows
        ]

    # --- bounces and suppression ---------------------------------------------------------

    async def add_bounce(self, record: BounceRecord, /) -> bool:
        """Keep a bounce; False (nothing stored) when its fingerprint is already kept."""
        values = asdict(record)
        values["address"] = address_key(record.address) if record.address else None
        values["forged"] = int(record.forged)
        return self._insert_once("bounces", values)

    def _insert_once(self, table: str, values: Mapping[str, object]) -> bool:
        """INSERT a record's fields as columns of the same names, unless a unique key has it."""
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        # table and columns are this module's constants and dataclass fields, never input
        statement = f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"  # noqa: S608
        with self._errors(), self._writing() as db:
            cursor = db.execute(statement, tuple(values.values()))
            return cursor.rowcount == 1

    async def bounces(self, *, since: float | None = None) -> list[BounceRecord]:
        """Bounces kept since a time (all when None), oldest first."""
        with self._errors():
            rows = (
                self._connection()
                .execute(
                    "SELECT fingerprint, address, kind, status, diagnostic, reason, at, source,"
                    " message, participant_id, forged FROM bounces WHERE at >= ? ORDER BY at, id",
                    (since if since is not None else float("-inf"),),
                )
                .fetchall()
            )
        return [
            BounceRecord(
                fingerprint=row[0],
                address=row[1],
                kind=row[2],
                status=row[3],
                diagnostic=row[4],
                reason=row[5],
                at=row[6],
                source=row[7],
                message=row[8],
                participant_id=row[9],
                forged=bool(row[10]),
            )
            for row in rows
        ]

    async def count_bounces(self, address: str, /, *, kind: str, since: float) -> int:
        """How many bounces of ``kind`` an address had since ``since``, after its last delivery.

        Copies of one bounce count once: at most one per outbox message.
        """
        address = address_key(address)
        with self._errors(), self._snapshot() as db:
            (delivered,) = db.execute(
                "SELECT MAX(last_attempt_at) FROM messages"
                " WHERE email_key = ? AND state = 'sent' AND state <> 'queued'",
                (address,),
            ).fetchone()
            (count,) = db.execute(
                "SELECT COUNT(DISTINCT COALESCE('m' || message, fingerprint)) FROM bounces"
                " WHERE address = ? AND kind = ? AND forged = 0 AND at >= ? AND at > ?",
                (address, kind, since, delivered if delivered is not None else float("-inf")),
            ).fetchone()
        return int(count)

    async def hard_bounces_since(self, since: float, /) -> int:
        """Addresses that hard-bounced (not forged) since ``since`` (the ``bounces_at`` index).

        Each address counts once, however many bounces (or copies of one) it had;
        a bounce that names no address counts once per outbox message.
        """
        with self._errors():
            (hard,) = (
                self._connection()
                .execute(
                    "SELECT COUNT(DISTINCT COALESCE(address, 'm' || message, fingerprint))"
                    " FROM bounces WHERE kind = 'hard' AND at >= ? AND forged = 0",
                    (since,),
                )
                .fetchone()
            )
        return int(hard)

    async def sent_since(self, since: float, /) -> int:
        """Messages accepted since ``since``; a scan of the attempt log, so ask sparingly."""
        with self._errors():
            (sent,) = (
                self._connection()
                .execute("SELECT COUNT(*) FROM attempts WHERE state = 'sent' AND at >= ?", (since,))
                .fetchone()
            )
        return int(sent)

    async def message(self, message_id: int, /) -> MessageRecord | None:
        """One outbox message by its id (what a signed return path names)."""
        with self._errors():
            found = (
                self._connection()
                .execute(_SELECT_MESSAGE + " WHERE m.id = ?", (message_id,))
                .fetchone()
            )
        return None if found is None else _message_record(found)

    async def participants_by_address(self, addresses: Sequence[str], /) -> dict[str, Participant]:
        """The participant each address last belonged to in any run, by address key."""
        if not addresses:
            return {}
        with self._errors():
            rows = (
                self._connection()
                .execute(
                    "SELECT email_key, participant_id, email, name, course_id, locale, vars"
                    "  FROM messages WHERE participant_id IS NOT NULL"
                    "   AND email_key IN (SELECT value FROM json_each(?)) ORDER BY id",
                    (_address_list(addresses),),
                )
                .fetchall()
            )
        found: dict[str, Participant] = {}
        for key, pid, email, name, course, locale, variables in rows:  # the last one wins
            found[key] = Participant(
                email=email,
                name=name,
                participant_id=pid,
                course_id=course,
                locale=locale or "en",
                vars=json.loads(variables) if variables else {},
            )
        return found

    async def suppress(self, address: str, /, *, kind: str, reason: str, now: float) -> bool:
        """Add to the suppression list (logged); False when it was there already.

        The list holds each address's canonical key, so every spelling is one entry.
        """
        address = address_key(address)
        with self._errors(), self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO suppressions (address, kind, reason, since) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (address, kind, reason, now),
            )
            if cursor.rowcount != 1:
                return False
            db.execute(
                "INSERT INTO suppression_log (address, action, kind, reason, at)"
                " VALUES (?, 'added', ?, ?, ?)",
                (address, kind, reason, now),
            )
            return True

    async def unsuppress(self, address: str, /, *, reason: str, now: float) -> bool:
        """Remove from the suppression list (logged with the reason); False when absent."""
        address = address_key(address)
        with self._errors(), self._transaction() as db:
            row = db.execute(
                "DELETE FROM suppressions WHERE address = ? RETURNING kind", (address,)
            ).fetchall()
            if not row:
                return False
            db.execute(
                "INSERT INTO suppression_log (address, action, kind, reason, at)"
                " VALUES (?, 'removed', ?, ?, ?)",
                (address, row[0][0], reason, now),
            )
            return True

    async def suppressed(self, addresses: Sequence[str], /) -> dict[str, Suppression]:
        """The suppressed ones among ``addresses`` (compared by canonical key), by key."""
        if not addresses:
            return {}
        with self._errors():
            rows = (
                self._connection()
                .execute(
                    "SELECT address, kind, reason, since FROM suppressions"
                    " WHERE address IN (SELECT value FROM json_each(?))",
                    (_address_list(addresses),),
                )
                .fetchall()
            )
        return {row[0]: Suppression(row[0], row[1], row[2], row[3]) for row in rows}

    async def suppressions(self) -> list[Suppression]:
        with self._errors():
            rows = (
                self._connection()
                .execute("SELECT address, kind, reason, since FROM suppressions ORDER BY since")
                .fetchall()
            )
        return [Suppression(row[0], row[1], row[2], row[3]) for row in rows]

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
                    _checkpoint(db)
            except sqlite3.Error as exc:  # housekeeping: the next writer checkpoints instead
                _log.warning("outbox %s: the checkpoint on close failed: %s", self._path, exc)
            finally:
                with self._errors():
                    db.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def find_latest_run(path: Path | str, /) -> RunInfo | None:
    """The latest run in the outbox at ``path``, or None; never creates the file.

    A synchronous helper for ``sender status`` without a run id.
    """
    if not Path(path).is_file():
        return None
    store = SqliteStore(path)
    try:
        with store._errors():
            return store._latest_run()
    finally:
        store.close()


class _Checkpointer:
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
                        db = _connect(self._path)
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
        _checkpoint(db)
        _checkpoint(db)
        if self._write_lock.acquire(timeout=_CHECKPOINT_POLL_SECONDS):
            try:
                db.execute(f"PRAGMA busy_timeout = {_CHECKPOINT_BUSY_MS}")
                db.execute("PRAGMA wal_checkpoint(FULL)").fetchall()
            finally:
                self._write_lock.release()
                db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")

    def _wal_size(self) -> int:
        try:
            return self._wal.stat().st_size
        except FileNotFoundError:  # no WAL yet, or the last connection removed it
            return 0


def _migrate(tx: sqlite3.Connection, version: int) -> None:
    """Bring the schema from ``version`` (0: an empty file) to the current one, in ``tx``."""
    statements = []
    if version == 0:
        statements += _SCHEMA.split(";")
    if version == 1:
        statements.append("ALTER TABLE runs ADD COLUMN options TEXT NOT NULL DEFAULT '{}'")
    if version < 3:
        statements += _SCHEMA_V3.split(";")
    if version < 4:
        statements += _SCHEMA_V4.split(";")
    if version < 5:
        statements += _SCHEMA_V5.split(";")
    for statement in statements:
        added = _ADD_COLUMN.search(statement)
        if added is not None and _has_column(tx, *added.groups()):
            continue  # ALTER TABLE ... ADD COLUMN has no IF NOT EXISTS
        if statement.strip():
            tx.execute(statement)
    tx.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")


_ADD_COLUMN = re.compile(r"^\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", re.MULTILINE)


def _has_column(tx: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in tx.execute(f"PRAGMA table_info({table})"))


def _create_schema(path: Path) -> None:
    """Fill the empty file at ``path`` with a complete, current outbox schema."""
    db = _connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        _migrate(db, 0)
        db.execute("COMMIT")
    finally:
        db.close()


def _connect(path: Path) -> sqlite3.Connection:
    """Autocommit (the store issues BEGIN itself), with the busy timeout set.

    Registers ``address_key(text)``: :func:`sender.addresses.address_key`, so a query
    compares an address column with keys computed in Python, never SQLite's ``lower()``.
    """
    db = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000)
    db.create_function("address_key", 1, _sql_address_key, deterministic=True)
    return db


def _sql_address_key(value: str | None) -> str | None:
    return address_key(value) if isinstance(value, str) else None


def _checkpoint(db: sqlite3.Connection) -> None:
    # busy (another checkpoint running) comes back as a row, not an error; try again later.
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


_SELECT_MESSAGE = (
    "SELECT m.id, r.run_id, m.row, m.email, m.state, m.attempts, m.message_id, m.code,"
    " m.enhanced_status, m.reply_text, m.detail, m.due_at, m.participant_id, m.name"
    " FROM messages m JOIN runs r ON m.run = r.id"
)


def _message_record(row: tuple[Any, ...]) -> MessageRecord:
    (id_, run_id, number, email, state, attempts, message_id, code, enhanced, text, detail, due) = (
        row[:12]
    )
    state = MessageState(state)
    return MessageRecord(
        id=id_,
        run_id=run_id,
        row=number,
        email=email or "",
        state=state,
        attempts=attempts,
        message_id=message_id,
        last_reply=None if code is None else SmtpReply(code, enhanced, text or ""),
        detail=detail or "",
        next_attempt_at=due if state is MessageState.DEFERRED else None,
        participant_id=row[12],
        name=row[13],
    )


_SELECT_EVENT = (
    "SELECT uid, course_id, sequence, fingerprint, event, cancelled, changes, updated_at"
    " FROM events"
)


def _address_list(addresses: Sequence[str]) -> str:
    """Addresses as a JSON array for ``json_each``: their canonical keys, each once."""
    return json.dumps(sorted({address_key(address) for address in addresses}))


def _event_record(row: tuple[Any, ...]) -> EventRecord:
    return EventRecord(
        uid=row[0],
        course_id=row[1],
        sequence=int(row[2]),
        fingerprint=row[3],
        event=row[4],
        cancelled=bool(row[5]),
        changes=tuple(change for change in str(row[6]).split(",") if change),
        updated_at=float(row[7]),
    )


def _run_info(row: tuple[Any, ...]) -> RunInfo:
    (
        run_id,
        template,
        source,
        created_at,
        state,
        paused_reason,
        paused_since,
        ingested_through,
        ingest_complete,
        owner,
        heartbeat_at,
        options,
        event_uid,
        sequence,
        method,
    ) = row
    return RunInfo(
        run_id=str(run_id),
        template=str(template),
        source=str(source),
        created_at=float(created_at),
        state=RunState(state),
        paused_reason=paused_reason,
        paused_since=paused_since,
        ingested_through=int(ingested_through),
        ingest_complete=bool(ingest_complete),
        owner=owner,
        heartbeat_at=heartbeat_at,
        options=json.loads(options) if options else {},
        event_uid=event_uid,
        sequence=sequence,
        method=method,
    )


def _queued_values(key: int, template: str, new: NewRow, person: Participant) -> tuple[object, ...]:
    """The parameters of ``_INSERT_QUEUED`` for one row."""
    return (
        key,
        new.row,
        template,
        person.participant_id,
        person.email,
        person.name,
        person.course_id,
        person.locale,
        _dump_vars(person),
        person.domain,
        new.priority,
        address_key(person.email),
    )


def _dump_vars(person: Participant) -> str | None:
    if not person.vars:
        return None
    return json.dumps(dict(person.vars), separators=(",", ":"), ensure_ascii=False)


def _text(value: str) -> str:
    """Raw input may hold lone surrogates (bytes a CSV reader escaped); store them as U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")  # the bytes a CSV reader escaped
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace")
    return value


def _unencodable(rows: Sequence[NewRow]) -> InputError:
    """Name the first participant field that cannot be stored as UTF-8."""
    for new in rows:
        person = new.participant
        if person is None:
            continue
        fields = {
            "email": person.email,
            "name": person.name,
            "participant_id": person.participant_id,
            "course_id": person.course_id,
            "locale": person.locale,
            **person.vars,
        }
        for name, value in fields.items():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return InputError("holds characters that are not UTF-8", field=name, row=new.row)
    return InputError("a row holds characters that are not UTF-8")


if TYPE_CHECKING:

    def _conforms(path: Path) -> Store:
        return SqliteStore(path)
