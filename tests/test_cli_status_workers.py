"""`sender status` lists the workers holding a lease, seen from another process."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from sender.testing import RecordingSMTPServer, Stage
from tests.helpers import IDENTITY, people_csv, smtp_url, spawn_sender, until

ENV = {"SENDER_SECRET_KEYS": "status-workers-test-key-0123456789", **IDENTITY}

pytestmark = pytest.mark.usefixtures("workdir")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """``--store URL`` for PostgreSQL (a fresh database), nothing for the home's SQLite."""
    if request.param == "sqlite":
        return ()
    create: Callable[[str], str] = request.getfixturevalue("postgres_database")
    return ("--store", create("status"))


async def sender(workdir: Path, *args: str) -> tuple[int | None, str, str]:
    """``sender ARGS`` as a subprocess, to the end: (exit code, stdout, stderr)."""
    process = await spawn_sender(workdir, *args, env=ENV)
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.slow
async def test_status_shows_the_sending_worker_then_none(
    smtp_server: RecordingSMTPServer, workdir: Path, store_args: tuple[str, ...]
) -> None:
    """While `sender run` sends, `status` from another process names its host, pid and run
    (JSON and text); once it finished, `workers` is empty and the text says nothing of them."""
    held = smtp_server.hold(Stage.DATA, times=1)  # until `status` has looked
    people_csv(workdir / "p.csv", ["a@a.example", "b@b.example"])
    run = await spawn_sender(
        workdir,
        *store_args,
        *("run", "p.csv", "--smtp", smtp_url(smtp_server), "--run-id", "r-slow"),
        *("--no-validate", "--no-progress", "--domain-rate", "0"),
        env=ENV,
    )
    try:
        await until(lambda: smtp_server.connections_opened >= 1, seconds=30)
        (code, stdout, stderr), (text_code, text, _) = await asyncio.gather(
            sender(workdir, *store_args, "status", "--json"),
            sender(workdir, *store_args, "status", "r-slow"),
        )
        assert run.returncode is None, "the run ended before `status` looked"
    finally:
        held.set()
        async with asyncio.timeout(60):
            run_out, run_err = await run.communicate()
    assert run.returncode == 0, run_out.decode() + run_err.decode()
    assert code == 0, stderr
    (worker,) = json.loads(stdout)["workers"]
    assert (worker["host"], worker["pid"]) == (socket.gethostname(), run.pid)
    assert worker["runs"] == ["r-slow"]
    assert worker["exited"] is False
    assert 0 <= worker["heartbeat_age"] < 30
    assert worker["heartbeat_at"] >= worker["started_at"]
    assert text_code == 0
    assert f"{socket.gethostname()} pid {run.pid}: heartbeat" in text
    assert "sending r-slow" in text

    code, stdout, stderr = await sender(workdir, *store_args, "status", "--json")
    assert code == 0, stderr
    after = json.loads(stdout)
    assert after["workers"] == []
    assert after["counts"]["sent"] == 2
    code, text, _ = await sender(workdir, *store_args, "status")
    assert code == 0
    assert "worker" not in text
    code, stdout, _ = await sender(workdir, *store_args, "status", "--all", "--json")
    assert json.loads(stdout)["workers"] == []


@pytest.mark.slow
async def test_status_marks_a_killed_worker_whose_lease_runs_on(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """A SIGKILLed `sender run` keeps its lease until it expires; `status` still lists it,
    marked exited (JSON) and "process gone" (text)."""
    smtp_server.hang(Stage.MAIL)
    people_csv(workdir / "p.csv", ["a@a.example"])
    run = await spawn_sender(
        workdir,
        *("run", "p.csv", "--smtp", smtp_url(smtp_server), "--run-id", "r-killed"),
        *("--no-validate", "--no-progress"),
        env=ENV,
    )
    try:
        await until(lambda: smtp_server.connections_opened >= 1, seconds=30)
    finally:
        run.send_signal(signal.SIGKILL)
        await run.communicate()
    code, stdout, stderr = await sender(workdir, "status", "--json")
    assert code == 0, stderr
    (worker,) = json.loads(stdout)["workers"]
    assert (worker["pid"], worker["exited"]) == (run.pid, True)
    code, text, _ = await sender(workdir, "status")
    assert f"pid {run.pid}" in text
    assert "process gone" in text
