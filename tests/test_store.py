"""The SQLite outbox: idempotent ingest, atomic claims across processes, durable outcomes."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from sender.errors import ConfigurationError
from sender.store import (
    MessageState,
    SqliteStore,
    find_latest_run,
)
from sender.store.sqlite.schema import SCHEMA_VERSION
from tests.test_store_contract import RUN, T0, rows


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the outbox file lives, under a directory that does not exist yet."""
    return tmp_path / "state" / "outbox.sqlite3"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    """An open store with the run ``RUN`` created."""
    async with SqliteStore(path) as opened:
        await opened.create_run(RUN, template="invitation", source="p.csv", now=T0)
        yield opened


async def test_find_latest_run_is_the_most_recently_created(store: SqliteStore, path: Path) -> None:
    """The synchronous helper for the CLI picks the newest created_at, as latest_run does."""
    await store.create_run("later", template="reminder", source="library", now=T0 + 60)
    await store.create_run("older", template="reminder", source="library", now=T0 - 60)
    found = find_latest_run(path)
    assert found is not None
    assert found.run_id == "later"


def test_find_latest_run_does_not_create_an_outbox(tmp_path: Path) -> None:
    """Asking for the latest run where there is no outbox answers None and writes nothing."""
    assert find_latest_run(tmp_path / "none" / "outbox.sqlite3") is None
    assert not (tmp_path / "none").exists()


CLAIMER = """
import asyncio, sys
from sender.store import MessageState, Outcome, SqliteStore

async def main():
    store = SqliteStore(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
    ids = []
    while (m := await store.claim("{run}", "example.com", now=1.0, owner=sys.argv[2])):
        await store.record(m.id, Outcome(state=MessageState.SENT, at=2.0))
        ids.append(m.id)
    await store.aclose()
    print(*ids)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_two_processes_claim_every_message_exactly_once(path: Path) -> None:
    """Processes racing on one file claim and record each message once, none lost."""
    async with SqliteStore(path) as store:
        await store.create_run(RUN, template="invitation", source="p.csv", now=T0)
        await store.add_rows(RUN, rows(range(2, 1002)))
        script = CLAIMER.replace("{run}", RUN)
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                script,
                str(path),
                f"worker-{n}",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for n in range(2)
        ]
        for worker in workers:
            assert worker.stdout is not None
            assert await worker.stdout.readline() == b"ready\n"
        outputs = await asyncio.gather(*(worker.communicate(b"go\n") for worker in workers))
        assert [worker.returncode for worker in workers] == [0, 0]
        claimed = [int(i) for out, _ in outputs for i in out.split()]
        assert len(claimed) == len(set(claimed)) == 1000
        counts = await store.counts(RUN)
        assert counts[MessageState.SENT] == 1000
        assert sum(counts.values()) == 1000


KILLED = """
import asyncio, os, signal, sys
from sender.models import Participant
from sender.store import NewRow, SqliteStore

async def main():
    store = SqliteStore(sys.argv[1])
    await store.create_run("{run}", template="invitation", source="p.csv", now=1.0)
    people = [Participant(f"u{n}@example.com", "U", f"p{n}", "c") for n in range(2, 12)]
    await store.add_rows("{run}", [NewRow(row=n, participant=p) for n, p in enumerate(people, 2)])
    await store.claim("{run}", "example.com", now=2.0, owner="doomed")
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_committed_work_survives_sigkill(path: Path) -> None:
    """A process killed with SIGKILL loses nothing it committed: rows and its claim remain."""
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED.replace("{run}", RUN), str(path)
    )
    assert await doomed.wait() == -signal.SIGKILL
    async with SqliteStore(path) as store:
        counts = await store.counts(RUN)
        assert (counts[MessageState.QUEUED], counts[MessageState.SENDING]) == (9, 1)
        assert await store.requeue_stale(RUN) == 1


# --- the file -------------------------------------------------------------------------


def test_a_file_that_is_not_an_outbox_is_a_configuration_error(tmp_path: Path) -> None:
    """Garbage where the outbox should be raises ConfigurationError naming the path."""
    garbage = tmp_path / "outbox.sqlite3"
    garbage.write_bytes(b"this is not a database, just some text " * 200)
    with pytest.raises(ConfigurationError, match=re.escape(str(garbage))) as caught:
        SqliteStore(garbage)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


def test_an_unusable_directory_is_a_configuration_error(tmp_path: Path) -> None:
    """A path whose parent cannot be a directory raises ConfigurationError naming it."""
    blocker = tmp_path / "state"
    blocker.write_text("a file, not a directory")
    with pytest.raises(ConfigurationError, match="state"):
        SqliteStore(blocker / "outbox.sqlite3")


def test_an_outbox_from_a_newer_sender_is_refused(path: Path) -> None:
    """A schema version this code does not know is an error, not a silent misread."""
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(ConfigurationError, match="version 99"):
        SqliteStore(path)


