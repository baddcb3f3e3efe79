"""Row checks before a run: one row's bad value never costs another row (issue 10, 3.1, 4.6)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from sender import Participant, Sender
from sender.bulk.ingest import RowChecker, check_rows
from sender.bulk.runner import BulkRunner, RunSettings
from sender.pacing.schedule import Scheduler
from sender.participants import CsvRow
from sender.store import MessageState, SqliteStore
from sender.testing import RecordingSMTPServer
from sender.transport import SmtpTransport
from tests.helpers import UNLIMITED, sender_settings

SETTINGS = sender_settings()
SENDER = Sender(SETTINGS)
# Values a row may carry that make its own message unsendable (a NUL in the subject, a
# link to a second site); CR/LF are not here: the subject folds them to spaces.
HOSTILE = ["A\x00B", "\x00", "see https://evil.example/x", "Course www.evil.example"]


def group(size: int, *, bad: int, value: str, locales: list[str]) -> list[Participant]:
    return [
        Participant(
            f"user{i}@d{i % 3}.example",
            f"User {i}",
            f"p-{i}",
            "PY101",
            locales[i % len(locales)],
            vars={"course_name": value if i == bad else f"Course {i}"},
        )
        for i in range(size)
    ]


rows_with_one_hostile = st.integers(min_value=2, max_value=30).flatmap(
    lambda size: st.tuples(
        st.just(size),
        st.integers(min_value=0, max_value=size - 1),
        st.sampled_from(HOSTILE),
        st.lists(st.sampled_from(["en", "nb", "sv", "ja"]), min_size=1, max_size=3),
    )
)


@given(rows_with_one_hostile)
def test_row_checker_blames_only_the_row_with_the_hostile_value(
    case: tuple[int, int, str, list[str]],
) -> None:
    """RowChecker: no row but the one with the hostile value is ever named as a problem."""
    size, bad, value, locales = case
    checker = RowChecker(SENDER, "invitation")
    problems = [checker.problem(p) for p in group(size, bad=bad, value=value, locales=locales)]
    assert [i for i, problem in enumerate(problems) if problem is not None] in ([], [bad])
    if bad == 0:  # the first trial render is this row's: it is caught here, not at send time
        assert problems[0] is not None


@given(rows_with_one_hostile)
def test_dry_run_skips_exactly_the_row_with_the_hostile_value(
    case: tuple[int, int, str, list[str]],
) -> None:
    """check_rows (the dry run): the hostile row is skipped with its reason; the rest would go."""
    size, bad, value, locales = case
    participants = group(size, bad=bad, value=value, locales=locales)
    rows = [CsvRow(i + 2, p, None, p.email) for i, p in enumerate(participants)]
    dry = check_rows(SENDER, rows, template="invitation")
    assert dry.ok == size - 1
    assert [(row, email) for row, email, _ in dry.skipped] == [(bad + 2, participants[bad].email)]


async def test_run_skips_only_the_hostile_row_whether_first_or_late(
    smtp_server: RecordingSMTPServer, tmp_path: Path
) -> None:
    """A real run: a NUL in row 2 or in row 151 skips that row alone, naming it."""
    for bad in (0, 149):
        smtp_server.clear()
        store = SqliteStore(tmp_path / f"outbox-{bad}.sqlite3")
        sender = Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings()))
        runner = BulkRunner(sender, store, RunSettings(), scheduler=Scheduler(UNLIMITED))
        participants = group(160, bad=bad, value="A\x00B", locales=["en", "nb"])
        try:
            report = await runner.run("r", participants)
            skipped = await store.skipped("r")
        finally:
            await sender.aclose()
            await store.aclose()
        assert report.counts[MessageState.SENT] == 159
        assert report.counts[MessageState.SKIPPED] == 1
        assert len(smtp_server.messages) == 159
        assert [(row, email) for row, email, _ in skipped] == [(bad + 1, participants[bad].email)]
        assert "Subject" in skipped[0][2]
