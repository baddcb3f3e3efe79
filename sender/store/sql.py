"""The SQL both backends run word for word, written once with ``?`` parameter marks.

SQLite runs these texts as they are; the PostgreSQL backend turns each ``?`` into
psycopg's ``%s`` where a statement enters psycopg, so neither dialect spells them again.
Column lists come from :mod:`sender.store.records`, in the order its ``*_from_columns``
functions read them. What really differs stays with its backend: claims, the ingest's
bulk inserts, membership tests (``json_each`` or ``ANY(array)``), and the
``state <> 'queued'`` that lets SQLite use its partial state index.

Every name put into a statement here is a constant of this module or a record field,
never input (hence the ``S608`` waivers).
"""

from __future__ import annotations

from collections.abc import Sequence

from sender.store.records import (
    BOUNCE_COLUMNS,
    CODE_COLUMNS,
    EVENT_COLUMNS,
    HOOK_COLUMNS,
    HOOK_DATA,
    MESSAGE_COLUMNS,
    PARTICIPANT_COLUMNS,
    RSVP_COLUMNS,
    RUN_COLUMNS,
    SUPPRESSION_COLUMNS,
    UNSUBSCRIBE_COLUMNS,
    WORKER_COLUMNS,
)
from sender.store.rules import PROBLEM_STATES

__all__ = [
    "ACQUIRE_RUN",
    "ACTIVE_RUNS",
    "ADDRESSES_OF",
    "ADDRESS_EVENT",
    "ADD_EVENT",
    "ADVANCE",
    "BOUNCE_EVENT",
    "CLAIM_DELIVERY",
    "CODE_ACCEPTED",
    "CODE_TRY",
    "COMPLAINTS_BY_STREAM",
    "CORRECT_ADDRESS",
    "CURRENT_MESSAGE",
    "DELIVERED",
    "DISABLE_ENDPOINT",
    "DUE_DELIVERIES",
    "ENABLE_ENDPOINT",
    "ENSURE_ENDPOINT",
    "EVENT_BY_ID",
    "EVENT_BY_KEY",
    "EXPIRED_CLAIMS",
    "FAN_OUT",
    "FORGET_AFTER",
    "FORGET_WORKERS",
    "HARD_BOUNCES",
    "HEARTBEAT",
    "HOOK_ENDPOINTS",
    "HOOK_EVENTS",
    "HOOK_INSERT",
    "INGESTED_ROWS",
    "INSERT_QUEUED",
    "INSERT_RUN",
    "KEEP_CODE",
    "LAST_EVENT",
    "LOGIN_CODES",
    "LOG_SUPPRESSION",
    "MARK_REPLACED",
    "MESSAGE_EVENT",
    "MESSAGE_EVENT_STATES",
    "NEXT_ATTEMPT",
    "OWNERS",
    "OWN_CLAIMS",
    "PARTICIPANT_COUNT",
    "PENDING_DOMAINS",
    "PENDING_TO",
    "PRUNE_CODES",
    "PRUNE_CODE_TRIES",
    "PRUNE_DELIVERIES",
    "PRUNE_EVENTS",
    "PRUNE_REDEMPTIONS",
    "QUEUED_COLUMNS",
    "RECENT_RUNS",
    "RECLAIMED",
    "RECLAIM_WORKER",
    "RECLAIM_WORKERS",
    "REDEEM",
    "REDEEMED",
    "REGISTER_WORKER",
    "RELEASE_RUN",
    "RELEASE_WORKER",
    "REPLAY",
    "REQUEUE_CLAIMS",
    "RESET_RUN",
    "RETRY_DELIVERY",
    "RSVP_EVENT",
    "RUN_EVENT",
    "SAVE_EVENT",
    "SELECT_ATTEMPTS",
    "SELECT_BOUNCES",
    "SELECT_EVENT",
    "SELECT_INVITED",
    "SELECT_MESSAGE",
    "SELECT_PROBLEMS",
    "SELECT_RSVP",
    "SELECT_RUN",
    "SELECT_SKIPPED",
    "SELECT_SUPPRESSIONS",
    "SENT_BY_STREAM",
    "SENT_PER_DAY",
    "SENT_SINCE",
    "SET_RUN_STATE",
    "STORED_SKIPS",
    "SUPPRESS",
    "SUPPRESSED",
    "UNCLAIM",
    "UNSUBSCRIBE",
    "UNSUBSCRIBED",
    "UNSUBSCRIBES",
    "UNSUBSCRIBE_EVENT",
    "UNSUPPRESS",
    "WORKERS",
    "WORKER_HEARTBEAT",
    "insert_once",
]


