"""What a run reports: counts that add up, skipped rows with reasons, ETAs (issue 10, 3.2, 4.4)."""

from __future__ import annotations

import pytest

from sender import Participant, Sender
from sender.bulk.runner import BulkRunner, RunSettings
from sender.bulk.status import Progress, run_status
from sender.cli.app import ProgressDisplay
from sender.pacing.schedule import RateLimits, RetryPolicy, Scheduler
from sender.store import MessageState, SqliteStore
from sender.testing import RecordingSMTPServer, Stage
from sender.transport import SmtpTransport
from tests.helpers import UNLIMITED, sender_settings

SETTINGS = sender_settings()


def people(count: int) -> list[Participant]:
    return [
        Participant(f"user{i}@d{i % 2}.example", f"User {i}", f"p-{i}", "PY101")
        for i in range(count)
    ]


async def run_once(
    server: RecordingSMTPServer,
    store: SqliteStore,
    rows: list[Participant] | None,
    seen: list[Progress],
    **settings: object,
) -> None:
    sender = Sender(SETTINGS, transport=SmtpTransport(server.smtp_settings()))
    runner = BulkRunner(
        sender,
        store,
        RunSettings(**settings),  # type: ignore[arg-type]
        scheduler=Scheduler(UNLIMITED),
    )
    try:
        await runner.run("r", rows, on_progress=seen.append, progress_interval=0.0)
    finally:
        await sender.aclose()


async def test_retry_progress_never_counts_below_zero(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """After a deferral, `retry` (failed and deferred queued again) shows no `deferred -1`."""
    smtp_server.reply(Stage.RCPT, "451 4.7.1 Greylisted", address="user1@d1.example", times=1)
    seen: list[Progress] = []
    await run_once(smtp_server, store, people(4), seen, retry=RetryPolicy())
    assert (await store.counts("r"))[MessageState.DEFERRED] == 1
    assert await store.reset_failed("r", now=0.0) == 1
    seen.clear()
    await run_once(smtp_server, store, None, seen)
    assert seen
    for progress in seen:
        assert all(n >= 0 for n in progress.counts.values()), progress.counts
    assert seen[-1].counts[MessageState.SENT] == 4
    assert seen[-1].counts[MessageState.DEFERRED] == 0


async def test_status_lists_rows_skipped_at_send_time_with_their_reason(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """run_status (`status --json`) carries skipped: [{row, email, reason}], send time included."""
    rows = people(5)
    rows[3] = Participant("user3@d1.example", "User 3", "p-3", "PY101", vars={"course_name": "\0"})
    await run_once(smtp_server, store, rows, [])
    data = await run_status(store, "r", now=0.0)
    assert data["skipped"] == [
        {"row": 4, "email": "user3@d1.example", "reason": data["skipped"][0]["reason"]}  # type: ignore[index]
    ]
    assert "Subject" in data["skipped"][0]["reason"]  # type: ignore[index]


def test_progress_eta_is_a_duration_naming_the_domain_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Progress lines say `ETA 2h 49m`, not `10196s`, and name --domain-rate when it decides."""
    progress = Progress(
        run_id="r",
        total=3000,
        counts={MessageState.SENT: 10},
        rate=0.3,
        eta=10196.0,
        elapsed=30.0,
        slowest="school.example",
    )
    with ProgressDisplay(enabled=None) as display:
        display.update(progress)
    line = capsys.readouterr().err
    assert "ETA 2h 49m" in line
    assert "10196" not in line
    assert "school.example" in line
    assert "--domain-rate" in line


def test_scheduler_names_the_domain_whose_limit_sets_the_eta() -> None:
    """eta_bottleneck: one big domain at 30/min decides; with the global limit slower, none."""
    scheduler = Scheduler(RateLimits(global_per_second=10, domain_per_minute=30))
    scheduler.set_pending({"school.example": 3000, "other.example": 5})
    assert scheduler.eta_bottleneck() == "school.example"
    assert (scheduler.eta() or 0) > 5000
    slow_overall = Scheduler(RateLimits(global_per_second=0.01, domain_per_minute=30))
    slow_overall.set_pending({"school.example": 30, "other.example": 30})
    assert slow_overall.eta_bottleneck() is None
