"""A run is named by its file and template: an edited file sends only to what is new."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sender import Participant, Sender
from sender.bulk.runner import BulkRunner, RunSettings, run_id_for
from sender.pacing.schedule import Scheduler
from sender.participants import CsvRow
from sender.store import MessageState, NewRow, Outcome, SqliteStore
from sender.testing import RecordingSMTPServer
from sender.transport import SmtpTransport
from tests.helpers import IDENTITY, UNLIMITED, cli_with, sender_settings, smtp_url

KEY = "run-identity-test-key-aaaaaaaaaaaa"
HEADER = "email,name,participant_id,course_id,room\n"
FIRST = (
    HEADER
    + "a@d.example,Anna,p-1,c,R1\n"
    + "b@d.example,Bo,p-2,c,R1\n"
    + "c@e.example,Cy,p-3,c,R1\n"
    + "x@e.example,Xi,p-9,c,R1\n"
)
# Anna's name changed, Bo's room changed, p-3's address was corrected, p-9 was removed,
# p-4 was added (in the middle, so row numbers shift) and p-5 at the end.
EDITED = (
    HEADER
    + "a@d.example,Anna Berg,p-1,c,R1\n"
    + "d@f.example,Dag,p-4,c,R1\n"
    + "b@d.example,Bo,p-2,c,R2\n"
    + "c.fixed@e.example,Cy,p-3,c,R1\n"
    + "e@f.example,Eva,p-5,c,R1\n"
)


pytestmark = pytest.mark.usefixtures("workdir")


cli = cli_with(SENDER_SECRET_KEYS=KEY, **IDENTITY)
# Rows share domains: the default 30/min per domain would wait 2 s a row, proving nothing here.
UNPACED = ("--no-validate", "--domain-rate", "0")


def recipients(server: RecordingSMTPServer) -> Counter[str]:
    return Counter(r for m in server.messages for r in m.recipients)


def test_run_id_comes_from_the_path_and_template_not_the_contents(workdir: Path) -> None:
    """Editing the file keeps its run id; another template or another file gets another."""
    path = workdir / "p.csv"
    path.write_text(FIRST, encoding="utf-8")
    before = run_id_for(path, "invitation")
    path.write_text(EDITED, encoding="utf-8")
    assert run_id_for(path, "invitation") == before
    assert run_id_for(Path("p.csv"), "invitation") == before  # relative or absolute
    assert run_id_for(path, "reminder") != before
    other = workdir / "q.csv"
    other.write_text(FIRST, encoding="utf-8")
    assert run_id_for(other, "invitation") != before


@pytest.mark.parametrize("run_id", [None, "r-fixed"], ids=["default-id", "run-id"])
async def test_edited_file_sends_to_added_rows_and_corrected_addresses_only(
    smtp_server: RecordingSMTPServer, workdir: Path, run_id: str | None
) -> None:
    """Run, edit, run again: new rows and corrected addresses get mail, nobody else."""
    path = workdir / "p.csv"
    path.write_text(FIRST, encoding="utf-8")
    smtp = ["--smtp", smtp_url(smtp_server), *UNPACED]
    named = ["--run-id", run_id] if run_id else []
    first = await asyncio.to_thread(cli, "run", "p.csv", *named, *smtp)
    assert first.exit_code == 0, first.stderr
    assert sum(recipients(smtp_server).values()) == 4
    path.write_text(EDITED, encoding="utf-8")
    second = await asyncio.to_thread(cli, "run", "p.csv", *named, *smtp)
    assert second.exit_code == 0, second.stderr
    assert recipients(smtp_server) == Counter(
        {
            "a@d.example": 1,
            "b@d.example": 1,
            "c@e.example": 1,
            "x@e.example": 1,
            "d@f.example": 1,
            "e@f.example": 1,
            "c.fixed@e.example": 1,
        }
    )
    assert "2 new, 1 address corrected, 1 removed from the file, 2 unchanged" in second.stdout
    third = await asyncio.to_thread(cli, "run", "p.csv", *named, *smtp)
    assert third.exit_code == 0, third.stderr
    assert sum(recipients(smtp_server).values()) == 7
    assert "0 new, 0 address corrected, 1 removed from the file, 5 unchanged" in third.stdout


SETTINGS = sender_settings()


def person(number: int, email: str | None = None) -> Participant:
    return Participant(email or f"u{number}@d.example", f"U {number}", f"p-{number}", "c", "en")


class Crash(Exception):
    """The process died while reading the file."""


async def rows_then_crash(rows: list[CsvRow], after: int) -> AsyncIterator[Participant]:
    for row in rows[:after]:
        assert row.participant is not None
        yield row.participant
    raise Crash


async def test_ingest_interrupted_then_edited_file_sends_everyone_once(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A crash mid-ingest, then a file with a row inserted at the top: each person gets one."""
    transport = SmtpTransport(smtp_server.smtp_settings())
    sender = Sender(SETTINGS, transport=transport)
    runner = BulkRunner(sender, store, RunSettings(batch_size=3), scheduler=Scheduler(UNLIMITED))
    original = [CsvRow(n + 1, person(n)) for n in range(1, 11)]
    with pytest.raises(Crash):
        await runner.run("r-crash", rows_then_crash(original, 7))
    info = await store.get_run("r-crash")
    assert info is not None
    assert not info.ingest_complete
    assert not smtp_server.messages
    edited = [CsvRow(2, person(0))] + [CsvRow(row.row + 1, row.participant) for row in original]
    report = await runner.run("r-crash", edited)
    await sender.aclose()
    assert recipients(smtp_server) == Counter(f"u{n}@d.example" for n in range(11))
    assert {state: n for state, n in report.counts.items() if n} == {MessageState.SENT: 11}
    assert report.changes is not None
    assert (report.changes.new, report.changes.unchanged) == (11 - 6, 6)


