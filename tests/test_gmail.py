"""The Gmail bulk-sender estimate: counted from a real outbox, shown by `sender doctor`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sender.checks.doctor import Check, DoctorReport
from sender.checks.gmail import (
    BULK_THRESHOLD,
    GmailEstimate,
    gmail_bulk_estimate,
    gmail_check,
)
from sender.cli import main
from sender.config import load_config
from sender.errors import ConfigurationError
from sender.models import Participant, SmtpReply
from sender.store import MessageState, NewRow, Outcome, SqliteStore
from sender.storeurl import store_file
from tests.dns_server import DnsServer

DAY = 86_400
NOW = 1_796_300_000.0  # 2026-12-03 (UTC), mid-afternoon
TODAY = int(NOW // DAY)


async def send(
    store: SqliteStore, run: str, domain: str, count: int, *, at: float, first: int = 0
) -> None:
    """Ingest ``count`` participants at ``domain`` into ``run`` and record each sent at ``at``."""
    await store.create_run(run, template="invitation", source="test", now=at)
    rows = [
        NewRow(
            row=first + n + 2,
            participant=Participant(
                email=f"p{first + n}@{domain}",
                name="P",
                participant_id=f"{domain}-{first + n}",
                course_id="c",
            ),
        )
        for n in range(count)
    ]
    await store.add_rows(run, rows)
    claimed = await store.claim_many(run, [domain] * count, now=at, owner="w")
    sent = Outcome(state=MessageState.SENT, at=at, reply=SmtpReply(250, "2.0.0", "ok"))
    await store.record_many([(m.id, sent) for m in claimed if m is not None])


async def queue(store: SqliteStore, run: str, domain: str, count: int, *, at: float) -> None:
    """Ingest ``count`` participants at ``domain`` into ``run`` without sending them."""
    await store.create_run(run, template="invitation", source="test", now=at)
    await store.add_rows(
        run,
        [
            NewRow(
                row=n + 2,
                participant=Participant(
                    email=f"q{n}@{domain}", name="Q", participant_id=f"q-{n}", course_id="c"
                ),
            )
            for n in range(count)
        ],
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """An empty SQLite outbox, closed after the test."""
    opened = SqliteStore(tmp_path / "outbox.sqlite3")
    yield opened
    opened.close()


async def test_the_estimate_finds_the_peak_day_to_gmail_and_googlemail(store: SqliteStore) -> None:
    """Per UTC day, gmail.com and googlemail.com together; other domains and old days left out."""
    await send(store, "old", "gmail.com", 50, at=NOW - 40 * DAY)  # outside 30 days
    await send(store, "a", "gmail.com", 30, at=NOW - 3 * DAY)
    await send(store, "b", "googlemail.com", 15, at=NOW - 3 * DAY + 60)
    await send(store, "c", "school.example", 90, at=NOW - 3 * DAY)  # not Gmail
    await send(store, "d", "gmail.com", 20, at=NOW - 60)
    await queue(store, "e", "gmail.com", 12, at=NOW)
    estimate = await gmail_bulk_estimate(store, now=NOW, days=30)
    assert estimate.per_day == (("2026-11-30", 45), ("2026-12-03", 20))
    assert (estimate.peak_date, estimate.peak) == ("2026-11-30", 45)
    assert (estimate.today, estimate.pending, estimate.projected) == (20, 12, 32)
    assert estimate.status == "below"
    assert estimate.as_dict()["projected"] == 32


async def test_five_thousand_on_one_day_is_a_bulk_sender(store: SqliteStore) -> None:
    """5,000 messages to Gmail on one day makes a bulk sender, even days later."""
    await send(store, "big", "gmail.com", BULK_THRESHOLD, at=NOW - 5 * DAY)
    estimate = await gmail_bulk_estimate(store, now=NOW)
    short = await gmail_bulk_estimate(store, now=NOW, days=3)
    assert estimate.peak == BULK_THRESHOLD
    assert estimate.status == "bulk"
    assert short.status == "below"  # the window decides what is seen


async def test_a_queue_that_would_cross_the_line_today_is_near(store: SqliteStore) -> None:
    """Nothing sent yet but 4,500 queued to Gmail: projected over the line, status near."""
    await queue(store, "queued", "gmail.com", 4_500, at=NOW)
    estimate = await gmail_bulk_estimate(store, now=NOW)
    assert (estimate.peak, estimate.pending) == (0, 4_500)
    assert estimate.status == "near"


def report(*checks: Check) -> DoctorReport:
    return DoctorReport("learning.example.com", checks)


PASSING = (
    Check("spf", True, "ok"),
    Check("spf-lookups", True, "ok"),
    Check("spf-void", True, "ok"),
    Check("dkim", True, "ok"),
    Check("dmarc", True, "ok"),
    Check("dmarc-alignment", True, "ok"),
)


def estimate(peak: int, pending: int = 0) -> GmailEstimate:
    return GmailEstimate(
        days=30,
        per_day=(("2026-12-01", peak),) if peak else (),
        peak_date="2026-12-01" if peak else None,
        peak=peak,
        today=0,
        pending=pending,
    )


def test_a_bulk_sender_with_everything_in_place_passes() -> None:
    """Bulk, with SPF, DKIM, DMARC and alignment passing: ok, and unsubscribe is named."""
    found = gmail_check(estimate(6_000), report(*PASSING))
    assert found.ok
    assert "a bulk sender" in found.message
    assert "one-click unsubscribe (RFC 8058)" in found.message


def test_a_bulk_sender_missing_dkim_fails_and_names_it() -> None:
    """Bulk without a working DKIM key (or unchecked DKIM): FAIL naming the requirement."""
    broken = [c if c.name != "dkim" else Check("dkim", False, "no key") for c in PASSING]
    found = gmail_check(estimate(6_000), report(*broken))
    assert found.mark == "FAIL"
    assert "Gmail requires: DKIM passes;" in found.message
    unchecked = [
        c if c.name != "dkim" else Check("dkim", True, "DKIM not checked: give --dkim-selector.")
        for c in PASSING
    ]
    assert "DKIM passes (not checked)" in gmail_check(estimate(6_000), report(*unchecked)).message


def test_near_the_line_missing_requirements_only_warn() -> None:
    """Close to 5,000 with DMARC missing: a warning, not a failure."""
    broken = [c if c.name != "dmarc" else Check("dmarc", False, "none") for c in PASSING]
    found = gmail_check(estimate(4_200), report(*broken))
    assert found.mark == "warn"
    assert "close to bulk" in found.message
    assert "DMARC is published" in found.message


async def test_a_window_out_of_range_is_refused(store: SqliteStore) -> None:
    """days must be 1 to 366."""
    with pytest.raises(ConfigurationError, match="days must be 1 to 366"):
        await gmail_bulk_estimate(store, now=NOW, days=0)


async def test_cli_doctor_shows_a_bulk_sender_from_the_outbox(workdir: Path) -> None:
    """`sender doctor` reads the configured outbox: 5,000 to Gmail yesterday is bulk."""
    path = store_file(load_config(environ={}).store)
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    outbox = SqliteStore(path)
    try:
        await send(outbox, "big", "gmail.com", BULK_THRESHOLD, at=time.time() - DAY)
    finally:
        outbox.close()
    zone = (
        'learning.example.com. TXT "v=spf1 include:amazonses.com ~all"\n'
        'amazonses.com. TXT "v=spf1 ip4:199.255.192.0/22 ~all"\n'
        '_dmarc.learning.example.com. TXT "v=DMARC1; p=reject"\n'
    )

    def doctor(address: str) -> tuple[int, str]:
        result = CliRunner().invoke(
            main,
            ["doctor", "learning.example.com", "--dns-server", address, "--json"],
            catch_exceptions=False,
        )
        return result.exit_code, result.stdout

    async with DnsServer(zone) as dns:
        code, text = await asyncio.to_thread(doctor, dns.address)
    data = json.loads(text)
    assert data["gmail"]["peak"] == BULK_THRESHOLD
    assert data["gmail"]["status"] == "bulk"
    gmail = next(c for c in data["checks"] if c["name"] == "gmail-bulk")
    assert gmail["mark"] == "FAIL"  # DKIM was not checked: no selector configured
    assert "DKIM passes (not checked)" in gmail["message"]
    assert code == 1
