"""A run's lease: renewed on its own timer while the run is held, on the injected clock."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sender import Participant, RunBusy, Sender
from sender.bulk.runner import BulkRunner, RunReport, RunSettings
from sender.bulk.status import run_status
from sender.config import BouncePolicy
from sender.errors import InputError
from sender.pacing.schedule import Scheduler
from sender.store import MessageState, RunState, SqliteStore
from sender.testing import ManualClock, RecordingSMTPServer, Stage
from sender.transport import SmtpTransport
from tests.helpers import (
    IDENTITY,
    UNLIMITED,
    hard_bounce,
    people_csv,
    sender_settings,
    smtp_url,
    spawn_sender,
    until,
)

SETTINGS = sender_settings()


def people(count: int) -> list[Participant]:
    return [Participant(f"user{i}@d.example", f"User {i}", f"p-{i}", "PY101") for i in range(count)]


def runner_for(
    server: RecordingSMTPServer,
    store: SqliteStore,
    *,
    clock: ManualClock | None = None,
    owner: str | None = None,
    **settings: object,
) -> BulkRunner:
    transport = SmtpTransport(server.smtp_settings(pool_size=1, timeout=10.0), clock=clock)
    return BulkRunner(
        Sender(SETTINGS, transport=transport, clock=clock),
        store,
        RunSettings(concurrency=1, **settings),  # type: ignore[arg-type]
        scheduler=Scheduler(UNLIMITED, clock=clock),
        clock=clock,
        owner=owner,
    )


async def busy_then_done(
    server: RecordingSMTPServer,
    run_id: str,
    first: BulkRunner,
    task: asyncio.Task[RunReport],
    second: BulkRunner,
    gate: asyncio.Event,
) -> None:
    """``second`` cannot take ``run_id`` while ``first`` holds it, mid-send until ``gate``
    lets the reply go; ``first`` then ends it alone."""
    with pytest.raises(RunBusy):
        await second.run(run_id)
    await second.sender.aclose()
    gate.set()
    report = await task
    await first.sender.aclose()
    assert report.run.state is RunState.DONE
    assert [r for m in server.messages for r in m.recipients] == ["user0@d.example"]


@pytest.mark.slow
async def test_slow_server_never_lets_another_runner_take_over(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A send slower than the lease keeps the run held: status says running, a resume is busy."""
    gate = smtp_server.hold(Stage.MAIL, times=1)  # a slow but working server
    ttl = 1.2
    first = runner_for(smtp_server, store, lease_ttl=ttl)
    task = asyncio.create_task(first.run("r-slow", people(1)))
    await until(lambda: smtp_server.connections_opened >= 1)
    await asyncio.sleep(2.5 * ttl)  # well past the lease, inside the first slow MAIL
    status = await run_status(store, "r-slow", now=time.time(), lease_ttl=ttl)
    assert status["running"] is True
    assert status["state"] == "active"
    second = runner_for(smtp_server, store, owner="elsewhere.example:1", lease_ttl=ttl)
    await busy_then_done(smtp_server, "r-slow", first, task, second, gate)


