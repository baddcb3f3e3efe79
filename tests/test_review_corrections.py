"""A message replaced by a corrected address is never sent to the old address again."""

from __future__ import annotations

from sender import Participant
from sender.store import MessageState, NewRow, Outcome, SqliteStore


def person(number: int, email: str | None = None) -> Participant:
    return Participant(email or f"u{number}@d.example", f"U {number}", f"p-{number}", "c", "en")


async def test_retry_does_not_requeue_a_failed_message_replaced_by_a_corrected_address(
    store: SqliteStore,
) -> None:
    """sender retry requeues the corrected message, never the old address's failed one."""
    await store.create_run("r", template="invitation", source="p.csv", now=1.0)
    await store.add_rows("r", [NewRow(2, person(1, "typo@d.example"))], complete=True)
    claimed = await store.claim("r", "d.example", now=1.0, owner="w")
    assert claimed is not None
    await store.record(claimed.id, Outcome(MessageState.FAILED, at=2.0, detail="timed out"))
    fixed = [NewRow(2, person(1, "fixed@d.example"), replaces=True)]
    assert (await store.add_rows("r", fixed)).corrected == 1
    assert await store.reset_failed("r", now=3.0) == 0
    emails = []
    while (message := await store.claim("r", "d.example", now=4.0, owner="w")) is not None:
        emails.append(message.participant.email)
    assert emails == ["fixed@d.example"]


async def test_a_crash_resume_does_not_resend_a_replaced_in_flight_message(
    store: SqliteStore,
) -> None:
    """A message in flight at a crash, then corrected, is not re-sent to the old address."""
    await store.create_run("r", template="invitation", source="p.csv", now=1.0)
    await store.add_rows("r", [NewRow(2, person(1, "typo@d.example"))], complete=True)
    assert await store.claim("r", "d.example", now=1.0, owner="dead") is not None  # crash
    fixed = [NewRow(2, person(1, "fixed@d.example"), replaces=True)]
    assert (await store.add_rows("r", fixed)).corrected == 1
    await store.requeue_stale("r")
    emails = []
    while (message := await store.claim("r", "d.example", now=4.0, owner="w")) is not None:
        emails.append(message.participant.email)
    assert emails == ["fixed@d.example"]
    counts = await store.counts("r")
    assert counts[MessageState.SENDING] == 1  # the new one, just claimed
