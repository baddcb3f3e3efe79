"""The SQLite outbox: idempotent ingest, atomic claims across processes, durable outcomes."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sender.errors import ConfigurationError, InputError
from sender.models import Participant, SmtpReply
from sender.store import (
    DomainProgress,
    EventRecord,
    IngestResult,
    MessageState,
    NewRow,
    Outcome,
    RsvpRecord,
    RunState,
    SqliteStore,
    find_latest_run,
)

RUN = "2026-11-invite"
T0 = 1_700_000_000.0


def person(n: int, domain: str = "example.com", **vars: str) -> Participant:
    return Participant(
        email=f"user{n}@{domain}",
        name=f"User {n}",
        participant_id=f"p{n}",
        course_id="PY101",
        vars=vars,
    )


def rows(numbers: range, domain: str = "example.com") -> list[NewRow]:
    """One participant per row number; participant n is on row n."""
    return [NewRow(row=n, participant=person(n, domain)) for n in numbers]


def skip(row: int, email: str = "broken", reason: str = "bad address") -> NewRow:
    return NewRow(row=row, participant=None, skip_reason=reason, email=email)


def sent(at: float = T0, message_id: str | None = None) -> Outcome:
    return Outcome(
        state=MessageState.SENT,
        at=at,
        reply=SmtpReply(250, "2.0.0", "queued as 1"),
        message_id=message_id,
    )


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


# --- runs -----------------------------------------------------------------------------


async def test_create_run_returns_the_existing_run_the_second_time(path: Path) -> None:
    """Creating a run twice keeps the first and says it was not new."""
    async with SqliteStore(path) as store:
        first, new = await store.create_run(RUN, template="invitation", source="a.csv", now=T0)
        again, new_again = await store.create_run(RUN, template="other", source="b", now=T0 + 9)
    assert (new, new_again) == (True, False)
    assert again == first
    assert first.template == "invitation"
    assert first.state is RunState.ACTIVE


async def test_unknown_run_is_none_for_get_and_an_input_error_elsewhere(
    store: SqliteStore,
) -> None:
    """get_run answers None for an unknown run; methods that need one raise InputError."""
    assert await store.get_run("nope") is None
    with pytest.raises(InputError, match="no run named 'nope'") as caught:
        await store.reset_failed("nope", now=T0)
    assert caught.value.field == "run_id"
    with pytest.raises(InputError):
        await store.add_rows("nope", rows(range(2, 3)))


async def test_latest_run_is_the_most_recently_created(store: SqliteStore, path: Path) -> None:
    """latest_run, and the synchronous helper for the CLI, pick the newest created_at."""
    await store.create_run("later", template="reminder", source="library", now=T0 + 60)
    await store.create_run("older", template="reminder", source="library", now=T0 - 60)
    latest = await store.latest_run()
    assert latest is not None
    assert latest.run_id == "later"
    found = find_latest_run(path)
    assert found is not None
    assert found.run_id == "later"


def test_find_latest_run_does_not_create_an_outbox(tmp_path: Path) -> None:
    """Asking for the latest run where there is no outbox answers None and writes nothing."""
    assert find_latest_run(tmp_path / "none" / "outbox.sqlite3") is None
    assert not (tmp_path / "none").exists()


async def test_pausing_keeps_the_first_pause_time_and_activating_clears_it(
    store: SqliteStore,
) -> None:
    """A second pause keeps paused_since; any other state clears reason and time."""
    await store.set_run_state(RUN, RunState.PAUSED, now=T0 + 1, reason="bounce budget")
    await store.set_run_state(RUN, RunState.PAUSED, now=T0 + 5, reason="operator")
    info = await store.get_run(RUN)
    assert info is not None
    assert (info.state, info.paused_reason, info.paused_since) == (
        RunState.PAUSED,
        "operator",
        T0 + 1,
    )
    await store.set_run_state(RUN, RunState.ACTIVE, now=T0 + 9, reason="ignored")
    info = await store.get_run(RUN)
    assert info is not None
    assert (info.state, info.paused_reason, info.paused_since) == (RunState.ACTIVE, None, None)


# --- ingest ---------------------------------------------------------------------------


async def test_ingest_stores_rows_and_advances_ingested_through(store: SqliteStore) -> None:
    """A batch lands in one go and moves ingested_through to its last row."""
    result = await store.add_rows(RUN, [*rows(range(2, 7)), skip(7)])
    assert result == IngestResult(queued=5, skipped=1)
    info = await store.get_run(RUN)
    assert info is not None
    assert (info.ingested_through, info.ingest_complete) == (7, False)
    await store.add_rows(RUN, [], complete=True)
    info = await store.get_run(RUN)
    assert info is not None
    assert (info.ingested_through, info.ingest_complete) == (7, True)


async def test_ingesting_the_same_rows_again_changes_nothing(store: SqliteStore) -> None:
    """A resumed ingest that repeats rows stores nothing new and reports nothing."""
    batch = [*rows(range(2, 12)), skip(12)]
    await store.add_rows(RUN, batch)
    before = await store.counts(RUN)
    assert await store.add_rows(RUN, batch) == IngestResult(queued=0, skipped=0)
    assert await store.add_rows(RUN, list(reversed(batch))) == IngestResult(queued=0, skipped=0)
    assert await store.counts(RUN) == before
    info = await store.get_run(RUN)
    assert info is not None
    assert info.ingested_through == 12


async def test_duplicate_participant_is_skipped_naming_the_first_row(store: SqliteStore) -> None:
    """A participant seen on an earlier row, in this batch or a past one, is a skipped duplicate."""
    await store.add_rows(RUN, rows(range(2, 4)))
    again = [
        NewRow(row=4, participant=person(2)),  # p2 from an earlier batch
        NewRow(row=5, participant=person(9)),
        NewRow(row=6, participant=person(9)),  # p9 from this batch
    ]
    result = await store.add_rows(RUN, again)
    assert result == IngestResult(queued=1, skipped=2, duplicates=((4, 2), (6, 5)))
    assert await store.skipped(RUN) == [
        (4, "user2@example.com", "duplicate of row 2"),
        (6, "user9@example.com", "duplicate of row 5"),
    ]
    assert await store.add_rows(RUN, again) == IngestResult(queued=0, skipped=0)
    assert (await store.counts(RUN))[MessageState.SKIPPED] == 2


async def test_skipped_rows_are_stored_once_across_resumes(store: SqliteStore) -> None:
    """Skipped rows are unique per row, so replaying them after a crash adds nothing."""
    await store.add_rows(RUN, [skip(2, "x@", "no domain"), skip(3, "", "empty email")])
    await store.add_rows(RUN, [skip(2, "x@", "no domain"), skip(3, "", "empty email"), skip(4)])
    assert await store.skipped(RUN) == [
        (2, "x@", "no domain"),
        (3, "", "empty email"),
        (4, "broken", "bad address"),
    ]
    assert await store.skipped(RUN, limit=1) == [(2, "x@", "no domain")]


async def test_undecodable_input_is_kept_readable(store: SqliteStore) -> None:
    """A skipped row's escaped bytes are stored as U+FFFD; such a participant is an InputError."""
    await store.add_rows(RUN, [skip(2, "caf\udce9@example.com")])
    assert await store.skipped(RUN) == [(2, "caf\ufffd@example.com", "bad address")]
    bad = NewRow(row=3, participant=person(3, nickname="\udce9"))
    with pytest.raises(InputError) as caught:
        await store.add_rows(RUN, [*rows(range(4, 6)), bad])
    assert (caught.value.row, caught.value.field) == (3, "nickname")
    assert (await store.counts(RUN))[MessageState.QUEUED] == 0  # the batch rolled back


