"""A run keeps the transport it was started with: resume, retry and re-runs send through it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import Result

from sender.testing import RecordingSMTPServer, Stage
from tests.helpers import IDENTITY, RETRY_DUE, cli_with, run_dir, smtp_url

KEY = "run-transport-test-key-aaaaaaaaaaaa"


@pytest.fixture(autouse=True)
def workdir(workdir: Path) -> Path:
    """The shared empty working directory (tests/conftest.py), with p.csv and a fast retry."""
    return run_dir(workdir)


cli = cli_with(SENDER_SECRET_KEYS=KEY, **IDENTITY)


def captured(workdir: Path) -> list[Path]:
    new = workdir / ".sender" / "maildir" / "new"
    return list(new.iterdir()) if new.is_dir() else []


def one_line_error(result: Result, *words: str) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def recipients(server: RecordingSMTPServer) -> list[str]:
    return sorted(r for m in server.messages for r in m.recipients)


def sent_everyone_through(server: RecordingSMTPServer, result: Result) -> None:
    """``result`` exited 0 with all three rows sent through ``server``, none captured."""
    assert result.exit_code == 0, result.stderr
    assert recipients(server) == ["a@d.example", "b@d.example", "c@e.example"]
    assert captured(Path.cwd()) == []


async def start_with_one_deferred(
    server: RecordingSMTPServer, url: str | None = None, *, reply: str = "451 4.7.1 Greylisted"
) -> None:
    """Run p.csv through ``url`` (default: the server's plain smtp://); b@ is refused once
    with the temporary ``reply``, so the run ends with it deferred, its retry due."""
    url = url or smtp_url(server)
    server.reply(Stage.RCPT, reply, address="b@d.example", times=1)
    first = await asyncio.to_thread(
        cli, "run", "p.csv", "--run-id", "r-t", "--smtp", url, "--no-validate"
    )
    assert first.exit_code in (0, 3), first.stderr
    assert recipients(server) == ["a@d.example", "c@e.example"]
    await asyncio.sleep(RETRY_DUE)


async def test_resume_without_smtp_finishes_through_the_run_s_own_server(
    starttls_server: RecordingSMTPServer, starttls_url: str, smtp_user: str, smtp_password: str
) -> None:
    """resume without --smtp sends the rest through the run's server, credentials from config."""
    host = f"{starttls_server.host}:{starttls_server.port}"
    await start_with_one_deferred(starttls_server, starttls_url)
    status = json.loads((await asyncio.to_thread(cli, "status", "r-t", "--json")).stdout)
    stored = status["options"]["transport"]
    assert stored == f"smtp+starttls://{smtp_user}@{host}"
    assert smtp_password not in json.dumps(status)
    resumed = await asyncio.to_thread(cli, "resume", "r-t", SENDER_SMTP_URL=starttls_url)
    sent_everyone_through(starttls_server, resumed)
    assert f"Sent through smtp+starttls://{smtp_user}:***@{host}" in resumed.stdout


async def test_resume_with_no_password_for_the_run_s_server_is_one_line(
    starttls_server: RecordingSMTPServer, starttls_url: str, smtp_user: str, smtp_password: str
) -> None:
    """A run on a server that needs a login, resumed with no password for it, is refused."""
    host = f"{starttls_server.host}:{starttls_server.port}"
    await start_with_one_deferred(starttls_server, starttls_url)
    resumed = await asyncio.to_thread(cli, "resume", "r-t")
    line = one_line_error(resumed, "r-t", f"smtp+starttls://{smtp_user}@{host}", "SENDER_SMTP_URL")
    assert smtp_password not in line
    assert recipients(starttls_server) == ["a@d.example", "c@e.example"]
    assert captured(Path.cwd()) == []


async def test_resume_without_smtp_reuses_a_server_that_needs_no_login(
    smtp_server: RecordingSMTPServer,
) -> None:
    """A run on a server without a login resumes there with no configuration at all."""
    await start_with_one_deferred(smtp_server)
    resumed = await asyncio.to_thread(cli, "resume", "r-t")
    sent_everyone_through(smtp_server, resumed)


async def test_retry_without_smtp_sends_through_the_run_s_server(
    smtp_server: RecordingSMTPServer,
) -> None:
    """retry of a run started with --smtp sends what is left through that server again."""
    await start_with_one_deferred(smtp_server, reply="452 4.2.2 Mailbox full")
    retried = await asyncio.to_thread(cli, "retry", "r-t")
    sent_everyone_through(smtp_server, retried)


async def test_another_server_on_resume_needs_switch_transport(
    smtp_server: RecordingSMTPServer,
) -> None:
    """--smtp naming another server is refused, and taken with --switch-transport."""
    url = smtp_url(smtp_server)
    await start_with_one_deferred(smtp_server, url)
    async with RecordingSMTPServer() as other:
        other_url = smtp_url(other)
        refused = await asyncio.to_thread(cli, "resume", "r-t", "--smtp", other_url)
        one_line_error(refused, "r-t", url, "--switch-transport")
        assert not other.messages
        switched = await asyncio.to_thread(
            cli, "resume", "r-t", "--smtp", other_url, "--switch-transport"
        )
        assert switched.exit_code == 0, switched.stderr
        assert recipients(other) == ["b@d.example"]
    status = json.loads((await asyncio.to_thread(cli, "status", "r-t", "--json")).stdout)
    assert status["options"]["transport"] == other_url


async def test_a_capture_run_resumed_with_smtp_needs_switch_transport(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """A run started on the capture server does not move to a real one without the flag."""
    started = await asyncio.to_thread(cli, "run", "p.csv", "--run-id", "r-c")
    assert started.exit_code == 0, started.stderr
    assert len(captured(workdir)) == 3
    url = smtp_url(smtp_server)
    refused = await asyncio.to_thread(cli, "run", "p.csv", "--run-id", "r-c", "--smtp", url)
    one_line_error(refused, "r-c", "capture", "--switch-transport")
    assert not smtp_server.messages


EVENT_FILE = Path(__file__).resolve().parent.parent / "examples" / "event.toml"


async def test_invite_again_without_smtp_never_sends_an_event_run_to_the_capture_server(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """invite run again without --smtp refuses to finish its run elsewhere; the flag switches."""
    url = smtp_url(smtp_server)
    event = ["invite", str(EVENT_FILE), "p.csv", "--no-validate", "--no-progress"]
    smtp_server.reply(Stage.RCPT, "451 4.7.1 Greylisted", address="b@d.example", times=1)
    first = await asyncio.to_thread(cli, *event, "--smtp", url)
    assert first.exit_code in (0, 3), first.stderr
    assert recipients(smtp_server) == ["a@d.example", "c@e.example"]
    await asyncio.sleep(RETRY_DUE)
    again = await asyncio.to_thread(cli, *event)
    assert again.exit_code == 2
    (line,) = [line for line in again.stderr.splitlines() if "error" in line]
    assert url in line
    assert "--switch-transport" in line
    assert captured(workdir) == []
    same = await asyncio.to_thread(cli, *event, "--smtp", url)
    sent_everyone_through(smtp_server, same)
