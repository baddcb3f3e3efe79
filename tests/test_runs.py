"""Durable bulk runs against a real SMTP server: once each, nobody skipped, retries, lanes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sender import (
    ConfigurationError,
    Participant,
    RunBusy,
    Sender,
    SenderSettings,
)
from sender.bulk.ingest import check_rows
from sender.bulk.runner import BulkRunner, RunSettings
from sender.bulk.status import run_status
from sender.config import BouncePolicy
from sender.pacing.schedule import RateLimits, RetryPolicy, Scheduler
from sender.participants import read_csv
from sender.store import MessageState, RunState, SqliteStore
from sender.testing import ManualClock, RecordingSMTPServer, Stage
from sender.transport import SmtpTransport
from tests.bulk_helpers import (
    assert_paused_and_unsent,
    at_most,
    bulk_runner,
    people,
    recipients,
    run_once,
    started_run,
)
from tests.helpers import UNLIMITED, sender_settings

SETTINGS = sender_settings()


async def test_each_participant_gets_one_message_and_a_rerun_sends_nothing(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A run sends once to everyone; running it again under the same id sends nothing."""
    group = people(40)
    report = await run_once(smtp_server, store, "r-1", group)
    assert report.counts[MessageState.SENT] == 40
    assert report.sent_now == 40
    assert report.run.state is RunState.DONE
    assert recipients(smtp_server) == Counter(p.email for p in group)
    second = await run_once(smtp_server, store, "r-1", group)
    assert second.sent_now == 0
    assert len(smtp_server.messages) == 40


async def test_bad_rows_are_skipped_with_row_and_reason(
    smtp_server: RecordingSMTPServer, store: SqliteStore, tmp_path: Path
) -> None:
    """Broken addresses, junk locales and duplicates are recorded, and the rest still go."""
    csv_path = tmp_path / "p.csv"
    csv_path.write_text(
        "email,name,participant_id,course_id,locale\n"
        "a@d1.example,A,p-1,c,en\n"
        "broken@,B,p-2,c,en\n"
        "c@d2.example,C,p-3,c,!!\n"
        "a2@d1.example,A twin,p-1,c,en\n"
        "e@d3.example,E,p-5,c,ja\n",
        encoding="utf-8",
    )
    runner = bulk_runner(smtp_server, store)
    report = await runner.run("r-bad", read_csv(csv_path), source=str(csv_path))
    await runner.sender.aclose()
    assert sorted(recipients(smtp_server)) == ["a@d1.example", "e@d3.example"]
    assert report.counts[MessageState.SKIPPED] == 3
    skipped = {row: reason for row, _email, reason in await store.skipped("r-bad")}
    assert set(skipped) == {3, 4, 5}
    assert "locale" in skipped[4]
    assert "duplicate of row 2" in skipped[5]


async def test_missing_template_variable_skips_only_that_row(
    smtp_server: RecordingSMTPServer, store: SqliteStore, tmp_path: Path
) -> None:
    """A participant lacking a variable the template needs is skipped, naming it."""
    base = tmp_path / "tpl" / "seat" / "en"
    base.mkdir(parents=True)
    (base / "subject.txt").write_text("Your seat")
    (base / "body.txt").write_text("Room {{ room }}: {{ link }}\n")
    settings = SenderSettings(
        from_address=SETTINGS.from_address, links=SETTINGS.links, template_dirs=(tmp_path / "tpl",)
    )
    sender = Sender(settings, transport=SmtpTransport(smtp_server.smtp_settings()))
    runner = BulkRunner(sender, store, RunSettings(template="seat"), scheduler=Scheduler(UNLIMITED))
    group = [
        Participant("a@d.example", "A", "p-1", "c", vars={"room": "101"}),
        Participant("b@d.example", "B", "p-2", "c"),
    ]
    report = await runner.run("r-seat", group)
    await sender.aclose()
    assert list(recipients(smtp_server)) == ["a@d.example"]
    ((row, _email, reason),) = await store.skipped("r-seat")
    assert row == 2
    assert "room" in reason
    assert report.counts[MessageState.SENT] == 1