async def test_hundred_thousand_rows_ingest_in_batches(store: SqliteStore) -> None:
    """A 100,000-row ingest in batches of 1,000 stores every row exactly once."""
    domains = ("example.com", "uni.example.edu", "mail.example.org")
    for start in range(0, 100_000, 1000):
        batch = [
            NewRow(row=n, participant=person(n, domains[n % 3]))
            for n in range(start + 2, start + 1002)
        ]
        await store.add_rows(RUN, batch, complete=start == 99_000)
    counts = await store.counts(RUN)
    assert counts[MessageState.QUEUED] == 100_000
    assert sum(counts.values()) == 100_000
    expected = Counter(domains[n % 3] for n in range(2, 100_002))
    assert await store.pending_domains(RUN, now=T0) == expected
    info = await store.get_run(RUN)
    assert info is not None
    assert (info.ingested_through, info.ingest_complete) == (100_001, True)


# --- claims ---------------------------------------------------------------------------


async def test_claim_returns_the_participant_as_ingested(store: SqliteStore) -> None:
    """A claim carries the whole participant back, counts the attempt and notes its time."""
    alice = Participant(
        email="Alice@Uni.Example.EDU",
        name="Ålice Ørn",
        participant_id="a-1",
        course_id="PY101",
        locale="nb",
        vars={"room": "B2", "teacher": "Kåre"},
    )
    await store.add_rows(RUN, [NewRow(row=2, participant=alice)])
    assert await store.claim(RUN, "Uni.Example.EDU", now=T0, owner="w") is None
    claimed = await store.claim(RUN, "uni.example.edu", now=T0 + 1, owner="w")
    assert claimed is not None
    assert claimed.participant == alice
    assert (claimed.run_id, claimed.row, claimed.template, claimed.domain) == (
        RUN,
        2,
        "invitation",
        "uni.example.edu",
    )
    assert (claimed.attempts, claimed.first_attempt_at, claimed.message_id) == (1, T0 + 1, None)
    assert await store.claim(RUN, "uni.example.edu", now=T0 + 1, owner="w") is None