# --- checkpoints ----------------------------------------------------------------------

PAGES = 16  # a small checkpoint_pages: 64 KiB of WAL with 4 KiB pages
POLLS = 200  # looks 50 ms apart: up to 10 s for a checkpointer that polls every 0.5 s


def checkpointers(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"sender-checkpointer {path}"]


def messages_in_database_file(path: Path) -> int:
    """Messages in the database file alone, read from a copy without the WAL; -1 if unreadable."""
    copy = path.with_name("copy.sqlite3")
    shutil.copyfile(path, copy)
    try:
        with closing(sqlite3.connect(copy)) as db:
            return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    except sqlite3.DatabaseError:  # no schema yet, or a copy taken mid-checkpoint
        return -1


async def test_the_wal_reaches_the_database_file_in_the_background(path: Path) -> None:
    """Past checkpoint_pages, the WAL is folded into the database file with no store call."""
    async with SqliteStore(path, checkpoint_pages=PAGES) as store:
        await store.create_run(RUN, template="invitation", source="p.csv", now=T0)
        await store.add_rows(RUN, rows(range(2, 2002)))
        assert path.with_name(path.name + "-wal").stat().st_size > PAGES * 4096
        for _ in range(POLLS):
            if messages_in_database_file(path) == 2000:
                break
            await asyncio.sleep(0.05)
        assert messages_in_database_file(path) == 2000


async def test_the_wal_file_is_cut_back_after_a_background_checkpoint(path: Path) -> None:
    """Once the thread has checkpointed, the next write truncates the WAL to checkpoint_pages."""
    wal = path.with_name(path.name + "-wal")
    async with SqliteStore(path, checkpoint_pages=PAGES) as store:
        await store.create_run(RUN, template="invitation", source="p.csv", now=T0)
        for start in range(2, 6002, 1000):
            await store.add_rows(RUN, rows(range(start, start + 1000)))
        assert wal.stat().st_size > 10 * PAGES * 4096
        for n in range(POLLS):
            if wal.stat().st_size <= PAGES * 4096:
                break
            await asyncio.sleep(0.05)
            # A write that changes a row: it restarts a checkpointed WAL and truncates it.
            await store.acquire_run(RUN, owner="w", now=T0 + n, ttl=30)
        assert wal.stat().st_size <= PAGES * 4096
        assert (await store.counts(RUN))[MessageState.QUEUED] == 6000


async def write_until_the_wal_shrinks(store: SqliteStore, wal: Path) -> tuple[int, int]:
    """Renew a lease back to back until the WAL file shrinks (or time is up).

    Returns the largest size seen and the last one; the last is smaller when it shrank.
    """
    largest = size = 0
    deadline = time.monotonic() + POLLS * 0.05
    n = 0
    while size >= largest and time.monotonic() < deadline:
        largest = size
        n += 1
        await store.acquire_run(RUN, owner="w", now=T0 + n, ttl=30)
        size = _size(wal)
    return largest, size


def _size(path: Path) -> int:
    return path.stat().st_size


async def test_the_wal_file_is_cut_back_while_writes_never_pause(path: Path) -> None:
    """Back-to-back writes leave the checkpointer no quiet moment, yet the WAL still starts over."""
    wal = path.with_name(path.name + "-wal")
    async with SqliteStore(path, checkpoint_pages=PAGES) as store:
        await store.create_run(RUN, template="invitation", source="p.csv", now=T0)
        largest, size = await write_until_the_wal_shrinks(store, wal)
        assert size < largest
        assert size <= PAGES * 4096


WRITER = """
import asyncio, os, sys
from sender.store import SqliteStore

async def main():
    store = SqliteStore(sys.argv[1], checkpoint_pages=int(sys.argv[2]))
    await store.create_run("other", template="invitation", source="p.csv", now=1.0)
    print("ready", flush=True)
    n = 0
    while n % 100 or not os.path.exists(sys.argv[3]):
        n += 1
        await store.acquire_run("other", owner="o", now=n, ttl=30)
        await asyncio.sleep(0.001)
    await store.aclose()

asyncio.run(main())
"""


@pytest.mark.slow
async def test_the_wal_file_is_cut_back_while_two_processes_write(path: Path) -> None:
    """Another process writing all the while does not keep the WAL from starting over."""
    wal = path.with_name(path.name + "-wal")
    stop = path.with_name("stop")
    async with SqliteStore(path, checkpoint_pages=PAGES) as store:
        await store.create_run(RUN, template="invitation", source="p.csv", now=T0)
        other = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER,
            str(path),
            str(PAGES),
            str(stop),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert other.stdout is not None
            assert await other.stdout.readline() == b"ready\n"
            largest, size = await write_until_the_wal_shrinks(store, wal)
        finally:
            stop.touch()
            await other.wait()
        assert other.returncode == 0
        assert size < largest


