"""A relay that accepts connections and never answers pauses the run, which stays resumable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sender import Participant, Sender
from sender.bulk.runner import BulkRunner, RunSettings
from sender.config import SmtpSettings, load_config
from sender.errors import ConfigurationError
from sender.pacing.schedule import RetryPolicy, Scheduler
from sender.store import MessageState, RunState, SqliteStore
from sender.testing import RecordingSMTPServer, Stage
from sender.transport import SmtpTransport
from tests.helpers import IDENTITY, UNLIMITED, people_csv, sender_settings, spawn_sender

SETTINGS = sender_settings()
QUICK_RETRY = RetryPolicy(first_retry=0.05, max_interval=0.2, jitter=0.0)
ROWS = 12


class SilentRelay:
    """A TCP server on loopback that accepts every connection and never says a word."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> SilentRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.close()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._open.add(writer)
        try:
            await reader.read()  # until the client gives up and closes
        finally:
            self._open.discard(writer)
            writer.close()


@pytest.fixture
async def relay() -> AsyncIterator[SilentRelay]:
    """A started relay that never answers."""
    async with SilentRelay() as server:
        yield server


def people(count: int) -> list[Participant]:
    return [
        Participant(f"user{i}@d{i % 3}.example", f"User {i}", f"p-{i}", "PY101")
        for i in range(count)
    ]


def runner_for(smtp: SmtpSettings, store: SqliteStore, **settings: object) -> BulkRunner:
    return BulkRunner(
        Sender(SETTINGS, transport=SmtpTransport(smtp)),
        store,
        RunSettings(concurrency=2, retry=QUICK_RETRY, **settings),  # type: ignore[arg-type]
        scheduler=Scheduler(UNLIMITED),
    )


async def test_silent_relay_pauses_the_run_naming_the_relay(
    relay: SilentRelay, store: SqliteStore, smtp_server: RecordingSMTPServer
) -> None:
    """After relay_timeouts timeouts per connection in a row the run pauses, and resumes later."""
    silent = SmtpSettings(
        host="127.0.0.1",
        port=relay.port,
        timeout=0.2,
        pool_size=2,
        username="lms",
        password="s3cret-relay-password",
        local_hostname="localhost",
    )
    runner = runner_for(silent, store, relay_timeouts=2)
    async with asyncio.timeout(30):
        report = await runner.run("r-stall", people(ROWS))
    await runner.sender.aclose()
    assert report.run.state is RunState.PAUSED
    reason = report.run.paused_reason or ""
    assert "relay not answering" in reason
    assert f"127.0.0.1:{relay.port}" in reason
    assert "s3cret" not in reason
    assert "lms" not in reason
    attempted = ROWS - report.counts.get(MessageState.QUEUED, 0)
    assert attempted <= 2 * 2 + 2  # relay_timeouts x connections, and what was in flight
    assert report.counts.get(MessageState.FAILED, 0) == 0
    assert report.counts.get(MessageState.SENT, 0) == 0

    resumed = runner_for(
        smtp_server.smtp_settings(pool_size=2), store, wait_for_retries=True, max_wait=1.0
    )
    async with asyncio.timeout(30):
        again = await resumed.run("r-stall")
    await resumed.sender.aclose()
    assert again.run.state is RunState.DONE
    assert again.counts[MessageState.SENT] == ROWS
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == sorted(
        p.email for p in people(ROWS)
    )


async def test_a_relay_that_answers_again_resets_the_count(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Timeouts separated by answers never pause a run: only timeouts in a row count."""
    for slow in ("user0@d0.example", "user5@d2.example"):  # never sent one after the other
        smtp_server.delay(Stage.RCPT, 3.0, address=slow, times=1)
    runner = BulkRunner(
        Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings(timeout=1.0))),
        store,
        RunSettings(concurrency=1, retry=QUICK_RETRY, relay_timeouts=2),
        scheduler=Scheduler(UNLIMITED),
    )
    async with asyncio.timeout(30):
        report = await runner.run("r-ok", people(6))
    await runner.sender.aclose()
    assert report.run.state is not RunState.PAUSED, report.run.paused_reason
    assert report.counts[MessageState.SENT] + report.counts.get(MessageState.DEFERRED, 0) == 6


def test_relay_timeouts_must_be_at_least_one() -> None:
    """A relay_timeouts below 1 is refused, naming the setting."""
    with pytest.raises(ConfigurationError, match="relay_timeouts") as caught:
        RunSettings(relay_timeouts=0)
    assert caught.value.setting == "relay_timeouts"


@pytest.mark.slow
@pytest.mark.parametrize("where", ["sender.toml", "flag"])
async def test_cli_run_pauses_on_a_silent_relay_with_exit_code_4(
    relay: SilentRelay, tmp_path: Path, where: str
) -> None:
    """`sender run` with relay_timeouts (sender.toml or --relay-timeouts) pauses with exit 4."""
    (tmp_path / "sender.toml").write_text(
        'smtp_timeout = "0.2s"\n' + ("relay_timeouts = 1\n" if where == "sender.toml" else ""),
        encoding="utf-8",
    )
    flags = ["--relay-timeouts", "1"] if where == "flag" else []
    people_csv(tmp_path / "people.csv", [f"user{i}@d.example" for i in range(8)])
    process = await spawn_sender(
        tmp_path,
        "run",
        "people.csv",
        "--smtp",
        f"smtp://lms:s3cret@127.0.0.1:{relay.port}",
        "--concurrency",
        "2",
        *("--domain-rate", "0"),  # all rows share d.example: unpaced, the timeouts come at once
        "--no-validate",
        "--no-progress",
        *flags,
        env={"SENDER_SECRET_KEYS": "relay-stall-test-key-0123456789abcdef", **IDENTITY},
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    output = stdout.decode() + stderr.decode()
    assert process.returncode == 4, output
    assert f"relay not answering: 2 timeouts in a row at 127.0.0.1:{relay.port}" in output
    assert "s3cret" not in output


def test_relay_timeouts_in_sender_toml(tmp_path: Path) -> None:
    """relay_timeouts is read from sender.toml; 0 is refused naming the setting."""
    config = tmp_path / "sender.toml"
    config.write_text("relay_timeouts = 5\n", encoding="utf-8")
    assert load_config(config_file=config, environ={}, state_dir=tmp_path).relay_timeouts == 5
    config.write_text("relay_timeouts = 0\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="relay_timeouts") as caught:
        load_config(config_file=config, environ={}, state_dir=tmp_path)
    assert caught.value.setting == "relay_timeouts"