async def test_claim_order_is_due_time_then_priority_then_input_order(store: SqliteStore) -> None:
    """Queued rows go before deferred ones; higher priority first; then input order."""
    await store.add_rows(RUN, rows(range(2, 4)))
    first = await store.claim(RUN, "example.com", now=T0, owner="w")
    assert first is not None
    await store.record(first.id, Outcome(state=MessageState.DEFERRED, at=T0, next_attempt_at=T0))
    await store.add_rows(
        RUN,
        [
            NewRow(row=4, participant=person(4)),
            NewRow(row=5, participant=person(5), priority=1),
            NewRow(row=6, participant=person(6), priority=1),
        ],
    )
    order = []
    while (claimed := await store.claim(RUN, "example.com", now=T0 + 1, owner="w")) is not None:
        order.append(claimed.row)
    assert order == [5, 6, 3, 4, 2]


async def test_deferred_message_is_claimable_only_when_due(store: SqliteStore) -> None:
    """A deferred message waits for next_attempt_at, then comes back with the next attempt."""
    await store.add_rows(RUN, rows(range(2, 3)))
    claimed = await store.claim(RUN, "example.com", now=T0, owner="w")
    assert claimed is not None
    greylisted = SmtpReply(451, "4.7.1", "greylisted")
    await store.record(
        claimed.id,
        Outcome(state=MessageState.DEFERRED, at=T0, reply=greylisted, next_attempt_at=T0 + 300),
    )
    assert await store.pending_domains(RUN, now=T0 + 299) == {}
    assert await store.claim(RUN, "example.com", now=T0 + 299, owner="w") is None
    assert await store.next_attempt_at(RUN) == T0 + 300
    assert await store.pending_domains(RUN, now=T0 + 300) == {"example.com": 1}
    again = await store.claim(RUN, "example.com", now=T0 + 300, owner="w")
    assert again is not None
    assert (again.id, again.attempts, again.first_attempt_at) == (claimed.id, 2, T0)
    assert await store.next_attempt_at(RUN) is None


async def test_two_stores_on_one_file_never_claim_the_same_message(path: Path) -> None:
    """Two connections taking turns claim every message exactly once between them."""
    async with SqliteStore(path) as one, SqliteStore(path) as two:
        await one.create_run(RUN, template="invitation", source="p.csv", now=T0)
        await one.add_rows(RUN, rows(range(2, 202)))
        claimed: list[int] = []
        for store in [one, two] * 150:
            message = await store.claim(RUN, "example.com", now=T0, owner=str(id(store)))
            if message is not None:
                claimed.append(message.id)
        assert sorted(claimed) == sorted(set(claimed))
        assert len(claimed) == 200
        assert (await two.counts(RUN))[MessageState.SENDING] == 200


async def test_claim_many_and_record_many_batch_in_one_transaction(store: SqliteStore) -> None:
    """Batched claims answer per requested domain; a batch of outcomes is stored all or nothing."""
    await store.add_rows(RUN, [*rows(range(2, 4), "a.example"), *rows(range(4, 5), "b.example")])
    claimed = await store.claim_many(
        RUN, ["a.example", "b.example", "a.example", "b.example", "c.example"], now=T0, owner="w"
    )
    assert [m.row if m else None for m in claimed] == [2, 4, 3, None, None]
    messages = [m for m in claimed if m is not None]
    with pytest.raises(KeyError):
        await store.record_many([(messages[0].id, sent()), (999, sent())])
    assert (await store.counts(RUN))[MessageState.SENDING] == 3
    deferred = Outcome(state=MessageState.DEFERRED, at=T0, detail="timeout", next_attempt_at=T0)
    await store.record_many([(messages[0].id, sent()), (messages[1].id, deferred)])
    await store.record_many([])
    counts = await store.counts(RUN)
    assert (counts[MessageState.SENT], counts[MessageState.DEFERRED]) == (1, 1)
    assert [a.state for a in await store.attempts(messages[1].id)] == [MessageState.DEFERRED]


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


