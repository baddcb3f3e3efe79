"""The store's contract: what every backend promises, role by role.

Each test runs once per backend in ``BACKENDS``; a new backend joins by appending its
factory there and must pass everything here unchanged. SQLite-only matters (migrations,
the file's permissions, WAL checkpoints, processes sharing one file) stay in test_store.py.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, replace
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
    BounceRecord,
    DailySent,
    DomainProgress,
    EventRecord,
    IngestResult,
    MessageState,
    NewRow,
    Outcome,
    RsvpRecord,
    RunState,
    SqliteStore,
    Store,
)

# A backend opens a store on the database named by a path (the same path, the same data:
# a second store on it is another process's view). Each entry names the fixture that gives
# a backend's factory; a new backend appends its own (postgres_backend is in conftest.py).
Backend = Callable[[Path], Store]
BACKENDS: list[Any] = [
    pytest.param("sqlite_backend", id="sqlite"),
    pytest.param("postgres_backend", id="postgres"),
]

Opener = Callable[[], Store]

RUN = "2026-11-invite"
T0 = 1_700_000_000.0
DAY = 86_400.0


@pytest.fixture
def sqlite_backend() -> Backend:
    """SQLite's factory: the store on the file at the path."""
    return SqliteStore


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """The factory of the backend under test."""
    factory: Backend = request.getfixturevalue(request.param)
    return factory


@pytest.fixture
def open_store(backend: Backend, tmp_path: Path) -> Opener:
    """Opens a store on this test's database, as often as asked (each is closed by the test)."""
    return lambda: backend(tmp_path / "state" / "outbox.sqlite3")


@pytest.fixture
async def store(open_store: Opener) -> AsyncIterator[Store]:
    """An open store with the run ``RUN`` created."""
    async with aclosing(open_store()) as opened:
        await opened.create_run(RUN, template="invitation", source="p.csv", now=T0)
        yield opened


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


def bounce(n: int, address: str | None = "ada@example.org", **fields: Any) -> BounceRecord:
    values: dict[str, Any] = {
        "fingerprint": f"b{n}",
        "address": address,
        "kind": "hard",
        "status": "5.1.1",
        "diagnostic": "550 5.1.1 user unknown",
        "reason": "user_unknown",
        "at": T0,
    }
    return BounceRecord(**(values | fields))


async def deliver(store: Store, numbers: range, *, at: float, domain: str = "example.com") -> None:
    """Ingest participants ``numbers`` into ``RUN`` and record each as sent at ``at``."""
    await store.add_rows(RUN, rows(numbers, domain))
    for _ in numbers:
        message = await store.claim(RUN, domain, now=at, owner="w")
        assert message is not None
        await store.record(message.id, sent(at))


# --- runs -----------------------------------------------------------------------------


async def test_create_run_returns_the_existing_run_the_second_time(open_store: Opener) -> None:
    """Creating a run twice keeps the first and says it was not new."""
    async with aclosing(open_store()) as store:
        first, new = await store.create_run(RUN, template="invitation", source="a.csv", now=T0)
        again, new_again = await store.create_run(RUN, template="other", source="b", now=T0 + 9)
    assert (new, new_again) == (True, False)
    assert again == first
    assert first.template == "invitation"
    assert first.state is RunState.ACTIVE


async def test_unknown_run_is_none_for_get_and_an_input_error_elsewhere(
    store: Store,
) -> None:
    """get_run answers None for an unknown run; methods that need one raise InputError."""
    assert await store.get_run("nope") is None
    with pytest.raises(InputError, match="no run named 'nope'") as caught:
        await store.reset_failed("nope", now=T0)
    assert caught.value.field == "run_id"
    with pytest.raises(InputError):
        await store.add_rows("nope", rows(range(2, 3)))


async def test_latest_run_is_the_most_recently_created(store: Store) -> None:
    """latest_run, and the synchronous helper for the CLI, pick the newest created_at."""
    await store.create_run("later", template="reminder", source="library", now=T0 + 60)
    await store.create_run("older", template="reminder", source="library", now=T0 - 60)
    latest = await store.latest_run()
    assert latest is not None
    assert latest.run_id == "later"


