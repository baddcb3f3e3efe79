"""Exit codes and --json for scripts, against a real scripted SMTP server (issue 10, 4.3, 4.4)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from sender.store import BounceRecord, SqliteStore
from sender.testing import RecordingSMTPServer, Stage
from tests.helpers import cli_with, smtp_url, spawn_sender

ENV = {
    "SENDER_SECRET_KEYS": "exit-code-test-key-aaaaaaaaaaaaaaa",
    "SENDER_FROM": "Example Academy <noreply@learning.example.com>",
    "SENDER_BASE_URL": "https://learning.example.com/login",
}
CSV = (
    "email,name,participant_id,course_id\n"
    "a@d1.example,A,p-1,c\n"
    "b@d2.example,B,p-2,c\n"
    "c@d1.example,C,p-3,c\n"
)


@pytest.fixture(autouse=True)
def workdir(workdir: Path) -> Path:
    """The shared empty working directory (tests/conftest.py), holding p.csv."""
    (workdir / "p.csv").write_text(CSV, encoding="utf-8")
    return workdir


cli = cli_with(**ENV)


async def run_json(server: RecordingSMTPServer, *args: str) -> tuple[int, dict[str, object]]:
    smtp = smtp_url(server)
    # Unpaced: a@ and c@ share d1.example, and the default 30/min per domain would wait 2 s.
    named = ("--run-id", "r-x", "--domain-rate", "0") if args[0] == "run" else ()
    result = await asyncio.to_thread(cli, *args, "--smtp", smtp, "--no-validate", "--json", *named)
    return result.exit_code, json.loads(result.stdout)  # stdout holds the one object only


async def test_all_sent_exits_0_with_one_json_object(smtp_server: RecordingSMTPServer) -> None:
    """run --json: everything sent is exit 0, and stdout is exactly one JSON object."""
    code, data = await run_json(smtp_server, "run", "p.csv")
    assert code == 0
    assert data["run_id"] == "r-x"
    assert data["state"] == "done"
    assert data["counts"]["sent"] == 3  # type: ignore[index]
    assert data["sent_now"] == 3
    assert data["skipped"] == []
    assert data["exit_code"] == 0
    assert data["changes"] is None
    assert "home" in data
    edited = CSV + "d@d2.example,D,p-4,c\n"  # one row added: only it is sent
    await asyncio.to_thread(Path("p.csv").write_text, edited, encoding="utf-8")
    code, again = await run_json(smtp_server, "run", "p.csv")
    assert code == 0
    assert again["sent_now"] == 1
    assert again["changes"] == {"new": 1, "corrected": 0, "removed": 0, "unchanged": 3}
    assert len(smtp_server.messages) == 4


async def test_permanent_refusal_exits_3(smtp_server: RecordingSMTPServer) -> None:
    """A 550 for one recipient: the run finishes with a failed row, exit 3."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="b@d2.example")
    code, data = await run_json(smtp_server, "run", "p.csv")
    assert code == 3
    assert data["counts"]["failed"] == 1  # type: ignore[index]
    assert data["counts"]["sent"] == 2  # type: ignore[index]


async def test_deferral_exits_3_and_retry_shows_no_negative_count(
    smtp_server: RecordingSMTPServer,
) -> None:
    """A 451 leaves a deferred row (exit 3); `retry --json` then sends it and exits 0."""
    smtp_server.reply(Stage.RCPT, "451 4.7.1 Greylisted", address="b@d2.example", times=1)
    code, data = await run_json(smtp_server, "run", "p.csv")
    assert code == 3
    assert data["counts"]["deferred"] == 1  # type: ignore[index]
    assert data["next_attempt_at"] is not None
    smtp = smtp_url(smtp_server)
    retried = await asyncio.to_thread(cli, "retry", "r-x", "--smtp", smtp, "--json")
    assert retried.exit_code == 0, retried.stderr
    again = json.loads(retried.stdout)
    assert again["counts"]["sent"] == 3
    assert all(n >= 0 for n in again["counts"].values())
    assert "-1" not in retried.stderr