# --- outcomes -------------------------------------------------------------------------


async def test_record_logs_every_attempt_and_keeps_the_first_message_id(
    store: SqliteStore,
) -> None:
    """Each outcome is appended to the attempt log; the first Message-ID sticks to the message."""
    await store.add_rows(RUN, rows(range(2, 3)))
    claimed = await store.claim(RUN, "example.com", now=T0, owner="w")
    assert claimed is not None
    await store.record(
        claimed.id,
        Outcome(
            state=MessageState.DEFERRED,
            at=T0 + 1,
            detail="timeout",
            next_attempt_at=T0 + 60,
            message_id="<first@example.com>",
        ),
    )
    again = await store.claim(RUN, "example.com", now=T0 + 60, owner="w")
    assert again is not None
    assert again.message_id == "<first@example.com>"
    await store.record(again.id, sent(T0 + 61, message_id="<second@example.com>"))
    log = await store.attempts(claimed.id)
    assert [(a.number, a.at, a.state, a.detail) for a in log] == [
        (1, T0 + 1, MessageState.DEFERRED, "timeout"),
        (2, T0 + 61, MessageState.SENT, ""),
    ]
    assert log[0].reply is None
    assert log[1].reply == SmtpReply(250, "2.0.0", "queued as 1")
    assert log[1].message_id == claimed.id
    reclaimed = await store.claim(RUN, "example.com", now=T0 + 999, owner="w")
    assert reclaimed is None


async def test_record_refuses_outcomes_that_are_not_results(store: SqliteStore) -> None:
    """Only final or deferred outcomes can be recorded, deferred ones with a time, on real rows."""
    await store.add_rows(RUN, rows(range(2, 3)))
    claimed = await store.claim(RUN, "example.com", now=T0, owner="w")
    assert claimed is not None
    with pytest.raises(ValueError, match="queued"):
        await store.record(claimed.id, Outcome(state=MessageState.QUEUED, at=T0))
    with pytest.raises(ValueError, match="next_attempt_at"):
        await store.record(claimed.id, Outcome(state=MessageState.DEFERRED, at=T0))
    with pytest.raises(KeyError):
        await store.record(claimed.id + 100, sent())
    assert await store.attempts(claimed.id) == []


async def test_stale_claims_are_requeued_after_a_crash(path: Path) -> None:
    """A claim that was never recorded goes back to the queue when the run resumes."""
    store = SqliteStore(path)
    await store.create_run(RUN, template="invitation", source="p.csv", now=T0)
    await store.add_rows(RUN, rows(range(2, 5)))
    crashed = await store.claim(RUN, "example.com", now=T0, owner="old")
    assert crashed is not None
    await store.aclose()

    async with SqliteStore(path) as resumed:
        assert (await resumed.counts(RUN))[MessageState.SENDING] == 1
        assert await resumed.requeue_stale(RUN) == 1
        assert await resumed.requeue_stale(RUN) == 0
        again = await resumed.claim(RUN, "example.com", now=T0 + 9, owner="new")
        assert again is not None
        assert (again.id, again.attempts, again.first_attempt_at) == (crashed.id, 2, T0)


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


async def test_reset_failed_requeues_failed_and_deferred_but_never_sent(
    store: SqliteStore,
) -> None:
    """sender retry re-queues failed and deferred rows only, and reactivates the run."""
    await store.add_rows(RUN, [*rows(range(2, 7)), skip(7)])
    outcomes = [
        sent(),
        Outcome(state=MessageState.FAILED, at=T0, reply=SmtpReply(550, "5.1.1", "unknown")),
        Outcome(state=MessageState.DEFERRED, at=T0, next_attempt_at=T0 + 600),
        Outcome(state=MessageState.SUPPRESSED, at=T0, detail="on the suppression list"),
    ]
    for outcome in outcomes:
        claimed = await store.claim(RUN, "example.com", now=T0, owner="w")
        assert claimed is not None
        await store.record(claimed.id, outcome)
    await store.set_run_state(RUN, RunState.PAUSED, now=T0, reason="bounce budget")

    assert await store.reset_failed(RUN, now=T0 + 5) == 2
    counts = await store.counts(RUN)
    assert counts == {
        MessageState.QUEUED: 3,
        MessageState.SENDING: 0,
        MessageState.SENT: 1,
        MessageState.DEFERRED: 0,
        MessageState.FAILED: 0,
        MessageState.SUPPRESSED: 1,
        MessageState.SKIPPED: 1,
    }
    info = await store.get_run(RUN)
    assert info is not None
    assert (info.state, info.paused_reason) == (RunState.ACTIVE, None)
    retried = []
    while (claimed := await store.claim(RUN, "example.com", now=T0 + 5, owner="w")) is not None:
        retried.append(claimed.row)
    assert retried == [6, 3, 4]


