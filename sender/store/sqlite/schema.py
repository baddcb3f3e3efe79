"""The outbox file's schema, its migrations from older versions, how to connect, and how
a new SQLite file is made (whole and already WAL; the limits file is made the same way).

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
    workers   owner (a claim's claimed_by), host, pid, started_at, heartbeat_at,
              reclaimed_at (set when its lease expired and its claims were taken back)
    login_codes  a single send's login code: address key, digest (its keyed hash),
              participant_id, course_id, purpose, next, issued_at, expires_at (a run's
              message keeps its code in messages.login_digest/_purpose/_issued/_expires)
    code_tries   address key, tries, last_at

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

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

from sender.addresses import address_key
from sender.home import create_once

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CACHE_KIB",
    "SCHEMA_VERSION",
    "checkpoint",
    "connect",
    "create_wal_file",
    "migrate",
]

SCHEMA_VERSION = 12  # 2: options; 3: events, RSVP; 4: bounces, suppressions; 5: _SCHEMA_V5;
# 6: worker leases (_SCHEMA_V6_WORKERS); 7: bounce reasons (_SCHEMA_V7_REASONS);
# 8: each lease's own ttl (_SCHEMA_V8_LEASE_TTL); 9: webhook events (_SCHEMA_V9_HOOKS);
# 10: one-time redemptions (_SCHEMA_V10_REDEMPTIONS); 11: login codes (_SCHEMA_V11_CODES);
# 12: streams and unsubscribes (_SCHEMA_V12_UNSUBSCRIBES)
BUSY_TIMEOUT_MS = 10_000
CACHE_KIB = 65_536  # the participant-key index of a million-row run fits

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

# Version 6, one self-contained step: worker leases. Each process that claims registers in
# ``workers`` and renews heartbeat_at on its own timer; reclaim_expired takes back the
# claims of a worker whose heartbeat is older than the ttl and stamps reclaimed_at, after
# which its heartbeat is refused. Idempotent: it runs on upgrade from 5 and on a new file.
_SCHEMA_V6_WORKERS = """
CREATE TABLE IF NOT EXISTS workers (
    owner         TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL,
    reclaimed_at  REAL
);
-- A worker's claims, for taking them back and for checking who may record an outcome.
CREATE INDEX IF NOT EXISTS messages_claims ON messages (claimed_by) WHERE state = 'sending';
"""

# Version 7, one self-contained step: bounce reasons become sender.vocabulary.Reason's words
# (the older ones translated; what had no reason is "undefined"), and the sender-side
# refusals of the last hour, which pause a provider, are read through (reason, at).
# Idempotent: it runs on upgrade from 6 and on a new file. PostgreSQL's version 5 is the same.
_SCHEMA_V7_REASONS = """
UPDATE bounces SET reason = CASE reason
    WHEN 'unknown_user' THEN 'user_unknown'
    WHEN 'no_domain' THEN 'host_unknown'
    WHEN 'autoreply' THEN 'auto_reply'
    WHEN 'other' THEN 'undefined'
    WHEN '' THEN 'undefined'
    ELSE reason END
    WHERE reason IN ('unknown_user', 'no_domain', 'autoreply', 'other', '');
CREATE INDEX IF NOT EXISTS bounces_reason ON bounces (reason, at);
"""

# Version 8: each worker lease keeps its own ttl, so a worker with a shorter one never
# takes back the claims of a live worker with a longer one. Leases from before: 30 s.
_SCHEMA_V8_LEASE_TTL = """
ALTER TABLE workers ADD COLUMN ttl REAL NOT NULL DEFAULT 30
"""

# Version 9: the webhook outbox. hook_events is written in the transaction of the change
# it reports; hook_deliveries is each endpoint's progress through it (the deliverer's),
# hook_endpoints an endpoint's cursor and whether a 410 disabled it. PostgreSQL's 7.
_SCHEMA_V9_HOOKS = """
CREATE TABLE IF NOT EXISTS hook_events (
    id              INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    type            TEXT NOT NULL,
    at              REAL NOT NULL,
    dedupe          TEXT UNIQUE,
    run_id          TEXT,
    participant_id  TEXT,
    course_id       TEXT,
    message_id      TEXT,
    email           TEXT,
    detail          TEXT
);
CREATE TABLE IF NOT EXISTS hook_endpoints (
    endpoint         TEXT PRIMARY KEY,
    cursor           INTEGER NOT NULL DEFAULT 0,
    disabled_at      REAL,
    disabled_reason  TEXT
);
CREATE TABLE IF NOT EXISTS hook_deliveries (
    endpoint     TEXT NOT NULL,
    event        INTEGER NOT NULL REFERENCES hook_events (id),
    attempts     INTEGER NOT NULL DEFAULT 0,
    due_at       REAL,
    state        TEXT NOT NULL DEFAULT 'pending',
    last_status  INTEGER,
    last_error   TEXT,
    PRIMARY KEY (endpoint, event)
);
CREATE INDEX IF NOT EXISTS hook_deliveries_due ON hook_deliveries (endpoint, due_at)
    WHERE state = 'pending'
