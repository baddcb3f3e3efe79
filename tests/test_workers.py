"""Bulk runs composed and sent by worker processes, against a real SMTP server."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from email import message_from_bytes, policy

import pytest

from sender import (
    ConfigurationError,
    Participant,
    WorkerError,
)
from sender.bulk.runner import BulkRunner, RunSettings
from sender.bulk.workers import Skipped, WorkerPool
from sender.pacing.schedule import RateLimits
from sender.store import MessageState, OutboxMessage, RunState, SqliteStore
from sender.testing import RecordingSMTPServer, Stage
from tests.bulk_helpers import (
    assert_paused_and_unsent,
    at_most,
    bulk_runner,
    recipients,
    started_run,
)
from tests.bulk_helpers import people as bulk_people
from tests.helpers import UNLIMITED, sender_settings

SETTINGS = sender_settings("w" * 32)


def people(count: int) -> list[Participant]:
    return bulk_people(count, domains=5)


def runner_for(
    server: RecordingSMTPServer,
    store: SqliteStore,
    *,
    workers: int = 2,
    concurrency: int = 4,
    limits: RateLimits = UNLIMITED,
    **smtp: object,
) -> BulkRunner:
    return bulk_runner(
        server,
        store,
        settings=SETTINGS,
        limits=limits,
        concurrency=concurrency,
        smtp=smtp,
        workers=workers,
    )


@pytest.mark.slow
async def test_workers_send_each_participant_once_with_verifiable_links(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Two worker processes deliver everyone once, with links the parent's keys verify."""
    group = people(60)
    runner = runner_for(smtp_server, store)
    report = await runner.run("r-workers", group)
    assert report.counts[MessageState.SENT] == 60
    assert report.run.state is RunState.DONE
    assert recipients(smtp_server) == Counter(p.email for p in group)
    message = message_from_bytes(smtp_server.messages[0].data, policy=policy.default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    url = next(word for word in text.split() if word.startswith("https://lms.example.com/"))
    claims = runner.sender.verify_link(url)
    assert claims.participant_id in {p.participant_id for p in group}
    record = await store.lookup("r-workers", claims.participant_id)
    assert record is not None
    assert record.message_id == message["Message-ID"]
    await runner.sender.aclose()


@pytest.mark.slow
async def test_workers_record_a_permanent_failure_and_deliver_the_rest(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A 550 seen by a worker is recorded as failed with its reply; the others are sent."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="user7@d2.example")
    runner = runner_for(smtp_server, store)
    report = await runner.run("r-550", people(20))
    await runner.sender.aclose()
    assert report.counts[MessageState.FAILED] == 1
    assert report.counts[MessageState.SENT] == 19
    ((_row, email, state, reason),) = await store.problems("r-550")
    assert (email, state) == ("user7@d2.example", MessageState.FAILED)
    assert "5.1.1" in reason


@pytest.mark.slow
async def test_refused_login_in_a_worker_pauses_the_run_and_loses_nothing(
    starttls_server: RecordingSMTPServer, store: SqliteStore, ca_file: str, smtp_user: str
) -> None:
    """A worker's refused login stops the run as a ConfigurationError; all stay queued."""
    runner = runner_for(
        starttls_server, store, username=smtp_user, password="wrong", ca_file=ca_file
    )
    with pytest.raises(ConfigurationError, match="refused the login"):
        await runner.run("r-login", people(8))
    await runner.sender.aclose()
    await assert_paused_and_unsent(store, starttls_server, "r-login", queued=8)


@pytest.mark.slow
async def test_killed_worker_pauses_the_run_and_a_resume_sends_the_rest(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """SIGKILL of a worker stops the run with WorkerError; resuming skips nobody."""
    group = people(300)
    # Slow replies keep messages in flight at both workers, so the one killed has some.
    smtp_server.delay(Stage.DATA, 0.02)
    runner = runner_for(smtp_server, store, limits=at_most(200))
    task = await started_run(runner, smtp_server, "r-kill", group, messages=30, within=60)
    pool = runner._pool
    assert pool is not None
    os.kill(pool.pids[0], signal.SIGKILL)
    with pytest.raises(WorkerError, match="worker 1"):
        await asyncio.wait_for(task, 60)
    await runner.sender.aclose()
    paused = await store.get_run("r-kill")
    assert paused is not None
    assert paused.state is RunState.PAUSED
    assert "worker 1" in (paused.paused_reason or "")
    assert (await store.counts("r-kill")).get(MessageState.SENDING, 0) == 0
    again = runner_for(smtp_server, store, limits=UNLIMITED)
    final = await again.run("r-kill")
    await again.sender.aclose()
    assert final.run.state is RunState.DONE
    received = recipients(smtp_server)
    assert set(received) == {p.email for p in group}, "somebody was skipped"
    assert sum(n - 1 for n in received.values()) <= 4  # at most what was in flight


async def test_pool_reports_an_unrenderable_message_as_skipped(
    smtp_server: RecordingSMTPServer,
) -> None:
    """A message whose template does not exist comes back Skipped with the reason, unsent."""
    message = OutboxMessage(
        id=1,
        run_id="r",
        row=1,
        participant=people(1)[0],
        template="no-such-template",
        domain="d0.example",
        attempts=1,
        first_attempt_at=None,
        message_id=None,
    )
    async with WorkerPool(SETTINGS, smtp_server.smtp_settings(), workers=1, concurrency=1) as pool:
        result = await pool.attempt(message)
    assert isinstance(result, Skipped)
    assert "no-such-template" in result.reason
    assert smtp_server.messages == ()


@pytest.mark.slow
async def test_pool_exits_its_processes_on_close(smtp_server: RecordingSMTPServer) -> None:
    """Closing the pool ends every worker process: none is left behind."""
    async with WorkerPool(SETTINGS, smtp_server.smtp_settings(), workers=2, concurrency=2) as pool:
        pids = pool.pids
        assert len(set(pids)) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_more_workers_than_concurrency_is_refused() -> None:
    """Each worker needs at least one connection: workers > concurrency is a setting error."""
    with pytest.raises(ConfigurationError, match="workers"):
        RunSettings(concurrency=2, workers=3)


def test_records_crossing_the_pipes_pickle_whole_and_positionally() -> None:
    """What the pipes carry each message (a claim one way, a result with its login code
    the other) comes back equal field by field, the code included (it is not compared)."""
    import pickle

    from sender.models import DeliveryResult, DeliveryStatus, LoginCode, SmtpReply

    person = Participant("ana@a.example", "Ana", "p-1", "PY101", "nb", {"course_name": "Py"})
    claim = OutboxMessage(7, "run-1", 3, person, "invitation", "a.example", 2, 1.5, "<m@x>")
    code = LoginCode("ana@a.example", "d1g", "p-1", "PY101", "invitation", "/c/1", 10.0, 20.0)
    result = DeliveryResult(
        "ana@a.example",
        "<m@x>",
        DeliveryStatus.PERMANENT,
        SmtpReply(550, "5.1.1", "no such user"),
        "refused",
        "p-1",
        "rcpt",
        code,
    )
    claim_back = pickle.loads(pickle.dumps(claim, protocol=5))  # noqa: S301 - our own bytes
    result_back = pickle.loads(pickle.dumps(result, protocol=5))  # noqa: S301 - our own bytes
    assert claim_back == claim
    assert claim_back.participant.vars == {"course_name": "Py"}
    assert result_back == result
    assert result_back.code == code
