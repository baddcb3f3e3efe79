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

The pieces: ``schema`` (tables, migrations, connecting), ``checkpoint`` (the WAL
checkpointer thread), ``file`` (opening, transactions, errors, closing), and one module
per role of :class:`~sender.store.base.Store`: ``runs``, ``outbox``, ``progress``,
``events``, ``feedback``.
"""

from sender.store.sqlite.store import SqliteStore, find_latest_run

__all__ = ["SqliteStore", "find_latest_run"]