async def test_rerun_of_the_file_keeps_the_transport(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """Running the same file again without --smtp sends its added row through the run's server."""
    rows = HEADER + "a@d.example,A,p-1,c,R1\n"
    await asyncio.to_thread((workdir / "p.csv").write_text, rows, encoding="utf-8")
    url = smtp_url(smtp_server)
    first = await asyncio.to_thread(cli, "run", "p.csv", "--smtp", url, "--no-validate")
    assert first.exit_code == 0, first.stderr
    edited = rows + "d@e.example,D,p-4,c,R1\n"
    await asyncio.to_thread(Path("p.csv").write_text, edited, encoding="utf-8")
    again = await asyncio.to_thread(cli, "run", "p.csv", "--no-validate")
    assert again.exit_code == 0, again.stderr
    assert recipients(smtp_server) == Counter({"a@d.example": 1, "d@e.example": 1})
    assert not (workdir / ".sender" / "maildir" / "new").exists()


def sent_outcome() -> Outcome:
    return Outcome(MessageState.SENT, at=2.0, message_id="<m@x>")


async def test_a_corrected_address_of_an_unsent_message_is_changed_in_place(
    store: SqliteStore,
) -> None:
    """Corrected before it was sent: the one message now goes to the new address."""
    await store.create_run("r", template="invitation", source="p.csv", now=1.0)
    await store.add_rows("r", [NewRow(2, person(1))], complete=True)
    result = await store.add_rows("r", [NewRow(3, person(1, "new@d.example"), replaces=True)])
    assert result.corrected == 1
    counts = {state: n for state, n in (await store.counts("r")).items() if n}
    assert counts == {MessageState.QUEUED: 1}
    found = await store.lookup("r", "p-1")
    assert found is not None
    assert (found.email, found.row) == ("new@d.example", 3)
    assert await store.participant_count("r") == 1


async def test_a_corrected_address_of_a_final_message_gets_a_new_message(
    store: SqliteStore,
) -> None:
    """Corrected after a failure: the failed message stays as it was, a new one is queued."""
    await store.create_run("r", template="invitation", source="p.csv", now=1.0)
    await store.add_rows("r", [NewRow(2, person(1)), NewRow(3, person(2))], complete=True)
    for _ in range(2):
        claimed = await store.claim("r", "d.example", now=1.0, owner="w")
        assert claimed is not None
        failed = Outcome(MessageState.FAILED, at=2.0, detail="550 5.1.1 no such user")
        await store.record(claimed.id, sent_outcome() if claimed.row == 3 else failed)
    again = [NewRow(2, person(1, "fixed@d.example"), replaces=True)]
    assert (await store.add_rows("r", again)).corrected == 1
    assert (await store.add_rows("r", again)).corrected == 0  # stored once
    found = await store.lookup("r", "p-1")
    assert found is not None
    assert (found.email, found.state) == ("fixed@d.example", MessageState.QUEUED)
    assert await store.problems("r") == []  # the failure was to the old address
    assert await store.addresses_of("r", ["p-1", "p-2", "p-9"]) == {
        "p-1": "fixed@d.example",
        "p-2": "u2@d.example",
    }
    assert await store.participant_count("r") == 2
    counts = {state: n for state, n in (await store.counts("r")).items() if n}
    assert counts == {MessageState.SENT: 1, MessageState.QUEUED: 1}  # the failed one is history


async def test_run_json_says_what_rows_given_again_changed(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """run --json carries the changes of a file run again (null for a new run)."""
    path = workdir / "p.csv"
    await asyncio.to_thread(path.write_text, FIRST, encoding="utf-8")
    smtp = ["--smtp", smtp_url(smtp_server), *UNPACED]
    first = await asyncio.to_thread(cli, "run", "p.csv", "--json", *smtp)
    assert json.loads(first.stdout)["changes"] is None
    await asyncio.to_thread(path.write_text, EDITED, encoding="utf-8")
    second = await asyncio.to_thread(cli, "run", "p.csv", "--json", *smtp)
    assert json.loads(second.stdout)["changes"] == {
        "new": 2,
        "corrected": 1,
        "removed": 1,
        "unchanged": 2,
    }


async def test_a_run_an_older_sender_named_from_the_contents_is_continued(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """Upgrading never sends a file again: its run under a content-hash id is found by path."""
    path = workdir / "p.csv"
    await asyncio.to_thread(path.write_text, FIRST, encoding="utf-8")
    url = smtp_url(smtp_server)
    async with SqliteStore(workdir / ".sender" / "outbox.sqlite3") as outbox:
        await outbox.create_run(
            "r-0123456789ab", template="invitation", source=str(path.resolve()), now=1.0
        )
        old = [
            NewRow(n + 2, Participant(f"{c}@d.example", c, f"p-{n + 1}", "c"))
            for n, c in enumerate("ab")
        ]
        await outbox.add_rows("r-0123456789ab", old, complete=True)
        for _ in old:
            claimed = await outbox.claim("r-0123456789ab", "d.example", now=1.0, owner="w")
            assert claimed is not None
            await outbox.record(claimed.id, sent_outcome())
    result = await asyncio.to_thread(cli, "run", "p.csv", "--smtp", url, *UNPACED)
    assert result.exit_code == 0, result.stderr
    assert "r-0123456789ab" in result.stdout
    assert recipients(smtp_server) == Counter({"c@e.example": 1, "x@e.example": 1})