async def test_spent_bounce_budget_pauses_with_exit_4_and_names_force(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """A spent bounce budget pauses the run (exit 4); the report names `resume --force`."""
    (workdir / "sender.toml").write_text("bounce_budget = 1\n", encoding="utf-8")
    store = SqliteStore(workdir / ".sender" / "outbox.sqlite3")
    try:
        await store.add_bounce(
            BounceRecord("b-1", "gone@d9.example", "hard", "5.1.1", "550", "no such user", 1e12)
        )
        await store.add_bounce(
            BounceRecord("b-2", "lost@d9.example", "hard", "5.1.1", "550", "no such user", 1e12)
        )
    finally:
        await store.aclose()
    smtp = smtp_url(smtp_server)
    result = await asyncio.to_thread(
        cli, "run", "p.csv", "--smtp", smtp, "--no-validate", "--run-id", "r-b"
    )
    assert result.exit_code == 4, result.stdout + result.stderr
    assert smtp_server.messages == ()
    assert "sender resume r-b --force" in result.stdout
    code, data = await run_json(smtp_server, "resume", "r-b")
    assert code == 4
    assert data["state"] == "paused"
    assert str(data["paused_reason"]).startswith("bounce")
    status = await asyncio.to_thread(cli, "status", "r-b")
    assert "sender resume r-b --force" in status.stdout


def test_csv_without_the_columns_exits_1() -> None:
    """Refused input (a CSV without the required columns) is exit 1, one line."""
    Path("bad.csv").write_text("mail,who\nx@d.example,X\n", encoding="utf-8")
    result = cli("run", "bad.csv")
    assert result.exit_code == 1
    assert "lacks the column" in result.stderr


def test_bad_configuration_exits_2(workdir: Path) -> None:
    """A configuration mistake (workers = 0 in sender.toml) is exit 2."""
    (workdir / "sender.toml").write_text("workers = 0\n", encoding="utf-8")
    result = cli("run", "p.csv")
    assert result.exit_code == 2
    assert "workers" in result.stderr


def test_status_all_lists_runs_as_table_and_json() -> None:
    """status --all lists each run with its template, state and counts; --json too."""
    assert cli("run", "p.csv", "--run-id", "r-one", "--no-progress").exit_code == 0
    assert cli("run", "p.csv", "--run-id", "r-two", "--no-progress").exit_code == 0
    listed = cli("status", "--all")
    assert listed.exit_code == 0
    assert "r-one" in listed.stdout
    assert "r-two" in listed.stdout
    data = json.loads(cli("status", "--all", "--json").stdout)
    assert [run["run_id"] for run in data["runs"]] == ["r-two", "r-one"]
    assert data["runs"][0]["counts"]["sent"] == 3
    assert data["runs"][0]["state"] == "done"


def test_status_all_never_cuts_a_run_id_on_a_narrow_terminal() -> None:
    """status --all prints whole run ids at 80 columns: they are what resume needs."""
    assert cli("run", "p.csv", "--no-progress").exit_code == 0
    (run,) = json.loads(cli("status", "--all", "--json").stdout)["runs"]
    listed = cli("status", "--all")
    assert run["run_id"] in listed.stdout
    assert f"sent {run['counts']['sent']}" in listed.stdout


async def test_send_json_and_exit_3_on_refusal(smtp_server: RecordingSMTPServer) -> None:
    """send --json prints one object; a 550 is exit 3 (sent nothing), a 250 exit 0."""
    smtp = smtp_url(smtp_server)
    args = ("send", "--name", "K", "--participant", "p-1", "--course", "c", "--smtp", smtp)
    ok = await asyncio.to_thread(cli, *args, "--to", "k@d.example", "--json")
    assert ok.exit_code == 0, ok.stderr
    sent = json.loads(ok.stdout)
    assert sent["status"] == "accepted"
    assert sent["message_id"]
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="gone@d.example")
    refused = await asyncio.to_thread(cli, *args, "--to", "gone@d.example", "--json")
    assert refused.exit_code == 3
    data = json.loads(refused.stdout)
    assert data["status"] == "permanent"
    assert "550" in data["reply"]