async def test_pausing_keeps_the_first_pause_time_and_activating_clears_it(
    store: Store,
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


async def test_ingest_stores_rows_and_advances_ingested_through(store: Store) -> None:
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


async def test_ingesting_the_same_rows_again_changes_nothing(store: Store) -> None:
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


async def test_duplicate_participant_is_skipped_naming_the_first_row(store: Store) -> None:
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


async def test_skipped_rows_are_stored_once_across_resumes(store: Store) -> None:
    """Skipped rows are unique per row, so replaying them after a crash adds nothing."""
    await store.add_rows(RUN, [skip(2, "x@", "no domain"), skip(3, "", "empty email")])
    await store.add_rows(RUN, [skip(2, "x@", "no domain"), skip(3, "", "empty email"), skip(4)])
    assert await store.skipped(RUN) == [
        (2, "x@", "no domain"),
        (3, "", "empty email"),
        (4, "broken", "bad address"),
    ]
    assert await store.skipped(RUN, limit=1) == [(2, "x@", "no domain")]


async def test_undecodable_input_is_kept_readable(store: Store) -> None:
    """A skipped row's escaped bytes are stored as U+FFFD; such a participant is an InputError."""
    await store.add_rows(RUN, [skip(2, "caf\udce9@example.com")])
    assert await store.skipped(RUN) == [(2, "caf\ufffd@example.com", "bad address")]
    bad = NewRow(row=3, participant=person(3, nickname="\udce9"))
    with pytest.raises(InputError) as caught:
        await store.add_rows(RUN, [*rows(range(4, 6)), bad])
    assert (caught.value.row, caught.value.field) == (3, "nickname")
    assert (await store.counts(RUN))[MessageState.QUEUED] == 0  # the batch rolled back


@pytest.mark.slow
async def test_hundred_thousand_rows_ingest_in_batches(store: Store) -> None:
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


async def test_claim_returns_the_participant_as_ingested(store: Store) -> None:
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


async def test_claim_order_is_due_time_then_priority_then_input_order(store: Store) -> None:
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


async def test_deferred_message_is_claimable_only_when_due(store: Store) -> None:
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


async def test_two_stores_on_one_file_never_claim_the_same_message(open_store: Opener) -> None:
    """Two connections taking turns claim every message exactly once between them."""
    async with aclosing(open_store()) as one, aclosing(open_store()) as two:
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


async def test_claim_many_and_record_many_batch_in_one_transaction(store: Store) -> None:
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


# --- outcomes -------------------------------------------------------------------------


async def test_record_logs_every_attempt_and_keeps_the_first_message_id(
    store: Store,
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


async def test_record_refuses_outcomes_that_are_not_results(store: Store) -> None:
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


async def test_stale_claims_are_requeued_after_a_crash(open_store: Opener) -> None:
    """A claim that was never recorded goes back to the queue when the run resumes."""
    store = open_store()
    await store.create_run(RUN, template="invitation", source="p.csv", now=T0)
    await store.add_rows(RUN, rows(range(2, 5)))
    crashed = await store.claim(RUN, "example.com", now=T0, owner="old")
    assert crashed is not None
    await store.aclose()

    async with aclosing(open_store()) as resumed:
        assert (await resumed.counts(RUN))[MessageState.SENDING] == 1
        assert await resumed.requeue_stale(RUN) == 1
        assert await resumed.requeue_stale(RUN) == 0
        again = await resumed.claim(RUN, "example.com", now=T0 + 9, owner="new")
        assert again is not None
        assert (again.id, again.attempts, again.first_attempt_at) == (crashed.id, 2, T0)


async def test_reset_failed_requeues_failed_and_deferred_but_never_sent(
    store: Store,
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
        MessageState.UNSUBSCRIBED: 0,
    }
    info = await store.get_run(RUN)
    assert info is not None
    assert (info.state, info.paused_reason) == (RunState.ACTIVE, None)
    retried = []
    while (claimed := await store.claim(RUN, "example.com", now=T0 + 5, owner="w")) is not None:
        retried.append(claimed.row)
    assert retried == [6, 3, 4]


# --- reporting ------------------------------------------------------------------------


async def test_counts_domain_progress_and_problems_describe_the_run(store: Store) -> None:
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
        MessageState.UNSUBSCRIBED: 0,
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


async def test_lease_is_held_until_released_or_its_heartbeat_expires(store: Store) -> None:
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


# --- worker leases -------------------------------------------------------------------


async def claim_as(store: Store, owner: str, *, now: float) -> int:
    """Claim the next example.com message as ``owner``; its id."""
    message = await store.claim(RUN, "example.com", now=now, owner=owner)
    assert message is not None
    return message.id


async def test_workers_hold_leases_listed_with_host_pid_and_heartbeat(store: Store) -> None:
    """A registered worker is listed while it heartbeats, and not once its lease expired."""
    await store.register_worker("a:1/x", host="a", pid=1, now=T0)
    await store.register_worker("b:2/y", host="b", pid=2, now=T0 + 5)
    assert await store.worker_heartbeat("a:1/x", now=T0 + 10)
    listed = await store.workers(T0 + 20)
    assert [(w.owner, w.host, w.pid, w.heartbeat_at) for w in listed] == [
        ("a:1/x", "a", 1, T0 + 10),
        ("b:2/y", "b", 2, T0 + 5),
    ]
    assert [w.owner for w in await store.workers(T0 + 36)] == ["a:1/x"]
    assert not await store.worker_heartbeat("nobody", now=T0 + 36)
    await store.release_worker("a:1/x")
    assert not await store.worker_heartbeat("a:1/x", now=T0 + 37)
    assert await store.workers(T0 + 37) == []


async def test_a_worker_that_heartbeats_keeps_its_claims_however_long_the_send_takes(
    store: Store,
) -> None:
    """Only an expired lease loses its claims: a slow but live worker keeps them."""
    await store.add_rows(RUN, rows(range(2, 4)))
    await store.register_worker("slow", host="h", pid=1, now=T0)
    slow = await claim_as(store, "slow", now=T0)
    for minute in range(1, 61):  # an hour-long send, heartbeat every 20 s
        for beat in (0, 20, 40):
            now = T0 + minute * 60 + beat
            assert await store.worker_heartbeat("slow", now=now)
            assert await store.reclaim_expired(now=now + 29) == 0
    assert (await store.counts(RUN))[MessageState.SENDING] == 1
    assert await store.record(slow, sent(T0 + 3700), owner="slow")
    assert (await store.counts(RUN))[MessageState.SENT] == 1


async def test_an_expired_worker_has_its_claims_taken_back_and_its_lease_refused(
    store: Store,
) -> None:
    """Past the ttl, the claims go back (attempt counted), and the heartbeat says stop."""
    await store.add_rows(RUN, rows(range(2, 5)))
    await store.register_worker("dead", host="h", pid=1, now=T0)
    await store.register_worker("live", host="h", pid=2, now=T0)
    dead = [await claim_as(store, "dead", now=T0) for _ in range(2)]
    live = await claim_as(store, "live", now=T0)
    assert await store.worker_heartbeat("live", now=T0 + 25)
    assert await store.reclaim_expired(now=T0 + 30) == 0  # not earlier than the ttl
    assert await store.reclaim_expired(now=T0 + 31) == 2  # the default ttl is 30 s
    assert await store.reclaim_expired(now=T0 + 31) == 0
    assert not await store.worker_heartbeat("dead", now=T0 + 32)
    counts = await store.counts(RUN)
    assert (counts[MessageState.QUEUED], counts[MessageState.SENDING]) == (2, 1)
    again = await store.claim(RUN, "example.com", now=T0 + 40, owner="live")
    assert again is not None
    assert (again.id, again.attempts) == (dead[0], 2)
    assert await store.record(live, sent(T0 + 41), owner="live")


async def test_a_reclaimed_claim_whose_address_was_corrected_is_failed(store: Store) -> None:
    """As after a crash: a message replaced while it was sent never goes to the old address."""
    await store.add_rows(RUN, rows(range(2, 3)))
    await store.register_worker("dead", host="h", pid=1, now=T0)
    old = await claim_as(store, "dead", now=T0)
    corrected = person(2, "fixed.example")
    await store.add_rows(RUN, [NewRow(row=2, participant=corrected, replaces=True)])
    assert await store.reclaim_expired(now=T0 + 60) == 1
    failed = await store.message(old)
    assert failed is not None
    assert (failed.state, failed.email) == (MessageState.FAILED, "user2@example.com")
    current = await store.lookup(RUN, "p2")
    assert current is not None
    assert (current.state, current.email) == (MessageState.QUEUED, "user2@fixed.example")


async def test_a_late_outcome_of_a_claim_taken_back_is_recorded_once(store: Store) -> None:
    """A claims, A expires, B re-claims and sends; A's late report is dropped, not recorded."""
    await store.add_rows(RUN, rows(range(2, 3)))
    await store.register_worker("A", host="a", pid=1, now=T0)
    message = await claim_as(store, "A", now=T0)
    await store.register_worker("B", host="b", pid=2, now=T0 + 40)
    assert await store.reclaim_expired(now=T0 + 40) == 1
    assert await claim_as(store, "B", now=T0 + 41) == message
    assert await store.record(message, sent(T0 + 42, "<b@example.com>"), owner="B")
    late = Outcome(state=MessageState.FAILED, at=T0 + 43, detail="A's connection dropped")
    assert not await store.record(message, late, owner="A")
    assert await store.record_many([(message, sent(T0 + 44))], owner="A") == [message]
    log = await store.attempts(message)
    assert [(a.number, a.state) for a in log] == [(2, MessageState.SENT)]
    stored = await store.message(message)
    assert stored is not None
    assert (stored.state, stored.message_id) == (MessageState.SENT, "<b@example.com>")


async def test_a_worker_whose_lease_was_taken_back_claims_nothing_more(store: Store) -> None:
    """Once reclaimed, a worker's new claims would be taken back and sent again by others:
    the store refuses them, so duplicates stay bounded by what it had in flight."""
    await store.add_rows(RUN, rows(range(2, 4)))
    await store.register_worker("A", host="a", pid=1, now=T0)
    first = await claim_as(store, "A", now=T0)
    assert await store.reclaim_expired(now=T0 + 40) == 1
    assert await store.claim(RUN, "example.com", now=T0 + 41, owner="A") is None
    assert await store.claim_many(RUN, ["example.com"], now=T0 + 41, owner="A") == [None]
    assert (await store.counts(RUN))[MessageState.QUEUED] == 2
    assert await claim_as(store, "B", now=T0 + 42) == first
    await store.register_worker("A", host="a", pid=1, now=T0 + 50)  # a fresh lease
    assert await claim_as(store, "A", now=T0 + 51) != first


async def test_each_lease_is_judged_by_its_own_ttl(store: Store) -> None:
    """A 60 s lease keeps its claims at 40 s without a heartbeat; a 5 s one loses them at 6 s,
    whoever asks: the ttl is the lease's, not the reclaimer's."""
    await store.add_rows(RUN, rows(range(2, 4)))
    await store.register_worker("long", host="h", pid=1, now=T0, ttl=60.0)
    await store.register_worker("short", host="h", pid=2, now=T0, ttl=5.0)
    await claim_as(store, "long", now=T0)
    await claim_as(store, "short", now=T0)
    assert await store.reclaim_expired(now=T0 + 5) == 0
    assert [w.owner for w in await store.workers(T0 + 6)] == ["long"]
    assert await store.reclaim_expired(now=T0 + 6) == 1
    assert await store.reclaim_expired(now=T0 + 40) == 0
    assert (await store.workers(T0 + 40))[0].ttl == 60.0
    assert await store.reclaim_expired(now=T0 + 61) == 1


async def test_a_lease_taken_back_is_forgotten_after_a_day(store: Store) -> None:
    """The workers table does not grow for ever: a day after its lease was taken back, a
    worker's name is free again (its claims are no longer refused)."""
    await store.add_rows(RUN, rows(range(2, 4)))
    await store.register_worker("A", host="a", pid=1, now=T0)
    await claim_as(store, "A", now=T0)
    assert await store.reclaim_expired(now=T0 + 40) == 1
    assert await store.claim(RUN, "example.com", now=T0 + 41, owner="A") is None
    await store.reclaim_expired(now=T0 + 40 + 86_400 + 1)
    assert await store.claim(RUN, "example.com", now=T0 + 86_442, owner="A") is not None


async def test_dropped_outcomes_do_not_lose_the_others_in_the_batch(store: Store) -> None:
    """An owner's batch stores what it still holds and names what it no longer does."""
    await store.add_rows(RUN, rows(range(2, 6)))
    mine = [await claim_as(store, "A", now=T0) for _ in range(2)]
    theirs = await claim_as(store, "B", now=T0)
    batch = [(mine[0], sent()), (theirs, sent()), (mine[1], sent()), (mine[1], sent(T0 + 1))]
    assert await store.record_many(batch, owner="A") == [theirs, mine[1]]
    counts = await store.counts(RUN)
    assert (counts[MessageState.SENT], counts[MessageState.SENDING]) == (2, 1)
    assert [a.at for a in await store.attempts(mine[1])] == [T0]
    with pytest.raises(KeyError):
        await store.record_many([(theirs, sent()), (999_999, sent())], owner="B")
    assert (await store.counts(RUN))[MessageState.SENDING] == 1


async def test_a_reclaimed_message_keeps_its_id_and_message_id(store: Store) -> None:
    """Every re-send is the same outbox message, so it carries the same Message-ID."""
    await store.add_rows(RUN, rows(range(2, 3)))
    await store.register_worker("A", host="a", pid=1, now=T0)
    first = await store.claim(RUN, "example.com", now=T0, owner="A")
    assert first is not None
    deferred = Outcome(
        state=MessageState.DEFERRED,
        at=T0 + 1,
        next_attempt_at=T0 + 2,
        message_id="<first@example.com>",
    )
    assert await store.record(first.id, deferred, owner="A")
    retried = await store.claim(RUN, "example.com", now=T0 + 2, owner="A")
    assert retried is not None
    assert await store.reclaim_expired(now=T0 + 100) == 1
    again = await store.claim(RUN, "example.com", now=T0 + 101, owner="B")
    assert again is not None
    assert (again.id, again.message_id, again.attempts) == (first.id, "<first@example.com>", 3)


async def test_releasing_a_worker_puts_its_unstarted_claims_back_uncounted(store: Store) -> None:
    """A worker stopping gracefully gives back what it never started, as if never claimed."""
    await store.add_rows(RUN, rows(range(2, 5)))
    await store.register_worker("A", host="a", pid=1, now=T0)
    done, unstarted = [await claim_as(store, "A", now=T0) for _ in range(2)]
    other = await claim_as(store, "B", now=T0)
    assert await store.record(done, sent(), owner="A")
    assert await store.release_worker("A") == 1
    assert await store.workers(T0) == []
    counts = await store.counts(RUN)
    assert (counts[MessageState.QUEUED], counts[MessageState.SENDING]) == (1, 1)
    again = await store.claim(RUN, "example.com", now=T0 + 5, owner="C")
    assert again is not None
    assert (again.id, again.attempts, again.first_attempt_at) == (unstarted, 1, T0 + 5)
    assert other != again.id


async def test_a_closed_store_raises_configuration_error(open_store: Opener) -> None:
    """Using a store after aclose is a clear error, not a sqlite3 exception."""
    store = open_store()
    await store.aclose()
    await store.aclose()
    with pytest.raises(ConfigurationError, match="closed"):
        await store.latest_run()


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
    backend: Backend  # set per backend by the test

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.loop = asyncio.new_event_loop()
        self.store = self.backend(self.dir / "outbox.sqlite3")
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
        self.call(self.store.aclose())
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
        self.call(self.store.aclose())
        self.store = self.backend(self.dir / "outbox.sqlite3")
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


@pytest.mark.slow
def test_random_operations_keep_the_outbox_consistent(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    """Under any sequence of operations, counts add up and no message is claimed twice."""
    # A PostgreSQL step is a round trip over TCP: half the examples keep it near SQLite's time.
    examples = 30 if request.node.callspec.id == "postgres" else 60
    run_state_machine_as_test(
        type("Machine", (OutboxMachine,), {"backend": staticmethod(backend)}),
        settings=settings(max_examples=examples, stateful_step_count=30, deadline=None),
    )


async def test_lookup_tells_where_one_participant_stands(store: Store) -> None:
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


async def test_unrenderable_message_can_be_recorded_as_skipped(store: Store) -> None:
    """A message that cannot be composed at send time ends as skipped, with the reason."""
    await store.add_rows(RUN, rows(range(1, 2)), complete=True)
    claimed = await store.claim(RUN, "example.com", now=T0, owner="w:1")
    assert claimed is not None
    await store.record(claimed.id, Outcome(MessageState.SKIPPED, at=T0, detail="no 'room'"))
    assert (await store.counts(RUN))[MessageState.SKIPPED] == 1
    assert await store.pending_domains(RUN, now=T0 + 1e6) == {}


# --- calendar events ---------------------------------------------------------------------


async def send_event_run(
    store: Store, run_id: str, numbers: range, *, sequence: int, method: str
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


async def test_event_record_round_trips(open_store: Opener) -> None:
    """An event's record comes back as saved; saving again replaces it."""
    async with aclosing(open_store()) as store:
        record = EventRecord("ev@x", "PY101", 0, "f0", '{"summary": "S"}', updated_at=T0)
        await store.save_event(record)
        assert await store.get_event("ev@x") == record
        changed = EventRecord(
            "ev@x", "PY101", 1, "f1", "{}", cancelled=True, changes=("time", "place")
        )
        await store.save_event(changed)
        assert await store.get_event("ev@x") == changed
        assert await store.get_event("other@x") is None


async def test_invitations_are_the_sent_messages_of_the_event_runs(open_store: Opener) -> None:
    """Each attendee's last SEQUENCE and method come from the event's sent messages."""
    async with aclosing(open_store()) as store:
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


async def test_queued_event_messages_are_not_invitations(open_store: Opener) -> None:
    """A message not sent yet has invited nobody."""
    async with aclosing(open_store()) as store:
        await store.create_run(
            "invite", template="invite", source="e", now=T0, event=("ev@x", 0, "REQUEST")
        )
        await store.add_rows("invite", rows(range(1, 3)), complete=True)
        assert await store.invitations("ev@x") == []


async def test_the_same_answer_is_kept_once(open_store: Opener) -> None:
    """Ingesting one reply twice keeps one answer, with or without a DTSTAMP."""
    async with aclosing(open_store()) as store:
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


# --- bounces --------------------------------------------------------------------------


async def test_a_bounce_is_kept_once_by_its_fingerprint_under_its_address_key(
    store: Store,
) -> None:
    """add_bounce keeps each fingerprint once, the address as its canonical key, oldest first."""
    assert await store.add_bounce(bounce(2, "Ada@Example.ORG", at=T0 + 5))
    assert not await store.add_bounce(bounce(2, "other@example.org"))
    assert await store.add_bounce(bounce(1, None, message=7, forged=True))
    kept = await store.bounces()
    assert [(b.fingerprint, b.address, b.forged) for b in kept] == [
        ("b1", None, True),
        ("b2", "ada@example.org", False),
    ]
    assert kept[1] == bounce(2, "ada@example.org", at=T0 + 5)
    assert [b.fingerprint for b in await store.bounces(since=T0 + 1)] == ["b2"]


async def test_bounces_can_be_read_by_reason(store: Store) -> None:
    """bounces(reasons=...) keeps only those reasons, in the window, oldest first."""
    await store.add_bounce(bounce(1, at=T0, reason="auth_failure"))
    await store.add_bounce(bounce(2, at=T0 + 1, reason="user_unknown"))
    await store.add_bounce(bounce(3, at=T0 + 2, reason="blocked"))
    wanted = {"auth_failure", "blocked"}
    assert [b.fingerprint for b in await store.bounces(reasons=wanted)] == ["b1", "b3"]
    assert [b.fingerprint for b in await store.bounces(since=T0 + 1, reasons=wanted)] == ["b3"]
    assert await store.bounces(reasons=()) == []


async def test_soft_bounces_count_in_the_window_once_per_message_until_a_delivery(
    store: Store,
) -> None:
    """count_bounces: only the window, never forged, copies once; a delivery forgives before it."""
    soft = {"kind": "soft", "status": "4.2.2", "reason": "mailbox_full"}
    for n, at in ((1, T0 - 9 * DAY), (2, T0 - 2 * DAY), (3, T0 - DAY), (4, T0 - 3600)):
        await store.add_bounce(bounce(n, "user2@example.com", at=at, **soft))
    await store.add_bounce(bounce(5, "USER2@example.com", at=T0 - 60, message=9, **soft))
    await store.add_bounce(bounce(6, "user2@example.com", at=T0 - 50, message=9, **soft))
    await store.add_bounce(bounce(7, "user2@example.com", at=T0 - 40, forged=True, **soft))
    await store.add_bounce(bounce(8, "user2@example.com", at=T0 - 30))  # another reason
    count = store.count_bounces
    full = {"mailbox_full", "suspended"}
    assert await count("User2@Example.com", reasons=full, since=T0 - 7 * DAY) == 4
    assert await count("user2@example.com", reasons={"user_unknown"}, since=T0 - 7 * DAY) == 1
    assert await count("user2@example.com", reasons=(), since=T0 - 7 * DAY) == 0
    await deliver(store, range(2, 3), at=T0 - 1800)
    assert await count("user2@example.com", reasons=full, since=T0 - 7 * DAY) == 1
    assert await count("user3@example.com", reasons=full, since=0) == 0


async def test_a_message_and_the_participants_bounces_are_about(store: Store) -> None:
    """message() names a return path's message; participants_by_address the last owner by key."""
    await store.add_rows(RUN, rows(range(2, 4)))
    claimed = await store.claim(RUN, "example.com", now=T0, owner="w")
    assert claimed is not None
    found = await store.message(claimed.id)
    assert found is not None
    assert (found.run_id, found.row, found.email, found.participant_id) == (
        RUN,
        2,
        "user2@example.com",
        "p2",
    )
    assert await store.message(claimed.id + 1000) is None
    await store.create_run("later", template="invitation", source="p.csv", now=T0 + 1)
    moved = Participant("user2@example.com", "Renamed", "p2", "PY102", locale="nb")
    await store.add_rows("later", [NewRow(row=2, participant=moved)])
    owners = await store.participants_by_address(["USER2@example.com", "user3@example.com", "x@y"])
    assert owners == {"user2@example.com": moved, "user3@example.com": person(3)}
    assert await store.participants_by_address([]) == {}


# --- the budget -----------------------------------------------------------------------


async def test_the_budget_counts_hard_bounced_addresses_and_sent_messages_in_its_window(
    store: Store,
) -> None:
    """hard_bounces_since: distinct addresses (or messages), not forged; sent_since: attempts."""
    await store.add_bounce(bounce(1, "a@x.example", at=T0 - 10))
    await store.add_bounce(bounce(2, "A@x.example", at=T0 - 5))  # the same address
    await store.add_bounce(bounce(3, "b@x.example", at=T0 - DAY - 1))  # before the window
    await store.add_bounce(bounce(4, "c@x.example", at=T0, forged=True))
    await store.add_bounce(bounce(5, "d@x.example", at=T0, kind="soft"))
    await store.add_bounce(bounce(6, None, at=T0, message=1))
    await store.add_bounce(bounce(7, None, at=T0, message=1))  # a copy: the same message
    await store.add_bounce(bounce(8, None, at=T0))
    assert await store.hard_bounces_since(T0 - DAY) == 3
    assert await store.hard_bounces_since(T0 + 1) == 0
    await deliver(store, range(2, 5), at=T0 - 100)
    assert await store.sent_since(T0 - DAY) == 3
    assert await store.sent_since(T0 - 99) == 0


async def test_volume_counts_mail_sent_per_day_and_mail_still_to_send(store: Store) -> None:
    """sent_per_day: accepted mail per UTC day to the domains asked; pending_to: unsent mail."""
    first = int(T0 // DAY)
    await deliver(store, range(2, 5), at=T0, domain="gmail.com")
    await deliver(store, range(5, 7), at=T0 + 60, domain="googlemail.com")
    await deliver(store, range(7, 8), at=T0, domain="example.com")
    await deliver(store, range(8, 10), at=T0 + DAY, domain="gmail.com")
    await store.add_rows(RUN, rows(range(10, 14), "gmail.com") + rows(range(14, 15), "gmail.com"))
    claimed = await store.claim(RUN, "gmail.com", now=T0 + DAY, owner="w")
    assert claimed is not None  # in flight: still to send
    gmail = ["gmail.com", "googlemail.com", "gmail.com"]
    assert await store.sent_per_day(gmail, since=T0 - DAY) == [
        DailySent(first, "gmail.com", 3),
        DailySent(first, "googlemail.com", 2),
        DailySent(first + 1, "gmail.com", 2),
    ]
    assert [d.date for d in await store.sent_per_day(gmail, since=T0 + 61)] == ["2023-11-15"]
    assert await store.sent_per_day([], since=0) == []
    assert await store.pending_to([*gmail, "example.com"]) == {"gmail.com": 5}
    await store.set_run_state(RUN, RunState.PAUSED, now=T0 + DAY, reason="test")
    assert await store.pending_to(gmail) == {"gmail.com": 5}  # a paused run may resume
    await store.set_run_state(RUN, RunState.DONE, now=T0 + DAY)
    assert await store.pending_to(gmail) == {}


# --- the suppression list -------------------------------------------------------------


async def test_suppression_is_by_canonical_key_and_reversible(store: Store) -> None:
    """suppress once per key; suppressed answers by key; unsuppress only what is listed."""
    assert await store.suppress("Ada@Example.ORG", kind="hard", reason="5.1.1", now=T0)
    assert not await store.suppress("ada@example.org", kind="manual", reason="again", now=T0 + 1)
    found = await store.suppressed(["ADA@example.org", "grace@example.org"])
    assert list(found) == ["ada@example.org"]
    assert (found["ada@example.org"].kind, found["ada@example.org"].since) == ("hard", T0)
    assert await store.suppressed([]) == {}
    await store.suppress("grace@example.org", kind="complaint", reason="spam", now=T0 - 1)
    assert [s.address for s in await store.suppressions()] == [
        "grace@example.org",
        "ada@example.org",
    ]
    assert await store.unsuppress("ADA@example.org", reason="fixed", now=T0 + 2)
    assert not await store.unsuppress("ada@example.org", reason="fixed", now=T0 + 3)
    assert await store.suppressed(["ada@example.org"]) == {}


async def test_a_claim_says_whether_its_address_is_suppressed(store: Store) -> None:
    """The claimed message carries the suppression's kind and reason, checked by key."""
    await store.add_rows(RUN, rows(range(2, 4)))
    await store.suppress("USER2@example.com", kind="hard", reason="5.1.1 unknown", now=T0)
    first = await store.claim(RUN, "example.com", now=T0, owner="w")
    second = await store.claim(RUN, "example.com", now=T0, owner="w")
    assert first is not None
    assert second is not None
    assert (first.suppressed, second.suppressed) == ("hard: 5.1.1 unknown", None)


# --- webhook events -------------------------------------------------------------------


async def test_outcomes_keep_their_webhook_events_with_the_ids_an_lms_joins_on(
    store: Store,
) -> None:
    """message.sent / deferred / failed, in order, each naming run, participant, course and
    Message-ID, with a webhook-id of its own; a dropped outcome keeps no event."""
    await store.add_rows(RUN, rows(range(2, 5)))
    claimed = await store.claim_many(RUN, ["example.com"] * 3, now=T0, owner="w")
    a, b, c = (m for m in claimed if m is not None)
    deferred = Outcome(state=MessageState.DEFERRED, at=T0 + 1, next_attempt_at=T0 + 60)
    failed = Outcome(state=MessageState.FAILED, at=T0 + 2, reply=SmtpReply(550, "5.1.1", "no"))
    dropped = await store.record_many(
        [(a.id, sent(message_id="<a@x>")), (b.id, deferred), (c.id, failed), (c.id, sent())],
        owner="w",
    )
    assert dropped == [c.id]
    events = await store.hook_events()
    assert [e.type for e in events] == ["message.sent", "message.deferred", "message.failed"]
    assert events[0].data == {
        "run_id": RUN,
        "participant_id": "p2",
        "course_id": "PY101",
        "message_id": "<a@x>",
        "email": "user2@example.com",
    }
    assert len({e.event_id for e in events}) == 3
    assert all(e.event_id.startswith("msg_") for e in events)
    body = events[0].body().decode()
    assert '"type":"message.sent"' in body
    assert "queued as 1" not in body  # the server's reply is no part of it
    assert [e.id for e in await store.hook_events(after=events[0].id, limit=1)] == [events[1].id]


async def test_webhook_ids_are_unique_and_sort_by_when_the_event_was_kept(
    store: Store,
) -> None:
    """Events kept a few milliseconds apart: their webhook-ids sort in that order (an LMS
    may sort by them), and no two are alike."""
    ids = []
    for number in range(3):
        event = await store.add_hook_event("message.sent", {"run_id": f"r{number}"}, now=T0)
        ids.append(event.event_id)
        await asyncio.sleep(0.003)
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert all(id_.startswith("msg_") and len(id_) == 36 for id_ in ids)


async def test_outcomes_that_roll_back_keep_no_event(store: Store) -> None:
    await store.add_rows(RUN, rows(range(2, 3)))
    message = await store.claim(RUN, "example.com", now=T0, owner="w")
    assert message is not None
    with pytest.raises(KeyError):
        await store.record_many([(message.id, sent()), (999, sent())])
    assert await store.hook_events() == []


async def test_a_bounce_keeps_one_event_and_a_suppression_another(store: Store) -> None:
    """message.bounced for a bounce naming its message (kept once, however often it is
    ingested), message.complained for a complaint, none for a forged one or an
    auto-reply; address.suppressed when an address is added, not when it was there."""
    await deliver(store, range(2, 3), at=T0)
    (sent_event,) = await store.hook_events()
    message = await store.lookup(RUN, "p2")
    assert message is not None
    assert await store.add_bounce(bounce(1, "user2@example.com", message=message.id))
    assert not await store.add_bounce(bounce(1, "user2@example.com", message=message.id))
    await store.add_bounce(bounce(2, kind="complaint", participant_id="p9"))
    await store.add_bounce(bounce(3, forged=True))
    await store.add_bounce(bounce(4, kind="autoreply"))
    assert await store.suppress("User2@Example.com", kind="hard", reason="5.1.1", now=T0)
    assert not await store.suppress("user2@example.com", kind="hard", reason="5.1.1", now=T0)
    events = await store.hook_events(after=sent_event.id)
    assert [e.type for e in events] == [
        "message.bounced",
        "message.complained",
        "address.suppressed",
    ]
    assert events[0].data == {
        "run_id": RUN,
        "participant_id": "p2",
        "course_id": "PY101",
        "email": "user2@example.com",
        "kind": "hard",
        "reason": "user_unknown",
        "status": "5.1.1",
    }
    assert events[1].data["participant_id"] == "p9"
    assert events[2].data == {"email": "user2@example.com", "kind": "hard", "reason": "5.1.1"}


async def test_a_run_paused_or_finished_keeps_one_event_per_change(store: Store) -> None:
    await store.set_run_state(RUN, RunState.PAUSED, now=T0, reason="bounce budget")
    await store.set_run_state(RUN, RunState.PAUSED, now=T0 + 1, reason="bounce budget")
    await store.set_run_state(RUN, RunState.ACTIVE, now=T0 + 2)
    await store.set_run_state(RUN, RunState.DONE, now=T0 + 3)
    events = await store.hook_events()
    assert [(e.type, e.at) for e in events] == [("run.paused", T0), ("run.finished", T0 + 3)]
    assert events[0].data == {"run_id": RUN, "reason": "bounce budget"}
    assert events[1].data == {"run_id": RUN}


async def test_an_event_of_ones_own_is_kept_in_order(store: Store) -> None:
    await deliver(store, range(2, 3), at=T0)
    added = await store.add_hook_event(
        "rsvp.answered", {"participant_id": "p2", "outcome": "accepted"}, now=T0 + 5
    )
    assert added.data == {"participant_id": "p2", "outcome": "accepted"}
    assert (await store.hook_events())[-1] == added


async def test_deliveries_are_claimed_once_retried_given_up_and_replayed(
    open_store: Opener,
) -> None:
    """Each endpoint gets the events it wants once; a claim is one process's; a retry
    keeps the event (its webhook-id); a disabled endpoint gets nothing until a replay."""
    url, other = "https://lms.example.org/a", "https://lms.example.org/b"
    async with aclosing(open_store()) as store, aclosing(open_store()) as second:
        sent_event = await store.add_hook_event("message.sent", {"run_id": RUN}, now=T0)
        await store.add_hook_event("run.finished", {"run_id": RUN}, now=T0 + 1)
        assert await store.hook_fan_out(url, ["message.sent"], now=T0 + 2) == 1
        assert await store.hook_fan_out(url, ["message.sent"], now=T0 + 2) == 0
        assert await store.hook_fan_out(other, ["message.sent", "run.finished"], now=T0 + 2) == 2
        claimed = await store.claim_hook_deliveries(url, now=T0 + 2, until=T0 + 60, limit=10)
        assert [(e.event_id, n) for e, n in claimed] == [(sent_event.event_id, 0)]
        assert await second.claim_hook_deliveries(url, now=T0 + 3, until=T0 + 60, limit=10) == []
        await store.hook_retry(url, sent_event.id, due_at=T0 + 5, status=500, error=None)
        again = await second.claim_hook_deliveries(url, now=T0 + 5, until=T0 + 60, limit=10)
        assert [(e.event_id, n) for e, n in again] == [(sent_event.event_id, 1)]
        await store.hook_retry(url, sent_event.id, due_at=None, status=None, error="ConnectError")
        await store.hook_delivered(other, sent_event.id, status=204)
        await store.disable_hook_endpoint(other, now=T0 + 6, reason="410 Gone")
        assert await store.claim_hook_deliveries(other, now=T0 + 9, until=T0 + 60, limit=10) == []
        states = {e.url: e for e in await store.hook_endpoints()}
        assert (states[url].failed, states[url].pending) == (1, 0)
        assert (states[other].delivered, states[other].pending) == (1, 1)
        assert states[other].disabled_reason == "410 Gone"
        assert await store.replay_hook_events(other, since=T0, now=T0 + 10) == 2
        replayed = await store.claim_hook_deliveries(other, now=T0 + 10, until=T0 + 60, limit=10)
        assert [e.type for e, _ in replayed] == ["message.sent", "run.finished"]


async def test_an_answer_that_counts_keeps_one_rsvp_answered_event(store: Store) -> None:
    answer = RsvpRecord(
        "ev@x", "ada@example.org", "ACCEPTED", 2, T0, "recorded", participant_id="p2"
    )
    assert await store.add_rsvp(answer)
    assert not await store.add_rsvp(answer)
    await store.add_rsvp(RsvpRecord("ev@x", "eve@example.org", "DECLINED", 2, T0, "stale"))
    (event,) = await store.hook_events()
    assert event.type == "rsvp.answered"
    assert event.data == {
        "participant_id": "p2",
        "email": "ada@example.org",
        "event_uid": "ev@x",
        "partstat": "ACCEPTED",
        "sequence": "2",
    }


async def test_pruning_forgets_old_events_but_not_a_pending_delivery(store: Store) -> None:
    url = "https://lms.example.org/a"
    old = await store.add_hook_event("run.finished", {"run_id": "old"}, now=T0)
    waiting = await store.add_hook_event("run.finished", {"run_id": "waiting"}, now=T0 + 1)
    new = await store.add_hook_event("run.finished", {"run_id": "new"}, now=T0 + 10 * DAY)
    await store.hook_fan_out(url, ["run.finished"], now=T0 + 2)
    await store.hook_delivered(url, old.id, status=200)
    assert await store.prune_hook_events(before=T0 + DAY) == 1
    assert [e.id for e in await store.hook_events()] == [waiting.id, new.id]


# --- login codes ----------------------------------------------------------------------------

WINDOW = 900.0


def login_code(n: int, *, address: str = "user1@example.com", expires_at: float = T0 + DAY):
    """A kept code's record (its digest made up: the store compares nothing, it keeps)."""
    from sender.models import LoginCode

    return LoginCode(
        address=address,
        digest=f"{n:032x}",
        participant_id=f"p{n}",
        course_id="PY101",
        purpose="login",
        next="/courses/1" if n % 2 else None,
        issued_at=T0,
        expires_at=expires_at,
    )


async def test_kept_codes_are_read_back_for_their_address_until_they_expire(
    store: Store,
) -> None:
    """keep_codes stores records once; login_codes gives an address's unexpired ones."""
    first, second = login_code(1), login_code(2, expires_at=T0 + 60)
    other = login_code(3, address="user3@example.com")
    await store.keep_codes([first, second, other])
    await store.keep_codes([first])  # kept again: still once
    assert sorted(await store.login_codes("user1@example.com", now=T0), key=str) == sorted(
        [first, second], key=str
    )
    assert await store.login_codes("user1@example.com", now=T0 + 61) == [first]
    assert await store.login_codes("nobody@example.com", now=T0) == []
    assert await store.prune_codes(before=T0 + 61) == 1
    assert await store.login_codes("user1@example.com", now=T0) == [first]


async def test_a_sent_outcome_keeps_its_code_in_the_same_write(store: Store) -> None:
    """record_many keeps the codes of sent outcomes, found for their address beside a single
    send's; a deferred one's is not kept."""
    await store.add_rows(RUN, rows(range(1, 3)))
    one = await store.claim(RUN, "example.com", now=T0, owner="w")
    two = await store.claim(RUN, "example.com", now=T0, owner="w")
    assert one is not None
    assert two is not None
    kept = replace(login_code(1), next=None)  # a run's links have no next path
    lost = login_code(2, address="user2@example.com")
    deferred = Outcome(MessageState.DEFERRED, at=T0, next_attempt_at=T0 + 60, code=lost)
    dropped = await store.record_many(
        [(one.id, Outcome(MessageState.SENT, at=T0, code=kept)), (two.id, deferred)], owner="w"
    )
    assert dropped == []
    assert await store.login_codes("user1@example.com", now=T0) == [kept]
    assert await store.login_codes("user2@example.com", now=T0) == []
    single = login_code(4)
    await store.keep_codes([single])
    both = await store.login_codes("user1@example.com", now=T0)
    assert sorted(both, key=repr) == sorted([kept, single], key=repr)
    assert await store.login_codes("user1@example.com", now=T0 + DAY + 1) == []


async def test_a_dropped_outcome_keeps_no_code(store: Store) -> None:
    """An outcome for a claim taken back is dropped, and its code with it."""
    await store.add_rows(RUN, rows(range(1, 2)))
    message = await store.claim(RUN, "example.com", now=T0, owner="w")
    assert message is not None
    outcome = Outcome(MessageState.SENT, at=T0, code=login_code(1))
    assert await store.record_many([(message.id, outcome)], owner="someone-else") == [message.id]
    assert await store.login_codes("user1@example.com", now=T0) == []


async def test_five_tries_pass_and_the_sixth_is_refused_until_the_window_ends(
    store: Store,
) -> None:
    """code_try lets five tries through, refuses the sixth with the lock's end, and lets
    tries through again once a window has passed since the fifth."""
    address = "user1@example.com"
    for n in range(5):
        assert await store.code_try(address, now=T0 + n, window=WINDOW, limit=5) is None
    assert await store.code_try(address, now=T0 + 10, window=WINDOW, limit=5) == T0 + 4 + WINDOW
    # refused tries do not stretch the lock
    assert await store.code_try(address, now=T0 + 800, window=WINDOW, limit=5) == T0 + 4 + WINDOW
    assert await store.code_try("user2@example.com", now=T0 + 10, window=WINDOW, limit=5) is None
    assert await store.code_try(address, now=T0 + 4 + WINDOW, window=WINDOW, limit=5) is None


async def test_the_right_code_clears_the_tries(store: Store) -> None:
    """After code_accepted an address has five tries again."""
    address = "user1@example.com"
    for n in range(4):
        assert await store.code_try(address, now=T0 + n, window=WINDOW, limit=5) is None
    await store.code_accepted(address)
    for n in range(5):
        assert await store.code_try(address, now=T0 + 10 + n, window=WINDOW, limit=5) is None
    assert await store.code_try(address, now=T0 + 20, window=WINDOW, limit=5) is not None


async def test_tries_from_two_stores_at_once_are_each_counted(open_store: Opener) -> None:
    """Forty concurrent tries through two stores on one database: exactly five pass."""
    async with aclosing(open_store()) as one, aclosing(open_store()) as two:
        results = await asyncio.gather(
            *(
                (one if n % 2 else two).code_try(
                    "user1@example.com", now=T0 + n / 100, window=WINDOW, limit=5
                )
                for n in range(40)
            )
        )
    assert sum(result is None for result in results) == 5


# --- streams and unsubscribes ------------------------------------------------------------

REMINDERS = "2026-11-remind"


async def test_a_run_keeps_its_stream(store: Store) -> None:
    """create_run stores the run's stream; a run created without one is transactional."""
    run, _ = await store.create_run(
        REMINDERS, template="reminder", source="p.csv", now=T0, stream="subscription"
    )
    assert run.stream == "subscription"
    plain = await store.get_run(RUN)
    assert plain is not None
    assert plain.stream == "transactional"


async def test_unsubscribe_is_kept_once_by_key_with_its_event(store: Store) -> None:
    """unsubscribe keeps the address by its canonical key per stream, once, with one
    address.unsubscribed event; other streams are untouched."""
    assert await store.unsubscribe(
        "User2@Example.COM", stream="subscription", how="one-click", now=T0, participant_id="p2"
    )
    assert not await store.unsubscribe(
        "user2@example.com", stream="subscription", how="mailto", now=T0 + 5
    )
    found = await store.unsubscribed(
        ["USER2@example.com", "user3@example.com"], stream="subscription"
    )
    assert list(found) == ["user2@example.com"]
    assert (found["user2@example.com"].how, found["user2@example.com"].at) == ("one-click", T0)
    assert await store.unsubscribed(["user2@example.com"], stream="transactional") == {}
    events = [e for e in await store.hook_events() if e.type == "address.unsubscribed"]
    assert len(events) == 1
    data = events[0].data
    assert (data["participant_id"], data["email"]) == ("p2", "user2@example.com")
    assert (data["stream"], data["how"]) == ("subscription", "one-click")
    assert [u.address for u in await store.unsubscribes()] == ["user2@example.com"]


async def test_a_claim_says_the_address_left_the_runs_stream(store: Store) -> None:
    """A claim in a subscription run names the unsubscribe; the same address in a
    transactional run is claimed plainly."""
    await store.create_run(
        REMINDERS, template="reminder", source="p.csv", now=T0, stream="subscription"
    )
    await store.unsubscribe("user2@example.com", stream="subscription", how="one-click", now=T0)
    await store.add_rows(REMINDERS, rows(range(2, 3)))
    await store.add_rows(RUN, rows(range(2, 3)))
    reminder = await store.claim(REMINDERS, "example.com", now=T0, owner="w")
    invitation = await store.claim(RUN, "example.com", now=T0, owner="w")
    assert reminder is not None
    assert invitation is not None
    assert reminder.unsubscribed == "one-click"
    assert invitation.unsubscribed is None
    await store.record(
        reminder.id, Outcome(state=MessageState.UNSUBSCRIBED, at=T0, detail="unsubscribed")
    )
    assert (await store.counts(REMINDERS))[MessageState.UNSUBSCRIBED] == 1


async def test_complaints_are_counted_per_stream_against_deliveries(store: Store) -> None:
    """complaints_by_stream is {} without complaints; with one, each stream's deliveries
    and complaints in the window (once per message, forged and old ones left out)."""
    await store.create_run(
        REMINDERS, template="reminder", source="p.csv", now=T0, stream="subscription"
    )
    await deliver(store, range(2, 6), at=T0)  # 4 invitations
    await store.add_rows(REMINDERS, rows(range(2, 5)))
    claimed = []
    for _ in range(3):
        message = await store.claim(REMINDERS, "example.com", now=T0, owner="w")
        assert message is not None
        await store.record(message.id, sent(T0))
        claimed.append(message.id)
    assert await store.complaints_by_stream(T0 - 10) == {}
    complaint = {"kind": "complaint", "reason": "complaint", "status": None}
    await store.add_bounce(bounce(1, "user2@example.com", message=claimed[0], **complaint))
    await store.add_bounce(bounce(2, "user2@example.com", message=claimed[0], **complaint))
    await store.add_bounce(
        bounce(3, "user3@example.com", message=claimed[1], forged=True, **complaint)
    )
    await store.add_bounce(
        bounce(4, "user4@example.com", message=claimed[2], at=T0 - DAY, **complaint)
    )
    assert await store.complaints_by_stream(T0 - 10) == {
        "subscription": (3, 1),
        "transactional": (4, 0),
    }


# --- Redemptions -------------------------------------------------------------------------


async def test_a_digest_is_redeemed_once_until_it_expires(store: Store) -> None:
    """The first redemption of a digest wins; later ones are refused while it is remembered."""
    assert not await store.is_redeemed("d1", now=T0)
    assert await store.redeem_once("d1", kind="link", expires_at=T0 + 60, now=T0)
    assert await store.is_redeemed("d1", now=T0 + 1)
    assert not await store.redeem_once("d1", kind="link", expires_at=T0 + 60, now=T0 + 1)
    assert await store.redeem_once("d2", kind="assertion", expires_at=T0 + 60, now=T0 + 1)


async def test_racing_redemptions_across_stores_let_exactly_one_win(open_store: Opener) -> None:
    """Two stores on one database (two processes) redeeming one digest: exactly one wins."""
    async with aclosing(open_store()) as one, aclosing(open_store()) as two:
        results = await asyncio.gather(
            *(
                opened.redeem_once("race", kind="link", expires_at=T0 + 60, now=T0)
                for _ in range(5)
                for opened in (one, two)
            )
        )
    assert sorted(results) == [False] * 9 + [True]


async def test_expired_redemptions_are_pruned(store: Store) -> None:
    """Rows past their expiry go, by prune_redemptions or by the next redemption."""
    await store.redeem_once("old", kind="link", expires_at=T0 + 10, now=T0)
    await store.redeem_once("older", kind="link", expires_at=T0 + 5, now=T0)
    await store.redeem_once("kept", kind="link", expires_at=T0 + DAY, now=T0)
    assert await store.prune_redemptions(now=T0 + 6) == 1
    assert await store.redeem_once("new", kind="link", expires_at=T0 + DAY, now=T0 + 11)
    assert not await store.is_redeemed("old", now=T0 + 11)
    assert await store.is_redeemed("kept", now=T0 + 11)
    assert await store.prune_redemptions(now=T0 + 11) == 0
