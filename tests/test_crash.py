"""Crash safety: ``sender run`` killed with SIGKILL at any moment, then run again."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from sender.testing import RecordingSMTPServer
from tests.helpers import IDENTITY, people_csv, smtp_url, spawn_sender

pytestmark = pytest.mark.slow  # each case starts six `sender` processes, some with workers

ROWS = 600
CONCURRENCY = 4


def write_csv(path: Path) -> list[str]:
    addresses = [f"user{i}@d{i % 6}.example" for i in range(ROWS)]
    people_csv(path, addresses, locales=("en", "nb", "sv", "ja"))
    return addresses


async def sender_cli(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    return await spawn_sender(
        tmp_path, *args, env={"SENDER_SECRET_KEYS": "crash-test-key-0123456789abcdef", **IDENTITY}
    )


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_sigkill_never_skips_and_duplicates_only_in_flight(
    smtp_server: RecordingSMTPServer, tmp_path: Path, workers: int
) -> None:
    """Killed at several points and rerun: everyone gets mail, extras ≤ in-flight per kill.

    With worker processes only the dispatcher is killed, as a crash of it would be; its
    workers send what they hold and exit, and those messages count as in flight.
    """
    addresses = write_csv(tmp_path / "people.csv")
    command = [
        "run",
        "people.csv",
        "--smtp",
        smtp_url(smtp_server),
        "--rate",
        "400",
        "--domain-rate",
        "0",
        "--concurrency",
        str(CONCURRENCY),
        "--workers",
        str(workers),
        "--no-validate",
        "--no-progress",
    ]
    kills = 0
    for kill_after in (0, 90, 300, 480):
        process = await sender_cli(tmp_path, *command)
        if kill_after:
            async with asyncio.timeout(60):
                await smtp_server.wait_for_messages(kill_after)
        else:
            await asyncio.sleep(0.4)  # somewhere in start-up or ingest
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        await process.wait()
    final = await sender_cli(tmp_path, *command)
    async with asyncio.timeout(120):
        _, stderr = await final.communicate()
    assert final.returncode == 0, stderr.decode()
    received = Counter(r for m in smtp_server.messages for r in m.recipients)
    assert set(received) == set(addresses), "somebody was skipped"
    extra = sum(count - 1 for count in received.values())
    assert kills >= 3
    assert extra <= CONCURRENCY * kills, f"{extra} duplicates after {kills} kills"
    status = await sender_cli(tmp_path, "status", "--json")
    output, _ = await status.communicate()
    data = json.loads(output)
    assert data["counts"]["sent"] == ROWS
    assert data["state"] == "done"