def test_invite_json_is_one_object_with_the_event_and_its_runs() -> None:
    """invite --json: {event_uid, runs: [...]} on stdout and nothing else; all sent is exit 0."""
    event = Path(__file__).resolve().parent.parent / "examples" / "event.toml"
    result = cli("invite", str(event), "p.csv", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["event_uid"]
    (run,) = data["runs"]
    assert run["counts"]["sent"] == 3
    assert run["exit_code"] == 0


def test_help_documents_the_exit_codes() -> None:
    """`sender --help` lists every exit code a script may see."""
    text = cli("--help").stdout
    for line in ("0    everything was sent", "3    finished", "4    paused", "130  interrupted"):
        assert line in text
    assert "1    refused input" in text
    assert "2    configuration" in text


@pytest.mark.slow
async def test_ctrl_c_pauses_the_run_and_exits_130(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """SIGINT during a real run: what is in flight finishes, the run pauses, exit 130."""
    smtp_server.delay(Stage.RCPT, 0.5)
    smtp = smtp_url(smtp_server)
    process = await spawn_sender(
        workdir,
        "run",
        "p.csv",
        "--smtp",
        smtp,
        "--no-validate",
        "--no-progress",
        "--concurrency",
        "1",
        "--run-id",
        "r-int",
        env=ENV,
    )
    try:
        async with asyncio.timeout(60):
            await smtp_server.wait_for_messages(1)
            process.send_signal(signal.SIGINT)
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130, stderr.decode()
    assert "sender resume r-int" in stdout.decode()
    assert len(smtp_server.messages) < 3
    status = json.loads((await asyncio.to_thread(cli, "status", "r-int", "--json")).stdout)
    assert status["state"] == "paused"
    assert status["paused_reason"] == "interrupted"


@pytest.mark.slow
async def test_ctrl_c_reaching_the_workers_too_loses_and_repeats_nothing(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """A terminal's Ctrl-C goes to the whole process group, worker processes included: the
    run still pauses cleanly (exit 130, nothing left 'sending', no traceback), and a resume
    sends each participant exactly once."""
    rows = "".join(f"u{i}@d{i % 3}.example,U{i},p-{i},c\n" for i in range(12))
    (workdir / "many.csv").write_text("email,name,participant_id,course_id\n" + rows, "utf-8")
    smtp_server.delay(Stage.RCPT, 0.3)
    smtp = smtp_url(smtp_server)
    run = ("many.csv", "--smtp", smtp, "--no-validate", "--no-progress", "--domain-rate", "0")
    options = ("--workers", "2", "--concurrency", "2", "--run-id", "r-group")
    process = await spawn_sender(workdir, "run", *run, *options, env=ENV, own_group=True)
    try:
        async with asyncio.timeout(60):
            await smtp_server.wait_for_messages(1)
            os.killpg(process.pid, signal.SIGINT)
            _stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode == 130, stderr.decode()
    assert "Traceback" not in stderr.decode()
    status = json.loads((await asyncio.to_thread(cli, "status", "r-group", "--json")).stdout)
    assert status["state"] == "paused"
    assert status["paused_reason"] == "interrupted"
    assert status["counts"].get("sending", 0) == 0
    resumed = await asyncio.to_thread(cli, "resume", "r-group", "--smtp", smtp, "--no-progress")
    assert resumed.exit_code == 0, resumed.stderr
    received = sorted(recipient for m in smtp_server.messages for recipient in m.recipients)
    assert received == sorted(f"u{i}@d{i % 3}.example" for i in range(12))


async def test_report_names_rows_skipped_at_send_time(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """A bad value in a later row is caught when composed: the report names its row and why."""
    rows = "".join(f"u{i}@d.example,U{i},p-{i},c,Course {i}\n" for i in range(2, 8))
    (workdir / "q.csv").write_text(
        "email,name,participant_id,course_id,course_name\n" + rows + "bad@d.example,B,p-b,c,A\0B\n",
        encoding="utf-8",
    )
    smtp = smtp_url(smtp_server)
    result = await asyncio.to_thread(
        cli, "run", "q.csv", "--smtp", smtp, "--no-validate", "--no-progress", "--domain-rate", "0"
    )
    assert result.exit_code == 0, result.stderr
    assert "row 8 (bad@d.example): skipped: field 'Subject'" in result.stdout
    status = await asyncio.to_thread(cli, "status", "--json")
    (skipped,) = json.loads(status.stdout)["skipped"]
    assert skipped["row"] == 8
    assert "Subject" in skipped["reason"]
