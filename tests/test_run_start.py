"""Starting a run: refused before anything is stored, and paced only for real receivers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sender import Address, LinkSettings, Sender, SenderSettings, TemplateError
from sender.bulk.runner import BulkRunner, RunSettings
from sender.store import SqliteStore
from sender.testing import RecordingSMTPServer
from sender.transport import SmtpTransport
from tests.helpers import IDENTITY, cli_with, smtp_url

KEY = "run-start-test-key-aaaaaaaaaaaaaaa"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "participants.csv"


pytestmark = pytest.mark.usefixtures("workdir")


cli = cli_with(SENDER_SECRET_KEYS=KEY, **IDENTITY)


def test_unknown_template_is_one_line_and_creates_no_run(workdir: Path) -> None:
    """run --template with a name that does not exist says so and leaves no run behind."""
    result = cli("run", str(EXAMPLES), "--template", "no-such-template")
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "no-such-template" in lines[0]
    status = cli("status")
    assert "no runs yet" in status.stderr
    assert not (workdir / ".sender" / "maildir" / "new").exists()


async def test_library_run_with_an_unknown_template_stores_no_run(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """BulkRunner refuses a template it cannot find before it creates the run."""
    settings = SenderSettings(
        from_address=Address("noreply@learning.example.com"),
        links=LinkSettings(secret_keys=("k" * 32,), base_url="https://lms.example.com/login"),
    )
    sender = Sender(settings, transport=SmtpTransport(smtp_server.smtp_settings()))
    runner = BulkRunner(sender, store, RunSettings(template="no-such-template"))
    with pytest.raises(TemplateError, match="no-such-template"):
        await runner.run("r-1", [])
    await sender.aclose()
    assert await store.latest_run() is None


def test_the_quickstart_on_the_capture_server_is_not_paced(workdir: Path) -> None:
    """With the embedded capture server and no limits asked for, nothing is rate-limited."""
    result = cli("run", str(EXAMPLES))
    assert result.exit_code == 0, result.stderr
    assert "no overall rate limit, no per-domain limit" in result.stderr
    assert len(list((workdir / ".sender" / "maildir" / "new").iterdir())) == 20


def test_limits_asked_for_apply_to_the_capture_server_too(workdir: Path) -> None:
    """--rate and --domain-rate given with the capture server are honoured."""
    result = cli("run", str(EXAMPLES), "--rate", "50", "--domain-rate", "600/min")
    assert result.exit_code == 0, result.stderr
    assert "at most 50 msgs/s, 600/min per domain" in result.stderr


def test_limits_in_sender_toml_apply_to_the_capture_server(workdir: Path) -> None:
    """rate in sender.toml is a limit the user set, so the capture server keeps it."""
    (workdir / "sender.toml").write_text("rate = 40\n", encoding="utf-8")
    result = cli("run", str(EXAMPLES))
    assert result.exit_code == 0, result.stderr
    assert "at most 40 msgs/s, no per-domain limit" in result.stderr


async def test_real_servers_keep_the_default_limits(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """With --smtp, the default limits protect the receivers as before."""
    (workdir / "p.csv").write_text(
        "email,name,participant_id,course_id\na@d.example,A,p-1,c\n", encoding="utf-8"
    )
    url = smtp_url(smtp_server)
    result = await asyncio.to_thread(cli, "run", "p.csv", "--smtp", url, "--no-validate")
    assert result.exit_code == 0, result.stderr
    assert "at most 14 msgs/s, 30/min per domain" in result.stderr