def _columns(columns: Sequence[str], /, prefix: str = "") -> str:
    return ", ".join(prefix + column for column in columns)


# --- runs ----------------------------------------------------------------------------------

SELECT_RUN = f"SELECT {_columns(RUN_COLUMNS)} FROM runs"  # noqa: S608
RECENT_RUNS = SELECT_RUN + " ORDER BY created_at DESC, id DESC LIMIT ?"
ACTIVE_RUNS = SELECT_RUN + " WHERE state = 'active' ORDER BY created_at, id"
# Stamp one worker as taken back (now, owner): its process is known to be gone.
RECLAIM_WORKER = "UPDATE workers SET reclaimed_at = COALESCE(reclaimed_at, ?) WHERE owner = ?"
INSERT_RUN = (
    "INSERT INTO runs (run_id, template, source, created_at, options, event_uid, sequence,"
    " method, stream) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING"
)
ACQUIRE_RUN = (
    "UPDATE runs SET owner = ?, heartbeat_at = ?"
    " WHERE id = ? AND (owner IS NULL OR owner = ? OR heartbeat_at IS NULL OR heartbeat_at < ?)"
)
HEARTBEAT = "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND owner = ?"
RELEASE_RUN = "UPDATE runs SET owner = NULL, heartbeat_at = NULL WHERE id = ? AND owner = ?"
# Pausing keeps the first paused_since; the CAST types a NULL reason for PostgreSQL.
SET_RUN_STATE = (
    "UPDATE runs SET state = ?, paused_reason = CAST(? AS TEXT),"
    " paused_since = CASE WHEN ? THEN CASE WHEN state = 'paused'"
    " THEN COALESCE(paused_since, ?) ELSE ? END END"
    " WHERE id = ?"
)
RESET_RUN = (
    "UPDATE runs SET state = 'active', paused_reason = NULL, paused_since = NULL WHERE id = ?"
)

# --- workers and their leases ----------------------------------------------------------------