async def test_closing_stops_the_checkpointer_and_keeps_every_row(path: Path) -> None:
    """The first write starts the thread, closing ends it, and a fresh connection sees all rows."""
    store = SqliteStore(path, checkpoint_pages=PAGES)
    await store.create_run(RUN, template="invitation", source="p.csv", now=T0)
    await store.add_rows(RUN, rows(range(2, 1002)))
    assert len(checkpointers(path)) == 1
    await store.aclose()
    assert checkpointers(path) == []
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone() == (1000,)


async def test_a_store_that_only_reads_starts_no_checkpointer(path: Path) -> None:
    """Reading, as sender status does, needs no thread: the writers checkpoint."""
    SqliteStore(path).close()
    async with SqliteStore(path) as reader:
        assert await reader.latest_run() is None
        assert checkpointers(path) == []
    assert find_latest_run(path) is None
    assert checkpointers(path) == []


def test_checkpoint_pages_below_one_is_a_configuration_error(path: Path) -> None:
    """A store that would never checkpoint is refused when it is built."""
    with pytest.raises(ConfigurationError) as caught:
        SqliteStore(path, checkpoint_pages=0)
    assert caught.value.setting == "checkpoint_pages"


def downgrade_to_v2(path: Path) -> None:
    """Make the file what sender 0.1 with schema version 2 wrote: no calendar tables."""
    raw = sqlite3.connect(path)
    raw.execute("DROP INDEX runs_event")
    for column in ("event_uid", "sequence", "method"):
        raw.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    raw.execute("DROP TABLE events")
    raw.execute("DROP TABLE rsvps")
    raw.execute("PRAGMA user_version = 2")
    raw.commit()
    raw.close()


async def test_an_outbox_from_schema_2_gains_calendar_tables(path: Path) -> None:
    """Opening a version-2 outbox adds the event columns and tables and keeps its runs."""
    async with SqliteStore(path) as first:
        await first.create_run("old", template="invitation", source="p.csv", now=T0)
    downgrade_to_v2(path)
    async with SqliteStore(path) as upgraded:
        old = await upgraded.get_run("old")
        assert old is not None
        assert old.event_uid is None
        new, _ = await upgraded.create_run(
            "ev", template="invite", source="e", now=T0, event=("u@x", 2, "REQUEST")
        )
        assert (new.event_uid, new.sequence, new.method) == ("u@x", 2, "REQUEST")
        assert await upgraded.get_event("u@x") is None


async def test_an_outbox_from_schema_1_gains_run_options(path: Path) -> None:
    """Opening a version-1 outbox adds the options column and keeps its runs."""
    async with SqliteStore(path) as first:
        await first.create_run("old", template="invitation", source="p.csv", now=T0)
    downgrade_to_v2(path)
    raw = sqlite3.connect(path)
    raw.execute("ALTER TABLE runs DROP COLUMN options")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    async with SqliteStore(path) as upgraded:
        old = await upgraded.get_run("old")
        assert old is not None
        assert old.options == {}
        new, created = await upgraded.create_run(
            "new", template="invitation", source="p.csv", now=T0, options={"rate": 9.0}
        )
        assert created
        assert new.options == {"rate": 9.0}


async def test_an_outbox_from_schema_5_gains_worker_leases(path: Path) -> None:
    """Opening a version-5 outbox adds the workers table and keeps its runs and claims."""
    async with SqliteStore(path) as first:
        await first.create_run("old", template="invitation", source="p.csv", now=T0)
    raw = sqlite3.connect(path)
    raw.execute("DROP INDEX messages_claims")
    raw.execute("DROP TABLE workers")
    raw.execute("PRAGMA user_version = 5")
    raw.commit()
    raw.close()
    async with SqliteStore(path) as upgraded:
        assert await upgraded.get_run("old") is not None
        await upgraded.register_worker("w", host="h", pid=1, now=T0)
        assert [w.owner for w in await upgraded.workers(T0)] == ["w"]
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_an_outbox_from_schema_6_speaks_the_new_bounce_reasons(path: Path) -> None:
    """Opening a version-6 outbox translates its bounces' old reason words, once."""
    async with SqliteStore(path):
        pass
    raw = sqlite3.connect(path)
    raw.execute("DROP INDEX bounces_reason")
    for n, reason in enumerate(("unknown_user", "no_domain", "other", "mailbox_full")):
        raw.execute(
            "INSERT INTO bounces (fingerprint, address, kind, reason, at) VALUES (?, ?, ?, ?, ?)",
            (f"b{n}", f"u{n}@x.example", "hard", reason, T0 + n),
        )
    raw.execute("PRAGMA user_version = 6")
    raw.commit()
    raw.close()
    async with SqliteStore(path) as upgraded:
        kept = await upgraded.bounces()
        assert [b.reason for b in kept] == [
            "user_unknown",
            "host_unknown",
            "undefined",
            "mailbox_full",
        ]
        assert [b.fingerprint for b in await upgraded.bounces(reasons={"host_unknown"})] == ["b1"]
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