"""

# Version 10: one-time redemptions (login links, landing-page assertions): a digest of
# each token, never the token, kept until the token expires.
_SCHEMA_V10_REDEMPTIONS = """
CREATE TABLE IF NOT EXISTS redemptions (
    digest       TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    expires_at   REAL NOT NULL,
    redeemed_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS redemptions_expiry ON redemptions (expires_at)
"""

# Version 11: login codes, kept only as keyed hashes. A run's sent message keeps its code
# on its own row (login_*: written with the outcome, found through messages_email_key);
# login_codes keeps a single send's, with what it opens; code_tries counts an address's
# tries (sender.store.sql.CODE_TRY). Self-contained and idempotent: it runs on upgrade
# from 10 and on a new file. PostgreSQL's 9.
_SCHEMA_V11_CODES = """
ALTER TABLE messages ADD COLUMN login_digest TEXT;
ALTER TABLE messages ADD COLUMN login_purpose TEXT;
ALTER TABLE messages ADD COLUMN login_issued REAL;
ALTER TABLE messages ADD COLUMN login_expires REAL;
CREATE TABLE IF NOT EXISTS login_codes (
    address         TEXT NOT NULL,
    digest          TEXT NOT NULL,
    participant_id  TEXT NOT NULL,
    course_id       TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    next            TEXT,
    issued_at       REAL NOT NULL,
    expires_at      REAL NOT NULL,
    PRIMARY KEY (address, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS login_codes_expiry ON login_codes (expires_at);
CREATE TABLE IF NOT EXISTS code_tries (
    address  TEXT PRIMARY KEY,
    tries    INTEGER NOT NULL,
    last_at  REAL NOT NULL
)
"""

# Version 12: each run's stream (its template's), and who left which stream. A claim skips
# an address that left its run's stream. PostgreSQL's 10. Self-contained: no other
# version's tables are touched.
_SCHEMA_V12_UNSUBSCRIBES = """
ALTER TABLE runs ADD COLUMN stream TEXT NOT NULL DEFAULT 'transactional';
CREATE TABLE IF NOT EXISTS unsubscribes (
    address         TEXT NOT NULL,
    stream          TEXT NOT NULL,
    at              REAL NOT NULL,
    how             TEXT NOT NULL,
    participant_id  TEXT,
    PRIMARY KEY (address, stream)
)
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


def migrate(tx: sqlite3.Connection, version: int) -> None:
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
    if version < 6:
        statements += _SCHEMA_V6_WORKERS.split(";")
    if version < 7:
        statements += _SCHEMA_V7_REASONS.split(";")
    if version < 8:
        statements += _SCHEMA_V8_LEASE_TTL.split(";")
    if version < 9:
        statements += _SCHEMA_V9_HOOKS.split(";")
    if version < 10:
        statements += _SCHEMA_V10_REDEMPTIONS.split(";")
    if version < 11:
        statements += _SCHEMA_V11_CODES.split(";")
    if version < 12:
        statements += _SCHEMA_V12_UNSUBSCRIBES.split(";")
    for statement in statements:
        added = _ADD_COLUMN.search(statement)
        if added is not None and _has_column(tx, *added.groups()):
            continue  # ALTER TABLE ... ADD COLUMN has no IF NOT EXISTS
        if statement.strip():
            tx.execute(statement)
    tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


_ADD_COLUMN = re.compile(r"^\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", re.MULTILINE)


def _has_column(tx: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in tx.execute(f"PRAGMA table_info({table})"))


def create_wal_file(path: Path, fill: Callable[[sqlite3.Connection], object], /) -> None:
    """Make the SQLite file at ``path`` unless it exists: ``fill`` writes its tables.

    The file is built under a temporary name and linked into place
    (:func:`sender.home.create_once`), already in WAL mode. That matters when processes
    open a new file at once: switching a file to WAL takes an exclusive lock, and two
    connections that both hold a shared lock and ask for it deadlock, so SQLite answers
    one "database is locked" at once, without waiting out the busy timeout. A file that
    is WAL from birth has nothing to switch.
    """
    create_once(path, lambda temporary: _fill_wal(temporary, fill))


def _fill_wal(path: Path, fill: Callable[[sqlite3.Connection], object]) -> None:
    db = connect(path)
    try:
        db.execute("PRAGMA journal_mode = WAL")  # kept in the file's header
        db.execute("BEGIN IMMEDIATE")
        fill(db)
        db.execute("COMMIT")
    finally:
        db.close()


def connect(path: Path) -> sqlite3.Connection:
    """Autocommit (the store issues BEGIN itself), with the busy timeout set.

    Registers ``address_key(text)``: :func:`sender.addresses.address_key`, so a query
    compares an address column with keys computed in Python, never SQLite's ``lower()``.
    """
    db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    db.create_function("address_key", 1, _sql_address_key, deterministic=True)
    return db


def _sql_address_key(value: str | None) -> str | None:
    return address_key(value) if isinstance(value, str) else None


def checkpoint(db: sqlite3.Connection) -> None:
    # busy (another checkpoint running) comes back as a row, not an error; try again later.
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