REGISTER_WORKER = (
    f"INSERT INTO workers ({_columns(WORKER_COLUMNS)}) VALUES (?, ?, ?, ?, ?, NULL, ?)"  # noqa: S608
    " ON CONFLICT (owner) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
    " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,"
    " reclaimed_at = NULL, ttl = excluded.ttl"
)
# A lease taken back stays taken: its owner must stop (and register again to go on).
WORKER_HEARTBEAT = "UPDATE workers SET heartbeat_at = ? WHERE owner = ? AND reclaimed_at IS NULL"
WORKERS = f"SELECT {_columns(WORKER_COLUMNS)} FROM workers"  # noqa: S608
# Stamp the expired workers (no heartbeat within their own ttl of the bound time, now):
# their heartbeat is refused from then on.
RECLAIM_WORKERS = (
    "UPDATE workers SET reclaimed_at = COALESCE(reclaimed_at, ?) WHERE heartbeat_at + ttl < ?"
)
RELEASE_WORKER = "DELETE FROM workers WHERE owner = ?"
# Leases taken back before the bound time: long enough ago that their owner has noticed
# (its heartbeat was refused) or is gone for good.
FORGET_WORKERS = "DELETE FROM workers WHERE reclaimed_at < ?"
FORGET_AFTER = 86400.0  # seconds a lease taken back is kept, refusing its owner's claims
# requeue_stale's rules for the sending claims {claims} picks (a bound test of claimed_by):
# one replaced by a corrected address since is failed (the bound detail), never sent to
# its old address; the others go back to the front of the queue, the attempt counted.
REQUEUE_CLAIMS = (
    "UPDATE messages SET state = 'failed', due_at = NULL, detail = ?"
    " WHERE state = 'sending' AND replaced_by IS NOT NULL AND {claims}",
    "UPDATE messages SET state = 'queued', due_at = 0"
    " WHERE state = 'sending' AND replaced_by IS NULL AND {claims}",
)
# A claim never started goes back as it was before it: its attempt not counted.
UNCLAIM = (
    "UPDATE messages SET state = 'queued', due_at = 0, attempts = attempts - 1,"
    " first_attempt_at = CASE WHEN attempts = 1 THEN NULL ELSE first_attempt_at END"
    " WHERE state = 'sending' AND replaced_by IS NULL AND claimed_by = ?"
)
# The claims no live worker holds (bound: now): no heartbeat within its own ttl, its lease was
# taken back, or it has no lease at all (a claim from before leases, or a released owner's).
EXPIRED_CLAIMS = (
    "(claimed_by IS NULL OR claimed_by NOT IN"
    " (SELECT owner FROM workers WHERE heartbeat_at + ttl >= ? AND reclaimed_at IS NULL))"
)
# The claims of one worker.
OWN_CLAIMS = "claimed_by = ?"
# A worker whose lease was taken back claims nothing more until it registers again: what
# it claimed would be taken back in turn and sent twice. (Bound: the claiming owner.)
RECLAIMED = "NOT EXISTS (SELECT 1 FROM workers WHERE owner = ? AND reclaimed_at IS NOT NULL)"

# --- ingest --------------------------------------------------------------------------------

# What ingest writes for a queued message, in the order common.queued_values gives them.
QUEUED_COLUMNS = ("row", "template", *PARTICIPANT_COLUMNS, "domain", "priority", "email_key")
# One queued message (SQLite binds a batch to it; PostgreSQL inserts a batch from arrays).
INSERT_QUEUED = (
    f"INSERT INTO messages (run, state, due_at, {_columns(QUEUED_COLUMNS)})"  # noqa: S608
    f" VALUES (?, 'queued', 0, {', '.join('?' * len(QUEUED_COLUMNS))})"
)
# {member} is the backend's test that participant_id is one of a bound list.
INGESTED_ROWS = (
    "SELECT participant_id, row FROM messages"
    " WHERE run = ? AND template = ? AND replaced_by IS NULL AND {member}"
)
STORED_SKIPS = (
    "SELECT row FROM messages WHERE run = ? AND participant_id IS NULL AND row BETWEEN ? AND ?"
)
# {lock} is PostgreSQL's " FOR UPDATE"; SQLite's write transaction locks the file already.
CURRENT_MESSAGE = (
    "SELECT id, state, email FROM messages WHERE run = ? AND participant_id = ?"
    " AND template = ? AND replaced_by IS NULL{lock}"
)
# A corrected address for a message not yet sent: QUEUED_COLUMNS but the unchanged
# template and participant_id, and a fresh start.
CORRECT_ADDRESS = (
    "UPDATE messages SET row = ?, email = ?, name = ?, course_id = ?, locale = ?, vars = ?,"
    " domain = ?, priority = ?, email_key = ?, state = 'queued', due_at = 0, attempts = 0,"
    " first_attempt_at = NULL, last_attempt_at = NULL, message_id = NULL, code = NULL,"
    " enhanced_status = NULL, reply_text = NULL, detail = NULL WHERE id = ?"
)
MARK_REPLACED = "UPDATE messages SET replaced_by = ? WHERE id = ?"

# --- the outbox and progress ---------------------------------------------------------------