# --- reporting ------------------------------------------------------------------------


async def test_counts_domain_progress_and_problems_describe_the_run(store: SqliteStore) -> None:
    """Counts name every state, per-domain progress splits them, problems list row by row."""
    await store.add_rows(
        RUN,
        [*rows(range(2, 5), "a.example"), *rows(range(5, 8), "b.example"), skip(8)],
    )
    plan = {
        "a.example": [
            sent(),
            Outcome(state=MessageState.DEFERRED, at=T0, detail="timeout", next_attempt_at=T0 + 90),
        ],
        "b.example": [
            Outcome(state=MessageState.FAILED, at=T0, reply=SmtpReply(550, "5.1.1", "unknown")),
            Outcome(state=MessageState.DEFERRED, at=T0, next_attempt_at=T0 + 30),
        ],
    }
    for domain, outcomes in plan.items():
        for outcome in outcomes:
            claimed = await store.claim(RUN, domain, now=T0, owner="w")
            assert claimed is not None
            await store.record(claimed.id, outcome)
    sending = await store.claim(RUN, "b.example", now=T0, owner="w")
    assert sending is not None

    counts = await store.counts(RUN)
    assert counts == {
        MessageState.QUEUED: 1,
        MessageState.SENDING: 1,
        MessageState.SENT: 1,
        MessageState.DEFERRED: 2,
        MessageState.FAILED: 1,
        MessageState.SUPPRESSED: 0,
        MessageState.SKIPPED: 1,
    }
    zero = dict.fromkeys(MessageState, 0)
    assert await store.domain_progress(RUN) == [
        DomainProgress(
            domain="a.example",
            counts=zero | {MessageState.SENT: 1, MessageState.DEFERRED: 1, MessageState.QUEUED: 1},
            next_attempt_at=T0 + 90,
        ),
        DomainProgress(
            domain="b.example",
            counts=zero
            | {MessageState.FAILED: 1, MessageState.DEFERRED: 1, MessageState.SENDING: 1},
            next_attempt_at=T0 + 30,
        ),
    ]
    assert await store.problems(RUN) == [
        (3, "user3@a.example", MessageState.DEFERRED, "timeout"),
        (5, "user5@b.example", MessageState.FAILED, "550 5.1.1 unknown"),
        (6, "user6@b.example", MessageState.DEFERRED, ""),
    ]
    assert await store.problems(RUN, limit=1) == [
        (3, "user3@a.example", MessageState.DEFERRED, "timeout")
    ]
    assert await store.pending_domains(RUN, now=T0 + 30) == {"a.example": 1, "b.example": 1}
    assert await store.next_attempt_at(RUN) == T0 + 30


# --- leases ---------------------------------------------------------------------------


async def test_lease_is_held_until_released_or_its_heartbeat_expires(store: SqliteStore) -> None:
    """One owner at a time; another takes over only after release or ttl without heartbeat."""
    assert await store.acquire_run(RUN, owner="a:1", now=T0, ttl=30)
    assert await store.acquire_run(RUN, owner="a:1", now=T0 + 1, ttl=30)
    assert not await store.acquire_run(RUN, owner="b:2", now=T0 + 20, ttl=30)
    assert await store.heartbeat(RUN, owner="a:1", now=T0 + 25)
    assert not await store.acquire_run(RUN, owner="b:2", now=T0 + 50, ttl=30)
    assert await store.acquire_run(RUN, owner="b:2", now=T0 + 56, ttl=30)
    assert not await store.heartbeat(RUN, owner="a:1", now=T0 + 57)
    await store.release_run(RUN, owner="a:1")  # not the owner: no effect
    info = await store.get_run(RUN)
    assert info is not None
    assert (info.owner, info.heartbeat_at) == ("b:2", T0 + 56)
    await store.release_run(RUN, owner="b:2")
    assert await store.acquire_run(RUN, owner="a:1", now=T0 + 58, ttl=30)


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


