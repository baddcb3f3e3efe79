"""A run from an outbox made before runs kept their transport is never finished silently
through the capture server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sender import Participant
from sender.cli import main
from sender.store import NewRow, SqliteStore
from sender.testing import RecordingSMTPServer
from tests.helpers import smtp_url

ENV = {
    "SENDER_SECRET_KEYS": "review-transport-test-key-aaaaaaaaaa",
    "SENDER_FROM": "Academy <noreply@learning.test>",
    "SENDER_BASE_URL": "https://learning.test/login",
}


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with no SENDER_* settings, holding a legacy run."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("SENDER_")]:
        monkeypatch.delenv(name)
    return tmp_path


async def legacy_run(home: Path) -> None:
    """A schema-4-style run: options without "transport", two messages not sent yet."""
    store = SqliteStore(home / ".sender" / "outbox.sqlite3")
    try:
        options = {"rate": 0, "domain_rate": "0", "concurrency": 4, "workers": 1}
        await store.create_run(
            "r-old", template="invitation", source="p.csv", now=1.0, options=options
        )
        people = [Participant(f"u{n}@d.example", f"U {n}", f"p-{n}", "c", "en") for n in (1, 2)]
        rows = [NewRow(n + 1, person) for n, person in enumerate(people)]
        await store.add_rows("r-old", rows, complete=True)
    finally:
        await store.aclose()


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV, catch_exceptions=False)


def captured(home: Path) -> list[Path]:
    new = home / ".sender" / "maildir" / "new"
    return list(new.iterdir()) if new.is_dir() else []


async def test_resume_of_a_run_without_a_stored_transport_needs_one_given(
    home: Path, smtp_server: RecordingSMTPServer
) -> None:
    """resume without --smtp refuses a run whose transport was never recorded."""
    await legacy_run(home)
    result = await asyncio.to_thread(cli, "resume", "r-old", "--no-progress")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output + result.stderr
    assert "--switch-transport" in result.stderr
    assert "--smtp" in result.stderr
    assert captured(home) == []
    url = smtp_url(smtp_server)
    given = await asyncio.to_thread(cli, "resume", "r-old", "--smtp", url, "--no-progress")
    assert given.exit_code == 0, given.stderr
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == [
        "u1@d.example",
        "u2@d.example",
    ]
    assert captured(home) == []


async def test_switch_transport_sends_a_legacy_run_to_the_capture_server(home: Path) -> None:
    """--switch-transport is the explicit way to finish such a run in the capture Maildir."""
    await legacy_run(home)
    result = await asyncio.to_thread(cli, "resume", "r-old", "--switch-transport", "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert len(captured(home)) == 2