# MESSAGE_COLUMNS: the message's own columns, and its run's run_id.
SELECT_MESSAGE = (
    "SELECT "  # noqa: S608
    + ", ".join("r.run_id" if column == "run_id" else f"m.{column}" for column in MESSAGE_COLUMNS)
    + " FROM messages m JOIN runs r ON m.run = r.id"
)
# {member} is the backend's test that participant_id is one of a bound list.
ADDRESSES_OF = (
    "SELECT participant_id, email FROM messages"
    " WHERE run = ? AND template = ? AND replaced_by IS NULL AND {member}"
)
PARTICIPANT_COUNT = (
    "SELECT COUNT(*) FROM messages WHERE run = ? AND participant_id IS NOT NULL"
    " AND template = ? AND replaced_by IS NULL"
)
PENDING_DOMAINS = (
    "SELECT domain, COUNT(*) FROM messages"
    " WHERE run = ? AND due_at IS NOT NULL AND due_at <= ? GROUP BY domain"
)
# {queued_hint} is SQLite's "AND state <> 'queued'" (its state index leaves queued rows
# out, and the planner must see that the query does too); PostgreSQL needs nothing.
SELECT_SKIPPED = (
    "SELECT row, email, COALESCE(skip_reason, detail, 'skipped') FROM messages"
    " WHERE run = ? AND state = 'skipped'{queued_hint} ORDER BY row LIMIT ?"
)
_PROBLEM_STATES = ", ".join(f"'{state.value}'" for state in PROBLEM_STATES)
SELECT_PROBLEMS = (
    "SELECT row, email, state, code, enhanced_status, reply_text, detail FROM messages"  # noqa: S608
    f" WHERE run = ?{{queued_hint}} AND state IN ({_PROBLEM_STATES}) AND replaced_by IS NULL"
    " ORDER BY row LIMIT ?"
)
NEXT_ATTEMPT = "SELECT MIN(due_at) FROM messages WHERE run = ? AND state = 'deferred'{queued_hint}"
# {order} is the attempt log's insertion order: SQLite's rowid, PostgreSQL's id.
SELECT_ATTEMPTS = (
    "SELECT number, at, state, code, enhanced_status, reply_text, detail"
    " FROM attempts WHERE message = ? ORDER BY number, {order}"
)

# --- events and RSVPs ----------------------------------------------------------------------

SELECT_EVENT = f"SELECT {_columns(EVENT_COLUMNS)} FROM events"  # noqa: S608
SAVE_EVENT = (
    f"INSERT INTO events ({_columns(EVENT_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
    " ON CONFLICT (uid) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in EVENT_COLUMNS[1:])
)
SELECT_RSVP = f"SELECT {_columns(RSVP_COLUMNS)} FROM rsvps"  # noqa: S608
SELECT_INVITED = (
    f"SELECT {_columns(PARTICIPANT_COLUMNS, 'm.')},"  # noqa: S608
    " r.sequence, r.method, m.last_attempt_at"
    " FROM messages m JOIN runs r ON m.run = r.id"
    " WHERE r.event_uid = ? AND m.state = 'sent'{queued_hint}"
    " ORDER BY m.participant_id, r.sequence, m.last_attempt_at"
)

# --- bounces, the suppression list, the budget ---------------------------------------------

