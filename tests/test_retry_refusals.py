"""A `sender retry` that is refused changes nothing: failed and deferred messages stay as they
were, and so does the run's state, whatever the refusal (a live sender, the transport, the
From and base URL, a missing password)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from sender.store import SqliteStore
from sender.testing import RecordingSMTPServer, Stage
from tests.helpers import IDENTITY, cli_with, run_dir, smtp_url

KEY = "retry-refusals-test-key-aaaaaaaaaaaa"
RUN = "r-retry"

cli = cli_with(SENDER_SECRET_KEYS=KEY, **IDENTITY)


@pytest.fixture(autouse=True)
def workdir(workdir: Path) -> Path:
    """The shared empty working directory with p.csv and no pacing per domain."""
    return run_dir(workdir)


async def status() -> dict[str, Any]:
    result = await asyncio.to_thread(cli, "status", RUN, "--json")
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def stored_state(data: dict[str, Any]) -> dict[str, Any]:
    """What a refused retry must leave alone: counts, state, pause and next retry."""
    return {
        key: data[key] for key in ("counts", "state", "paused_reason", "next_attempt_at", "options")
    }


async def start_with_one_deferred(url: str, server: RecordingSMTPServer) -> None:
    """Run p.csv through ``url``; b@ is greylisted, so the run ends with it deferred."""
    server.reply(Stage.RCPT, "451 4.7.1 Greylisted", address="b@d.example", times=1)
    started = await asyncio.to_thread(
        cli, "run", "p.csv", "--run-id", RUN, "--smtp", url, "--no-validate", "--no-progress"
    )
    assert started.exit_code == 3, started.stderr
    assert (await status())["counts"]["deferred"] == 1


async def outbox(action: Callable[[SqliteStore], Awaitable[None]]) -> None:
    store = SqliteStore(Path.cwd() / ".sender" / "outbox.sqlite3")
    try:
        await action(store)
    finally:
        await store.aclose()


async def held_by_another_sender(store: SqliteStore) -> None:
    """Another live sender (on another host) holds the run's lease."""
    taken = await store.acquire_run(RUN, owner="other-host:4242/runner-1", now=time.time(), ttl=300)
    assert taken


async def started_by_an_older_sender(store: SqliteStore) -> None:
    """The run's transport was never recorded (an outbox from before transports were kept):
    retry without --smtp must not finish it through the capture server."""
    await store.update_run_options(RUN, {"transport": None})


async def unchanged(_store: SqliteStore) -> None:
    """The run as it ended."""


async def retry(url: str, *, other: str | None = None, identity: bool = True) -> Result:
    """``sender retry RUN``, with ``--smtp other`` if given; without a From and base URL
    unless ``identity``."""
    command = cli if identity else cli_with(SENDER_SECRET_KEYS=KEY)
    args = ["retry", RUN, "--no-progress"]
    if other is not None:
        args += ["--smtp", other]
    elif not identity:
        args += ["--smtp", url]
    return await asyncio.to_thread(command, *args)


REFUSALS: dict[str, tuple[Callable[[SqliteStore], Awaitable[None]], dict[str, Any], int, str]] = {
    "run-busy": (held_by_another_sender, {}, 1, "being sent by"),
    "older-run-without-transport": (started_by_an_older_sender, {}, 2, "--switch-transport"),
    "another-server": (unchanged, {"other": "smtp://127.0.0.1:9"}, 2, "--switch-transport"),
    "placeholder-identity": (unchanged, {"identity": False}, 2, "SENDER_FROM"),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_a_refused_retry_leaves_the_run_exactly_as_it_was(
    refusal: str, smtp_server: RecordingSMTPServer
) -> None:
    """A retry refused for any reason leaves failed/deferred counts and the run state unchanged."""
    url = smtp_url(smtp_server)
    await start_with_one_deferred(url, smtp_server)
    prepare, flags, code, words = REFUSALS[refusal]
    await outbox(prepare)
    before = stored_state(await status())
    refused = await retry(url, **flags)
    assert refused.exit_code == code, refused.stdout + refused.stderr
    assert "Traceback" not in refused.output + refused.stderr
    assert words in refused.stderr
    assert stored_state(await status()) == before
    assert "queued again" not in refused.stdout + refused.stderr
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == [
        "a@d.example",
        "c@e.example",
    ]


async def test_a_retry_without_a_password_for_the_run_s_server_changes_nothing(
    starttls_server: RecordingSMTPServer, starttls_url: str, smtp_password: str
) -> None:
    """A retry refused because no password for the run's server is configured changes nothing."""
    await start_with_one_deferred(starttls_url, starttls_server)
    before = stored_state(await status())
    refused = await asyncio.to_thread(cli, "retry", RUN, "--no-progress")
    assert refused.exit_code == 2, refused.stderr
    assert "SENDER_SMTP_URL" in refused.stderr
    assert smtp_password not in refused.stderr
    assert stored_state(await status()) == before


async def test_an_accepted_retry_still_queues_the_deferred_message_again(
    smtp_server: RecordingSMTPServer,
) -> None:
    """The retry that passes every check sends the deferred message (and says so)."""
    url = smtp_url(smtp_server)
    await start_with_one_deferred(url, smtp_server)
    retried = await asyncio.to_thread(cli, "retry", RUN, "--no-progress")
    assert retried.exit_code == 0, retried.stderr
    assert "1 failed or deferred message(s) queued again" in retried.stdout
    assert (await status())["counts"]["deferred"] == 0
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == [
        "a@d.example",
        "b@d.example",
        "c@e.example",
    ]