async def test_permanent_failure_is_recorded_and_others_deliver(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A 550 recipient fails for good with its reply; everyone else is sent."""
    group = people(12)
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="user5@d2.example")
    runner = bulk_runner(smtp_server, store)
    report = await runner.run("r-5xx", group)
    await runner.sender.aclose()
    assert report.counts[MessageState.FAILED] == 1
    assert report.counts[MessageState.SENT] == 11
    ((row, email, state, reason),) = await store.problems("r-5xx")
    assert (row, email, state) == (6, "user5@d2.example", MessageState.FAILED)
    assert "550" in reason
    assert "5.1.1" in reason
    assert "user5@d2.example" not in recipients(smtp_server)


async def test_temporary_failure_is_deferred_then_retried(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A 451 defers the message by the retry policy; once due it is sent, once."""
    clock = ManualClock(now=1_800_000_000)
    smtp_server.reply(Stage.RCPT, "451 4.7.1 Greylisted", address="user1@d1.example", times=1)
    runner = bulk_runner(smtp_server, store, clock=clock, retry=RetryPolicy(jitter=0))
    first = await runner.run("r-grey", people(6))
    assert first.counts[MessageState.DEFERRED] == 1
    assert first.next_attempt_at == pytest.approx(1_800_000_000 + 300, abs=1)
    status = await run_status(store, "r-grey", now=clock.now())
    assert status["counts"]["deferred"] == 1  # type: ignore[index]
    clock.advance(301)
    second = await runner.run("r-grey")
    await runner.sender.aclose()
    assert second.counts[MessageState.SENT] == 6
    assert recipients(smtp_server)["user1@d1.example"] == 1
    (message_row,) = [m for m in smtp_server.messages if m.recipients == ("user1@d1.example",)]
    assert message_row.data


async def test_waiting_run_retries_by_itself(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """With wait_for_retries the run sleeps (on its clock) until deferred mail is due."""
    clock = ManualClock(now=1_800_000_000)
    smtp_server.reply(Stage.RCPT, "452 4.2.2 Mailbox full", address="user2@d2.example", times=2)
    runner = bulk_runner(
        smtp_server, store, clock=clock, wait_for_retries=True, retry=RetryPolicy(jitter=0)
    )
    report = await runner.run("r-wait", people(6))
    await runner.sender.aclose()
    assert report.counts[MessageState.SENT] == 6
    record = await store.lookup("r-wait", "p-2")
    assert record is not None
    assert record.state is MessageState.SENT
    attempts = await store.attempts(record.id)
    assert [a.state for a in attempts] == [MessageState.DEFERRED] * 2 + [MessageState.SENT]
    assert attempts[1].at - attempts[0].at == pytest.approx(300, abs=1)
    assert attempts[2].at - attempts[1].at == pytest.approx(600, abs=1)


async def test_throttling_reply_slows_that_domain_alone(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A 421 from one domain doubles the spacing of its sends; other domains keep theirs."""
    smtp_server.reply(
        Stage.RCPT, "421 4.7.0 Too many messages, slow down", address="user0@d0.example", times=1
    )
    limits = RateLimits(global_per_second=None, domain_per_minute=600)
    runner = bulk_runner(smtp_server, store, limits=limits, clock=ManualClock(), concurrency=1)
    group = people(30)
    await runner.run("r-slow", group)
    await runner.sender.aclose()
    sent_at: dict[str, list[float]] = {}
    for participant in group:
        record = await store.lookup("r-slow", participant.participant_id)
        assert record is not None
        attempts = await store.attempts(record.id)
        if attempts[-1].state is MessageState.SENT:
            sent_at.setdefault(participant.domain, []).append(attempts[-1].at)

    def spacing(domain: str) -> float:
        times = sorted(sent_at[domain])
        return (times[-1] - times[0]) / (len(times) - 1)

    assert spacing("d0.example") == pytest.approx(2 * spacing("d1.example"), rel=0.1)
    assert spacing("d1.example") == pytest.approx(spacing("d2.example"), rel=0.05)
    assert spacing("d1.example") == pytest.approx(60 / 600 * 1.02, rel=0.05)


async def test_crash_leftovers_are_requeued_and_sent(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Messages a dead worker had claimed go out on resume; nobody is skipped."""
    group = people(10)
    runner = bulk_runner(smtp_server, store)
    run, _ = await store.create_run("r-crash", template="invitation", source="library", now=0)
    await runner.ingest(run, group)
    claimed = [await store.claim("r-crash", "d0.example", now=1e10, owner="dead:1")]
    assert claimed[0] is not None
    report = await runner.run("r-crash")
    await runner.sender.aclose()
    assert report.requeued == 1
    assert recipients(smtp_server) == Counter(p.email for p in group)


async def test_second_worker_is_refused_while_the_first_holds_the_run(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Two live workers never send the same run."""
    await store.create_run("r-busy", template="invitation", source="library", now=0)
    assert await store.acquire_run("r-busy", owner="other:1", now=1e12, ttl=30)
    runner = bulk_runner(smtp_server, store, clock=ManualClock(now=1e12))
    with pytest.raises(RunBusy, match="other:1"):
        await runner.run("r-busy", people(3))
    await runner.sender.aclose()
    assert smtp_server.messages == ()


async def test_priority_send_overtakes_a_running_bulk_run(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A single send during a bulk run leaves within a few messages, not at the end."""
    limits = RateLimits(global_per_second=400, domain_per_minute=None)
    runner = bulk_runner(smtp_server, store, limits=limits, concurrency=2)
    task = asyncio.create_task(runner.run("r-busy-lane", people(300, domains=10)))
    for _ in range(500):
        if len(smtp_server.messages) >= 20:
            break
        await asyncio.sleep(0.01)
    before = len(smtp_server.messages)
    vip = Participant("vip@priority.example", "VIP", "p-vip", "PY101")
    result = await runner.sender.send_get_link(vip)
    position = next(
        i for i, m in enumerate(smtp_server.messages) if "vip@priority.example" in m.recipients
    )
    await task
    await runner.sender.aclose()
    assert result.ok
    assert position - before <= 4  # only what was already in flight got there first
    assert len(smtp_server.messages) == 301


async def test_status_agrees_with_the_server(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """status counts match what the SMTP server actually received."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="user3@d0.example")
    runner = bulk_runner(smtp_server, store)
    await runner.run("r-status", people(15))
    await runner.sender.aclose()
    data = await run_status(store, "r-status", now=1e12)
    counts = data["counts"]
    assert counts["sent"] == len(smtp_server.messages) == 14  # type: ignore[index]
    assert counts["failed"] == 1  # type: ignore[index]
    assert data["state"] == "done"
    domains = {d["domain"]: d["counts"] for d in data["domains"]}  # type: ignore[union-attr]
    assert domains["d0.example"] == {"sent": 4, "failed": 1}


async def test_async_iterable_input(smtp_server: RecordingSMTPServer, store: SqliteStore) -> None:
    """The library takes an async iterable of participants as well as a list."""

    async def stream() -> AsyncIterator[Participant]:
        for participant in people(7):
            yield participant

    runner = bulk_runner(smtp_server, store)
    report = await runner.run("r-async", stream())
    await runner.sender.aclose()
    assert report.counts[MessageState.SENT] == 7


def test_dry_run_checks_rows_without_sending(tmp_path: Path) -> None:
    """check_rows renders every row and lists what would be skipped, sending nothing."""
    csv_path = tmp_path / "p.csv"
    csv_path.write_text(
        "email,name,participant_id,course_id,locale\n"
        "a@d.example,A,p-1,c,de\n"
        "nope,B,p-2,c,en\n"
        "c@d.example,C,p-3,c,nb\n",
        encoding="utf-8",
    )
    dry = check_rows(Sender(SETTINGS), read_csv(csv_path), template="invitation")
    assert dry.ok == 2
    assert [row for row, _e, _r in dry.skipped] == [3]
    assert dry.fallbacks == {"de": 1}


async def test_refused_login_pauses_the_run_and_loses_nothing(
    starttls_server: RecordingSMTPServer, store: SqliteStore, ca_file: str, smtp_user: str
) -> None:
    """A bad SMTP password stops the run with the reason; every message stays queued."""
    settings = starttls_server.smtp_settings(username=smtp_user, password="wrong", ca_file=ca_file)
    sender = Sender(SETTINGS, transport=SmtpTransport(settings))
    runner = BulkRunner(sender, store, RunSettings(), scheduler=Scheduler(UNLIMITED))
    with pytest.raises(ConfigurationError):
        await runner.run("r-login", people(8))
    await sender.aclose()
    run, counts = await assert_paused_and_unsent(store, starttls_server, "r-login", queued=8)
    assert run.paused_reason
    assert counts[MessageState.SENDING] == 0


async def test_stop_pauses_the_run_and_resume_finishes_it(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """stop() (Ctrl-C) pauses with an exact count; a resume sends the rest, nobody twice."""
    group = people(120)
    runner = bulk_runner(smtp_server, store, limits=at_most(300))
    task = await started_run(runner, smtp_server, "r-stop", group, messages=20)
    runner.stop()
    report = await task
    await runner.sender.aclose()
    assert report.run.state is RunState.PAUSED
    assert report.run.paused_reason == "interrupted"
    assert report.sent_now == report.counts[MessageState.SENT] == len(smtp_server.messages)
    assert report.sent_now < 120
    final = await run_once(smtp_server, store, "r-stop", limits=at_most(300))
    assert final.run.state is RunState.DONE
    assert recipients(smtp_server) == Counter(p.email for p in group)


async def test_a_runner_leaves_the_sender_it_is_given_as_it_was(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A sender shared with a run keeps its own rules; the runner's own sender has the run's."""
    sender = Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings()))
    before = sender.send_context
    settings = RunSettings(bounces=BouncePolicy(pause_single_sends=True))
    runner = BulkRunner(sender, store, settings, scheduler=Scheduler(UNLIMITED))
    report = await runner.run("r-shared", people(3))
    await sender.aclose()
    assert report.counts[MessageState.SENT] == 3
    assert sender.send_context is before
    assert (sender.scheduler, sender.store, sender.suppression) == (None, None, None)
    assert runner.sender.scheduler is runner.scheduler
    assert (runner.sender.store, runner.sender.suppression) == (store, store)
    assert runner.sender.send_context.guard is not None
    assert runner.sender.composer is sender.composer
