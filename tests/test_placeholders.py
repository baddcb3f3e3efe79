"""The example From and base URL never reach a real SMTP server; the capture server keeps them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import Result

from sender.testing import RecordingSMTPServer
from tests.helpers import cli_with, smtp_url

KEY = "placeholder-key-aaaaaaaaaaaaaaaaa"
REAL = {
    "SENDER_FROM": "Skolen <noreply@learning.example.org>",
    "SENDER_BASE_URL": "https://learning.example.org/login",
}
CSV = "email,name,participant_id,course_id\nkari@example.com,Kari,p-1,c\n"
SEND = ("send", "--to", "kari@example.com", "--name", "Kari", "--participant", "p-1")


@pytest.fixture(autouse=True)
def workdir(workdir: Path) -> Path:
    """The shared empty working directory (tests/conftest.py), holding p.csv."""
    (workdir / "p.csv").write_text(CSV, encoding="utf-8")
    return workdir


cli = cli_with(SENDER_SECRET_KEYS=KEY)


def assert_refused(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


async def test_send_with_smtp_and_the_example_from_is_refused(
    smtp_server: RecordingSMTPServer,
) -> None:
    """`send --smtp` with no configuration names from/SENDER_FROM and sends nothing."""
    url = smtp_url(smtp_server)
    result = await asyncio.to_thread(cli, *SEND, "--course", "c", "--smtp", url)
    assert_refused(result, "SENDER_FROM", "SENDER_BASE_URL")
    assert smtp_server.messages == ()


async def test_run_with_an_smtp_url_and_the_example_base_url_is_refused_before_queueing(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """SENDER_SMTP_URL with a real From but the example base URL: refused, no run queued."""
    url = smtp_url(smtp_server)
    env = {"SENDER_SMTP_URL": url, "SENDER_FROM": REAL["SENDER_FROM"]}
    result = await asyncio.to_thread(cli, "run", "p.csv", "--no-progress", **env)
    assert_refused(result, "base_url", "SENDER_BASE_URL")
    assert "SENDER_FROM" not in result.stderr
    assert smtp_server.messages == ()
    status = await asyncio.to_thread(cli, "status", "--json")
    assert "no runs yet" in status.stderr


async def test_real_settings_send_through_smtp(smtp_server: RecordingSMTPServer) -> None:
    """With from and base_url set, `send --smtp` delivers."""
    url = smtp_url(smtp_server)
    result = await asyncio.to_thread(cli, *SEND, "--course", "c", "--smtp", url, **REAL)
    assert result.exit_code == 0, result.output
    assert len(smtp_server.messages) == 1


def test_the_capture_server_keeps_the_samples(workdir: Path) -> None:
    """Without an SMTP URL the example From and base URL still work (the quickstart)."""
    result = cli("run", "p.csv", "--no-progress")
    assert result.exit_code == 0, result.output
    assert len(list((workdir / ".sender" / "maildir" / "new").iterdir())) == 1