async def test_heartbeat_follows_the_injected_clock(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Advancing a manual clock past a third of the lease renews it, with no send finishing."""
    gate = smtp_server.hold(Stage.MAIL, times=1)
    clock = ManualClock(now=1_800_000_000.0)
    runner = runner_for(smtp_server, store, clock=clock, lease_ttl=30.0)
    task = asyncio.create_task(runner.run("r-clock", people(1)))
    await until(lambda: smtp_server.connections_opened >= 1)
    started = await store.get_run("r-clock")
    assert started is not None
    assert started.heartbeat_at == 1_800_000_000.0
    clock.advance(11.0)
    await clock.settle()  # the heartbeat has had its turn; the MAIL is still unanswered
    renewed = await store.get_run("r-clock")
    assert renewed is not None
    assert renewed.heartbeat_at == 1_800_000_011.0
    gate.set()
    report = await task
    await runner.sender.aclose()
    assert report.counts[MessageState.SENT] == 1


async def test_budget_check_follows_the_injected_clock(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """The bounce budget is checked when the manual clock passes budget_interval."""
    gate = smtp_server.hold(Stage.DATA, times=1)
    clock = ManualClock(now=1_800_000_000.0)
    runner = runner_for(
        smtp_server, store, clock=clock, bounces=BouncePolicy(budget=1), budget_interval=2.0
    )
    task = asyncio.create_task(runner.run("r-budget", people(6)))
    await until(lambda: smtp_server.connections_opened >= 1)
    await store.add_bounce(hard_bounce(clock.now()))
    clock.advance(3.0)
    await clock.settle()  # the budget check has had its turn, the first DATA still held
    gate.set()
    report = await task
    await runner.sender.aclose()
    assert report.run.state is RunState.PAUSED
    assert "bounce budget" in (report.run.paused_reason or "")
    assert len(smtp_server.messages) < 6


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def test_status_of_a_run_whose_owner_died_is_interrupted(store: SqliteStore) -> None:
    """A run left active by a process that no longer exists shows as interrupted, not running."""
    now = time.time()
    await store.create_run("r-dead", template="invitation", source="library", now=now)
    owner = f"{socket.gethostname()}:{_dead_pid()}"
    assert await store.acquire_run("r-dead", owner=owner, now=now, ttl=30)
    await store.set_run_state("r-dead", RunState.ACTIVE, now=now)
    status = await run_status(store, "r-dead", now=now + 1)
    assert status["state"] == "interrupted"
    assert status["running"] is False
    assert status["owner"] is None


async def test_status_of_a_run_with_a_lapsed_lease_is_interrupted(store: SqliteStore) -> None:
    """A run whose owner stopped renewing its lease is interrupted; a live one is active."""
    now = time.time()
    await store.create_run("r-gone", template="invitation", source="library", now=now)
    assert await store.acquire_run("r-gone", owner="elsewhere.example:7", now=now, ttl=30)
    await store.set_run_state("r-gone", RunState.ACTIVE, now=now)
    live = await run_status(store, "r-gone", now=now + 5)
    assert (live["state"], live["running"]) == ("active", True)
    lapsed = await run_status(store, "r-gone", now=now + 300)
    assert (lapsed["state"], lapsed["running"]) == ("interrupted", False)


async def _spawn(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    env = {"SENDER_SECRET_KEYS": "lease-test-key-0123456789abcdef", **IDENTITY}
    return await spawn_sender(tmp_path, *args, env=env, stderr=asyncio.subprocess.STDOUT)


async def _cli(tmp_path: Path, *args: str) -> tuple[int | None, str]:
    process = await _spawn(tmp_path, *args)
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    return process.returncode, output.decode()


@pytest.mark.slow
async def test_status_after_sigkill_says_interrupted_and_how_to_resume(
    smtp_server: RecordingSMTPServer, tmp_path: Path
) -> None:
    """`sender status` of a run whose process was SIGKILLed: interrupted, not active."""
    smtp_server.hang(Stage.MAIL)
    people_csv(tmp_path / "people.csv", ["a@d.example"])
    process = await _spawn(
        tmp_path,
        "run",
        "people.csv",
        "--smtp",
        smtp_url(smtp_server),
        "--no-validate",
        "--no-progress",
    )
    try:
        await until(lambda: smtp_server.connections_opened >= 1, seconds=30)
    finally:
        process.send_signal(signal.SIGKILL)
        await process.communicate()
    code, output = await _cli(tmp_path, "status", "--json")
    assert code == 0, output
    data = json.loads(output)
    assert (data["state"], data["running"]) == ("interrupted", False)
    code, output = await _cli(tmp_path, "status")
    assert "interrupted" in output
    assert f"sender resume {data['run_id']}" in output


async def test_a_second_runner_in_the_same_process_cannot_take_a_held_run(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Two runners in one process (an LMS calling twice) never both hold one run."""
    gate = smtp_server.hold(Stage.MAIL, times=1)
    first = runner_for(smtp_server, store)
    task = asyncio.create_task(first.run("r-twice", people(1)))
    await until(lambda: smtp_server.connections_opened >= 1)
    second = runner_for(smtp_server, store)
    assert second.owner != first.owner
    await busy_then_done(smtp_server, "r-twice", first, task, second, gate)


async def test_a_run_whose_ingest_failed_shows_as_interrupted(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Rows that stop with an error leave a run nobody sends: status says interrupted."""

    def rows() -> Iterator[Participant]:
        yield from people(2)
        raise InputError("the file went away", field="csv")

    runner = runner_for(smtp_server, store)
    with pytest.raises(InputError):
        await runner.run("r-broken", rows())
    await runner.sender.aclose()
    status = await run_status(store, "r-broken", now=time.time())
    assert status["state"] == "interrupted"
    assert status["running"] is False