SELECT_BOUNCES = f"SELECT {_columns(BOUNCE_COLUMNS)} FROM bounces"  # noqa: S608
SELECT_SUPPRESSIONS = f"SELECT {_columns(SUPPRESSION_COLUMNS)} FROM suppressions"  # noqa: S608
# {member} is the backend's test that email_key is one of a bound list.
OWNERS = (
    f"SELECT email_key, {_columns(PARTICIPANT_COLUMNS)}"  # noqa: S608
    " FROM messages WHERE participant_id IS NOT NULL AND {member} ORDER BY id"
)
# {member} is the backend's test that address is one of a bound list.
SUPPRESSED = SELECT_SUPPRESSIONS + " WHERE {member}"
HARD_BOUNCES = (
    "SELECT address, message, fingerprint FROM bounces"
    " WHERE kind = 'hard' AND at >= ? AND forged = 0"
)
SENT_SINCE = "SELECT COUNT(*) FROM attempts WHERE state = 'sent' AND at >= ?"
# The complaint-rate guard: per stream, complaints about outbox messages and deliveries.
COMPLAINTS_BY_STREAM = (
    "SELECT r.stream, COUNT(DISTINCT b.message) FROM bounces b"
    " JOIN messages m ON m.id = b.message JOIN runs r ON r.id = m.run"
    " WHERE b.kind = 'complaint' AND b.at >= ? AND b.forged = 0 GROUP BY r.stream"
)
SENT_BY_STREAM = (
    "SELECT r.stream, COUNT(*) FROM attempts a"
    " JOIN messages m ON m.id = a.message JOIN runs r ON r.id = m.run"
    " WHERE a.state = 'sent' AND a.at >= ? GROUP BY r.stream"
)
# {day}: the backend's whole days since 1970 of a.at; {member}: m.domain in a bound list.
SENT_PER_DAY = (
    "SELECT {day}, m.domain, COUNT(*) FROM attempts a JOIN messages m ON m.id = a.message"
    " WHERE a.state = 'sent' AND a.at >= ? AND {member} GROUP BY 1, 2 ORDER BY 1, 2"
)
PENDING_TO = (
    "SELECT m.domain, COUNT(*) FROM messages m JOIN runs r ON r.id = m.run"
    " WHERE m.state IN ('queued', 'deferred', 'sending') AND m.replaced_by IS NULL"
    " AND r.state <> 'done' AND {member} GROUP BY m.domain"
)
SUPPRESS = (
    "INSERT INTO suppressions (address, kind, reason, since) VALUES (?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
UNSUPPRESS = "DELETE FROM suppressions WHERE address = ? RETURNING kind"
LOG_SUPPRESSION = (
    "INSERT INTO suppression_log (address, action, kind, reason, at) VALUES (?, ?, ?, ?, ?)"
)


# --- unsubscribes ------------------------------------------------------------------
UNSUBSCRIBES = f"SELECT {_columns(UNSUBSCRIBE_COLUMNS)} FROM unsubscribes"  # noqa: S608
# {member} is the backend's test that address is one of a bound list.
UNSUBSCRIBED = UNSUBSCRIBES + " WHERE stream = ? AND {member}"
UNSUBSCRIBE = (
    "INSERT INTO unsubscribes (address, stream, at, how, participant_id)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


def insert_once(table: str, columns: Sequence[str], /) -> str:
    """INSERT a record's values into ``columns``, unless a unique key has it already."""
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({_columns(columns)}) VALUES ({marks}) ON CONFLICT DO NOTHING"  # noqa: S608


# --- Webhook events (the outbox the deliverer reads) ------------------------------------
# Written in the transaction of the change they report. ``dedupe`` (unique; NULL for none)
# keeps an event once when the change can be written twice (a bounce ingested again).
HOOK_INSERT = f"INSERT INTO hook_events (event_id, type, at, dedupe, {_columns(HOOK_DATA)})"
# An attempt's outcome: message.sent, message.deferred or message.failed, by its new state.
MESSAGE_EVENT_STATES = "('sent', 'deferred', 'failed')"  # the states whose outcome has one
MESSAGE_EVENT = (
    HOOK_INSERT  # noqa: S608
    + " SELECT ?, 'message.' || m.state, m.last_attempt_at, NULL, r.run_id,"  # noqa: S608
    " m.participant_id, m.course_id, m.message_id, m.email, NULL"
    " FROM messages m JOIN runs r ON r.id = m.run"
    f" WHERE m.id = ? AND m.state IN {MESSAGE_EVENT_STATES}"
)
# A bounce or complaint (type given), about the message a return path named, if any.
BOUNCE_EVENT = (
    HOOK_INSERT  # noqa: S608
    + " SELECT ?, ?, ?, ?, r.run_id, COALESCE(m.participant_id, ?), m.course_id,"
    " m.message_id, ?, ? FROM (SELECT 1 AS one) AS one"
    " LEFT JOIN messages m ON m.id = ? LEFT JOIN runs r ON r.id = m.run"
    " WHERE 1 = 1 ON CONFLICT DO NOTHING"
)
# address.unsubscribed, only for the unsubscribe just kept (its time is this one's).
UNSUBSCRIBE_EVENT = (
    HOOK_INSERT  # noqa: S608
    + " SELECT ?, 'address.unsubscribed', at, ?, NULL, participant_id, NULL, NULL, address, ?"
    " FROM unsubscribes WHERE address = ? AND stream = ? AND at = ? ON CONFLICT DO NOTHING"
)
ADDRESS_EVENT = HOOK_INSERT + " VALUES (?, ?, ?, NULL, NULL, NULL, NULL, NULL, ?, ?)"
# run.paused or run.finished, only when the run was not in that state already.
RUN_EVENT = (
    HOOK_INSERT  # noqa: S608
    + " SELECT ?, ?, ?, NULL, run_id, NULL, NULL, NULL, NULL, ?"
    " FROM runs WHERE id = ? AND state <> ?"
)
# rsvp.answered: the dedupe key is the answer's own (rsvps_once), so it is kept once too.
RSVP_EVENT = HOOK_INSERT + " VALUES (?, ?, ?, ?, NULL, ?, NULL, NULL, ?, ?) ON CONFLICT DO NOTHING"
ADD_EVENT = HOOK_INSERT + " VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)"
EVENT_BY_ID = f"SELECT {_columns(HOOK_COLUMNS)} FROM hook_events WHERE event_id = ?"  # noqa: S608
HOOK_EVENTS = f"SELECT {_columns(HOOK_COLUMNS)} FROM hook_events WHERE id > ? ORDER BY id LIMIT ?"  # noqa: S608

# --- Webhook deliveries: each endpoint's progress through hook_events -----------------
ENSURE_ENDPOINT = "INSERT INTO hook_endpoints (endpoint) VALUES (?) ON CONFLICT DO NOTHING"
LAST_EVENT = "SELECT COALESCE(MAX(id), 0) FROM hook_events"
# The endpoint's new events of the types it wants (``{member}``: the backend's test of
# e.type against a list), as pending deliveries due when they happened.
FAN_OUT = (
    "INSERT INTO hook_deliveries (endpoint, event, due_at)"
    " SELECT p.endpoint, e.id, e.at FROM hook_events e JOIN hook_endpoints p"
    " ON p.endpoint = ? AND p.disabled_at IS NULL AND e.id > p.cursor"
    " WHERE e.id <= ? AND e.at >= ? AND {member} ON CONFLICT DO NOTHING"
)
ADVANCE = (
    "UPDATE hook_endpoints SET cursor = ? WHERE endpoint = ? AND cursor < ? AND disabled_at IS NULL"
)
DUE_DELIVERIES = (
    "SELECT d.event, d.attempts FROM hook_deliveries d JOIN hook_endpoints p"
    " ON p.endpoint = d.endpoint AND p.disabled_at IS NULL"
    " WHERE d.endpoint = ? AND d.state = 'pending' AND d.due_at <= ?"
    " ORDER BY d.due_at, d.event LIMIT ?"
)
# A claim: the delivery held (due later) unless another process took it first.
CLAIM_DELIVERY = (
    "UPDATE hook_deliveries SET due_at = ?"
    " WHERE endpoint = ? AND event = ? AND state = 'pending' AND due_at <= ?"
)
EVENT_BY_KEY = f"SELECT {_columns(HOOK_COLUMNS)} FROM hook_events WHERE id = ?"  # noqa: S608
DELIVERED = (
    "UPDATE hook_deliveries SET state = 'delivered', attempts = attempts + 1, due_at = NULL,"
    " last_status = ?, last_error = NULL WHERE endpoint = ? AND event = ?"
)
RETRY_DELIVERY = (
    "UPDATE hook_deliveries SET attempts = attempts + 1, due_at = ?, state = ?,"
    " last_status = ?, last_error = ? WHERE endpoint = ? AND event = ?"
)
DISABLE_ENDPOINT = (
    "UPDATE hook_endpoints SET disabled_at = ?, disabled_reason = ? WHERE endpoint = ?"
)
ENABLE_ENDPOINT = (
    "UPDATE hook_endpoints SET disabled_at = NULL, disabled_reason = NULL WHERE endpoint = ?"
)
REPLAY = (
    "UPDATE hook_deliveries SET state = 'pending', due_at = ?, attempts = 0"
    " WHERE endpoint = ? AND event IN (SELECT id FROM hook_events WHERE at >= ?)"
)
HOOK_ENDPOINTS = (
    "SELECT p.endpoint, p.disabled_at, p.disabled_reason,"
    " SUM(CASE WHEN d.state = 'pending' THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN d.state = 'delivered' THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN d.state = 'failed' THEN 1 ELSE 0 END)"
    " FROM hook_endpoints p LEFT JOIN hook_deliveries d ON d.endpoint = p.endpoint"
    " GROUP BY p.endpoint, p.disabled_at, p.disabled_reason ORDER BY p.endpoint"
)
# Events older than the retention go, with their finished deliveries; pending ones stay.
PRUNE_DELIVERIES = (
    "DELETE FROM hook_deliveries WHERE state <> 'pending'"
    " AND event IN (SELECT id FROM hook_events WHERE at < ?)"
)
PRUNE_EVENTS = (
    "DELETE FROM hook_events WHERE at < ?"
    " AND NOT EXISTS (SELECT 1 FROM hook_deliveries d WHERE d.event = hook_events.id)"
)

# One-time redemptions: only a digest of the token, until it expires. A digest already
# present is not inserted again, so of two racing redemptions exactly one inserts a row.
PRUNE_REDEMPTIONS = "DELETE FROM redemptions WHERE expires_at < ?"
REDEEM = (
    "INSERT INTO redemptions (digest, kind, expires_at, redeemed_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (digest) DO NOTHING"
)
REDEEMED = "SELECT 1 FROM redemptions WHERE digest = ? AND expires_at >= ?"

# --- login codes -----------------------------------------------------------------------------

KEEP_CODE = insert_once("login_codes", CODE_COLUMNS)
# An address's unexpired codes (address, now, address, now): single sends' from
# login_codes, and runs' from their sent messages' rows (through messages_email_key).
LOGIN_CODES = (
    f"SELECT {_columns(CODE_COLUMNS)} FROM login_codes"  # noqa: S608
    " WHERE address = ? AND expires_at >= ?"
    " UNION ALL"
    " SELECT email_key, login_digest, participant_id, course_id, login_purpose, NULL,"
    " login_issued, login_expires FROM messages"
    " WHERE email_key = ? AND login_expires >= ?"
)
# One try, counted atomically (address, now, window start, window start, limit); it returns
# the tries so far, this one included, and when the last counted one was. Tries start
# over once the last counted one is a window old; from the limit on, a try still counts
# but leaves last_at alone, so the lock ends a window after the try that reached it.
CODE_TRY = (
    "INSERT INTO code_tries (address, tries, last_at) VALUES (?, 1, ?)"
    " ON CONFLICT (address) DO UPDATE SET"
    " tries = CASE WHEN code_tries.last_at <= ? THEN 1 ELSE code_tries.tries + 1 END,"
    " last_at = CASE WHEN code_tries.last_at <= ? OR code_tries.tries < ?"
    " THEN excluded.last_at ELSE code_tries.last_at END"
    " RETURNING tries, last_at"
)
CODE_ACCEPTED = "DELETE FROM code_tries WHERE address = ?"
PRUNE_CODES = "DELETE FROM login_codes WHERE expires_at < ?"
PRUNE_CODE_TRIES = "DELETE FROM code_tries WHERE last_at < ?"