async def test_a_closed_store_raises_configuration_error(path: Path) -> None:
    """Using a store after aclose is a clear error, not a sqlite3 exception."""
    store = SqliteStore(path)
    await store.aclose()
    await store.aclose()
    with pytest.raises(ConfigurationError, match="closed"):
        await store.latest_run()


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


async def test_the_wal_file_is_cut_back_while_writes_never_pause(path: Path) -> None:
    """Back-to-back writes leave the checkpointer no quiet moment, yet the WAL still starts over."""
    wal = path.with_name(path.name + "-wal")
    async with SqliteStore(path, checkpoint_pages=PAGES) as store:
        await store.create_run(RUN, template="invitation", source="p.csv", now=T0)
        largest = size = 0
        deadline = time.monotonic() + POLLS * 0.05
        n = 0
        while size >= largest and time.monotonic() < deadline:
            largest = size
            n += 1
            await store.acquire_run(RUN, owner="w", now=T0 + n, ttl=30)
            size = wal.stat().st_size
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
            largest = size = 0
            deadline = time.monotonic() + POLLS * 0.05
            n = 0
            while size >= largest and time.monotonic() < deadline:
                largest = size
                n += 1
                await store.acquire_run(RUN, owner="w", now=T0 + n, ttl=30)
                size = wal.stat().st_size
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


# --- random operations ----------------------------------------------------------------

DOMAINS = ("a.example", "b.example")
OUTCOMES = (MessageState.SENT, MessageState.DEFERRED, MessageState.FAILED, MessageState.SUPPRESSED)
RETRIED = {MessageState.FAILED, MessageState.DEFERRED}


T = TypeVar("T")


@dataclass
class Modelled:
    """What the machine expects of one input row."""

    state: MessageState
    due_at: float | None = None
    priority: int = 0
    domain: str | None = None  # None for skipped rows


