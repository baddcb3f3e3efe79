"""A message replaced by a corrected address is never sent to the old address again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from sender import Participant
from sender.cli import main
from sender.store import MessageState, NewRow, Outcome, SqliteStore
from sender.testing import RecordingSMTPServer, Stage
from tests.helpers import smtp_url

ENV = {
    "SENDER_SECRET_KEYS": "review-corrections-test-key-aaaaaaaa",
    "SENDER_FROM": "Academy <noreply@learning.test>",
    "SENDER_BASE_URL": "https://learning.test/login",
}


def person(number: int, email: str | None = None) -> Participant:
    return Participant(email or f"u{number}@d.example", f"U {number}", f"p-{number}", "c", "en")


async def run_with_a_typo(store: SqliteStore) -> None:
    """Run "r" holding one row, typo@d.example, not yet claimed."""
    await store.create_run("r", template="invitation", source="p.csv", now=1.0)
    await store.add_rows("r", [NewRow(2, person(1, "typo@d.example"))], complete=True)


async def fail_the_typo(store: SqliteStore, detail: str) -> None:
    """Claim the typo's message and record it failed with ``detail``."""
    claimed = await store.claim("r", "d.example", now=1.0, owner="w")
    assert claimed is not None
    await store.record(claimed.id, Outcome(MessageState.FAILED, at=2.0, detail=detail))


async def claimed_emails(store: SqliteStore) -> list[str]:
    """Claim everything run "r" still has to send; the addresses, in order."""
    emails = []
    while (message := await store.claim("r", "d.example", now=4.0, owner="w")) is not None:
        emails.append(message.participant.email)
    return emails


async def test_retry_does_not_requeue_a_failed_message_replaced_by_a_corrected_address(
    store: SqliteStore,
) -> None:
    """sender retry requeues the corrected message, never the old address's failed one."""
    await run_with_a_typo(store)
    await fail_the_typo(store, "timed out")
    fixed = [NewRow(2, person(1, "fixed@d.example"), replaces=True)]
    assert (await store.add_rows("r", fixed)).corrected == 1
    assert await store.reset_failed("r", now=3.0) == 0
    assert await claimed_emails(store) == ["fixed@d.example"]


async def test_a_crash_resume_does_not_resend_a_replaced_in_flight_message(
    store: SqliteStore,
) -> None:
    """A message in flight at a crash, then corrected, is not re-sent to the old address."""
    await run_with_a_typo(store)
    assert await store.claim("r", "d.example", now=1.0, owner="dead") is not None  # crash
    fixed = [NewRow(2, person(1, "fixed@d.example"), replaces=True)]
    assert (await store.add_rows("r", fixed)).corrected == 1
    await store.requeue_stale("r")
    assert await claimed_emails(store) == ["fixed@d.example"]
    counts = await store.counts("r")
    assert counts[MessageState.SENDING] == 1  # the new one, just claimed


async def test_counts_leave_out_a_message_replaced_by_a_corrected_address(
    store: SqliteStore,
) -> None:
    """After a correction, counts and domain progress are the participants' current messages."""
    await run_with_a_typo(store)
    await fail_the_typo(store, "550 5.1.1")
    await store.add_rows("r", [NewRow(2, person(1, "fixed@d.example"), replaces=True)])
    fixed = await store.claim("r", "d.example", now=3.0, owner="w")
    assert fixed is not None
    await store.record(fixed.id, Outcome(MessageState.SENT, at=4.0, message_id="<m@x>"))
    counts = {state: n for state, n in (await store.counts("r")).items() if n}
    assert counts == {MessageState.SENT: 1}
    (domain,) = await store.domain_progress("r")
    assert {state: n for state, n in domain.counts.items() if n} == {MessageState.SENT: 1}


async def test_a_corrected_address_that_got_through_exits_zero(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """Run, correct the refused address, run again: every participant sent, exit code 0."""
    tmp_path = workdir
    smtp_server.reply(Stage.RCPT, "550 5.1.1 No such user", address="typo@d.example")
    header = "email,name,participant_id,course_id\n"
    path = tmp_path / "p.csv"
    path.write_text(header + "a@d.example,A,p-1,c\ntypo@d.example,B,p-2,c\n", encoding="utf-8")
    url = smtp_url(smtp_server)
    args = ["run", "p.csv", "--smtp", url, "--no-validate", "--no-progress", "--domain-rate", "0"]
    first = await asyncio.to_thread(CliRunner().invoke, main, args, env=ENV)
    assert first.exit_code == 3, first.output
    path.write_text(header + "a@d.example,A,p-1,c\nfixed@d.example,B,p-2,c\n", encoding="utf-8")
    again = await asyncio.to_thread(CliRunner().invoke, main, [*args, "--json"], env=ENV)
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert data["counts"]["sent"] == 2
    assert data["counts"]["failed"] == 0