class OutboxMachine(RuleBasedStateMachine):
    """Random ingest, resume, claim, record, crash and retry, checked against a plain model."""

    claimed = Bundle("claimed")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.loop = asyncio.new_event_loop()
        self.store = SqliteStore(self.dir / "outbox.sqlite3")
        self.call(self.store.create_run(RUN, template="invitation", source="x", now=T0))
        self.now = T0
        self.next_row = 2
        self.batches: list[list[NewRow]] = []
        self.rows: dict[int, Modelled] = {}
        self.first_row: dict[str, int] = {}  # participant id -> the row that holds it
        self.ids: dict[int, int] = {}  # outbox message id -> row
        self.sending: set[int] = set()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.store.close()
        self.loop.close()
        shutil.rmtree(self.dir)

    @rule(
        people=st.lists(
            st.tuples(st.integers(0, 12), st.sampled_from(DOMAINS), st.integers(0, 1)),
            max_size=6,
        ),
        skips=st.integers(0, 2),
    )
    def ingest(self, people: list[tuple[int, str, int]], skips: int) -> None:
        batch = []
        for pid, domain, priority in people:
            participant = Participant(f"p{pid}@{domain}", "P", f"p{pid}", "c")
            batch.append(NewRow(row=self.next_row, participant=participant, priority=priority))
            self.next_row += 1
        for _ in range(skips):
            batch.append(skip(self.next_row))
            self.next_row += 1
        self.batches.append(batch)
        self.call(self.store.add_rows(RUN, batch))
        for new in batch:
            person = new.participant
            if person is None:
                self.rows[new.row] = Modelled(MessageState.SKIPPED)
            elif self.first_row.setdefault(person.participant_id, new.row) == new.row:
                self.rows[new.row] = Modelled(MessageState.QUEUED, 0.0, new.priority, person.domain)
            else:
                self.rows[new.row] = Modelled(MessageState.SKIPPED)

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def resume_ingest(self, data: st.DataObject) -> None:
        batch = data.draw(st.sampled_from(self.batches))
        assert self.call(self.store.add_rows(RUN, batch)) == IngestResult(queued=0, skipped=0)

    @rule(target=claimed, domain=st.sampled_from(DOMAINS))
    def claim(self, domain: str) -> int:
        message = self.call(self.store.claim(RUN, domain, now=self.now, owner="w"))
        expected = self.expected_claim(domain)
        if expected is None:
            assert message is None
            return -1
        assert message is not None
        assert message.row == expected
        self.claimed_now(message.id, message.row)
        return message.id

    def expected_claim(self, domain: str) -> int | None:
        """The row the model says goes next: earliest due, then priority, then input order."""
        due = [
            (m.due_at, -m.priority, row)
            for row, m in self.rows.items()
            if m.domain == domain and m.due_at is not None and m.due_at <= self.now
        ]
        return min(due)[-1] if due else None

    def claimed_now(self, message: int, row: int) -> None:
        assert self.ids.setdefault(message, row) == row
        self.rows[row].state, self.rows[row].due_at = MessageState.SENDING, None
        self.sending.add(message)

    @rule(domains=st.lists(st.sampled_from(DOMAINS), max_size=4))
    def claim_batch(self, domains: list[str]) -> None:
        messages = self.call(self.store.claim_many(RUN, domains, now=self.now, owner="w"))
        assert len(messages) == len(domains)
        for domain, message in zip(domains, messages, strict=True):
            expected = self.expected_claim(domain)
            assert (message and message.row) == expected
            if message is not None:
                self.claimed_now(message.id, message.row)

    @precondition(lambda self: bool(self.sending))
    @rule(state=st.sampled_from(OUTCOMES))
    def record_all(self, state: MessageState) -> None:
        due = self.now + 60 if state is MessageState.DEFERRED else None
        outcome = Outcome(state=state, at=self.now, next_attempt_at=due)
        self.call(self.store.record_many([(message, outcome) for message in self.sending]))
        for message in self.sending:
            self.rows[self.ids[message]].state, self.rows[self.ids[message]].due_at = state, due
        self.sending.clear()

    @rule(
        message=claimed,
        state=st.sampled_from(OUTCOMES),
        delay=st.sampled_from([0.0, 30.0, 300.0]),
    )
    def record(self, message: int, state: MessageState, delay: float) -> None:
        if message not in self.sending:
            return
        self.sending.discard(message)
        due = self.now + delay if state is MessageState.DEFERRED else None
        self.call(
            self.store.record(message, Outcome(state=state, at=self.now, next_attempt_at=due))
        )
        self.rows[self.ids[message]].state, self.rows[self.ids[message]].due_at = state, due

    @rule(seconds=st.sampled_from([1.0, 60.0, 600.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def crash_and_requeue(self) -> None:
        self.store.close()
        self.store = SqliteStore(self.dir / "outbox.sqlite3")
        assert self.call(self.store.requeue_stale(RUN)) == len(self.sending)
        for message in self.sending:
            self.rows[self.ids[message]].state, self.rows[self.ids[message]].due_at = (
                MessageState.QUEUED,
                0.0,
            )
        self.sending.clear()

    @rule()
    def retry(self) -> None:
        retried = [m for m in self.rows.values() if m.state in RETRIED]
        assert self.call(self.store.reset_failed(RUN, now=self.now)) == len(retried)
        for modelled in retried:
            modelled.state, modelled.due_at = MessageState.QUEUED, self.now

    @invariant()
    def counts_match_the_model_and_sum_to_the_rows(self) -> None:
        counts = self.call(self.store.counts(RUN))
        assert counts == {s: sum(m.state is s for m in self.rows.values()) for s in MessageState}
        assert sum(counts.values()) == self.next_row - 2

    @invariant()
    def every_participant_has_exactly_one_message(self) -> None:
        live = sorted(row for row, m in self.rows.items() if m.domain is not None)
        assert live == sorted(self.first_row.values())

    @invariant()
    def only_queued_and_deferred_messages_are_claimable(self) -> None:
        pending = self.call(self.store.pending_domains(RUN, now=self.now + 10_000))
        claimable = Counter(
            m.domain
            for m in self.rows.values()
            if m.state in {MessageState.QUEUED, MessageState.DEFERRED}
        )
        assert pending == {d: claimable[d] for d in DOMAINS if claimable[d]}


def test_random_operations_keep_the_outbox_consistent() -> None:
    """Under any sequence of operations, counts add up and no message is claimed twice."""
    run_state_machine_as_test(
        OutboxMachine,
        settings=settings(max_examples=60, stateful_step_count=30, deadline=None),
    )


async def test_lookup_tells_where_one_participant_stands(store: SqliteStore) -> None:
    """lookup finds a participant's message with its state, attempts and last reply."""
    await store.add_rows(RUN, rows(range(1, 4)), complete=True)
    assert (await store.lookup(RUN, "p2")).state is MessageState.QUEUED  # type: ignore[union-attr]
    claimed = await store.claim(RUN, "example.com", now=T0, owner="w:1")
    assert claimed is not None
    await store.record(
        claimed.id,
        Outcome(
            MessageState.DEFERRED,
            at=T0,
            reply=SmtpReply(451, "4.7.1", "greylisted"),
            next_attempt_at=T0 + 300,
            message_id="<m1@example.com>",
        ),
    )
    record = await store.lookup(RUN, claimed.participant.participant_id)
    assert record is not None
    assert (record.state, record.attempts, record.next_attempt_at) == (
        MessageState.DEFERRED,
        1,
        T0 + 300,
    )
    assert record.last_reply == SmtpReply(451, "4.7.1", "greylisted")
    assert record.message_id == "<m1@example.com>"
    assert await store.lookup(RUN, "nobody") is None


async def test_unrenderable_message_can_be_recorded_as_skipped(store: SqliteStore) -> None:
    """A message that cannot be composed at send time ends as skipped, with the reason."""
    await store.add_rows(RUN, rows(range(1, 2)), complete=True)
    claimed = await store.claim(RUN, "example.com", now=T0, owner="w:1")
    assert claimed is not None
    await store.record(claimed.id, Outcome(MessageState.SKIPPED, at=T0, detail="no 'room'"))
    assert (await store.counts(RUN))[MessageState.SKIPPED] == 1
    assert await store.pending_domains(RUN, now=T0 + 1e6) == {}


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


# --- calendar events ---------------------------------------------------------------------


async def send_event_run(
    store: SqliteStore, run_id: str, numbers: range, *, sequence: int, method: str
) -> None:
    """A run of the event "ev@x" at ``sequence`` whose messages all reach ``sent``."""
    await store.create_run(
        run_id, template="invite", source="e", now=T0, event=("ev@x", sequence, method)
    )
    await store.add_rows(run_id, rows(numbers), complete=True)
    for _ in numbers:
        message = await store.claim(run_id, "example.com", now=T0, owner="w")
        assert message is not None
        await store.record(message.id, sent(at=T0 + sequence))


async def test_event_record_round_trips(path: Path) -> None:
    """An event's record comes back as saved; saving again replaces it."""
    async with SqliteStore(path) as store:
        record = EventRecord("ev@x", "PY101", 0, "f0", '{"summary": "S"}', updated_at=T0)
        await store.save_event(record)
        assert await store.get_event("ev@x") == record
        changed = EventRecord(
            "ev@x", "PY101", 1, "f1", "{}", cancelled=True, changes=("time", "place")
        )
        await store.save_event(changed)
        assert await store.get_event("ev@x") == changed
        assert await store.get_event("other@x") is None


async def test_invitations_are_the_sent_messages_of_the_event_runs(path: Path) -> None:
    """Each attendee's last SEQUENCE and method come from the event's sent messages."""
    async with SqliteStore(path) as store:
        await send_event_run(store, "invite", range(1, 4), sequence=0, method="REQUEST")
        await send_event_run(store, "update", range(1, 3), sequence=1, method="REQUEST")
        await send_event_run(store, "cancel", range(2, 3), sequence=2, method="CANCEL")
        await store.create_run("unrelated", template="invitation", source="p", now=T0)
        await store.add_rows("unrelated", rows(range(7, 9)), complete=True)
        found = {
            i.participant.participant_id: (i.sequence, i.method)
            for i in await store.invitations("ev@x")
        }
        assert found == {"p1": (1, "REQUEST"), "p2": (2, "CANCEL"), "p3": (0, "REQUEST")}
        assert await store.invitations("other@x") == []


async def test_queued_event_messages_are_not_invitations(path: Path) -> None:
    """A message not sent yet has invited nobody."""
    async with SqliteStore(path) as store:
        await store.create_run(
            "invite", template="invite", source="e", now=T0, event=("ev@x", 0, "REQUEST")
        )
        await store.add_rows("invite", rows(range(1, 3)), complete=True)
        assert await store.invitations("ev@x") == []


async def test_the_same_answer_is_kept_once(path: Path) -> None:
    """Ingesting one reply twice keeps one answer, with or without a DTSTAMP."""
    async with SqliteStore(path) as store:
        for dtstamp in (None, T0):
            answer = RsvpRecord(
                "ev@x", "ada@example.org", "ACCEPTED", 1, T0, "recorded", dtstamp=dtstamp
            )
            assert await store.add_rsvp(answer)
            assert not await store.add_rsvp(answer)
        declined = RsvpRecord("ev@x", "ada@example.org", "DECLINED", 1, T0 + 5, "recorded")
        assert await store.add_rsvp(declined)
        kept = await store.rsvps("ev@x")
        assert [r.partstat for r in kept] == ["ACCEPTED", "ACCEPTED", "DECLINED"]
        assert await store.rsvps() == kept
        assert await store.rsvps("other@x") == []
