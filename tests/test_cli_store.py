"""The ``store`` setting on the command line: every command opens the outbox it names."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from sender.errors import ConfigurationError
from sender.store import open_store
from sender.storeurl import store_file
from sender.testing import RecordingSMTPServer
from tests.helpers import IDENTITY, cli_with, people_csv, run_python, smtp_url

KEY = "cli-store-test-key-aaaaaaaaaaaaaaa"
PEOPLE = [f"user{i}@{domain}" for i in range(6) for domain in ("a.example", "b.example")]

pytestmark = pytest.mark.usefixtures("workdir")

cli = cli_with(SENDER_SECRET_KEYS=KEY, **IDENTITY)


@pytest.fixture
def pg_store(postgres_database: Callable[[str], str]) -> str:
    """A fresh PostgreSQL database of its own, as a store URL (the server's real one)."""
    return postgres_database("cli")


def assert_one_line_error(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


async def test_run_and_status_share_a_postgresql_store(
    smtp_server: RecordingSMTPServer, pg_store: str, workdir: Path
) -> None:
    """`run --store postgresql://…` delivers each participant once, and `status --json`
    with the same store reports them all sent; the home gets no SQLite outbox."""
    people_csv(workdir / "p.csv", PEOPLE)
    smtp = smtp_url(smtp_server)
    args = ("--store", pg_store)
    run = await asyncio.to_thread(
        cli,
        *args,
        "run",
        "p.csv",
        "--smtp",
        smtp,
        "--run-id",
        "r-pg",
        "--no-validate",
        "--domain-rate",
        "6000/min",
    )
    assert run.exit_code == 0, run.stderr
    status = await asyncio.to_thread(cli, *args, "status", "r-pg", "--json")
    assert status.exit_code == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["total"] == len(PEOPLE)
    assert report["counts"]["sent"] == len(PEOPLE)
    delivered = Counter(r for message in smtp_server.messages for r in message.recipients)
    assert delivered == Counter(PEOPLE)
    assert not (workdir / ".sender" / "outbox.sqlite3").exists()
    latest = await asyncio.to_thread(cli, *args, "status", "--json")
    assert json.loads(latest.stdout)["run_id"] == "r-pg"


async def test_sender_store_in_the_environment_reaches_every_command(
    smtp_server: RecordingSMTPServer, pg_store: str, workdir: Path
) -> None:
    """SENDER_STORE alone sends into PostgreSQL; then retry, the run list and the
    suppression list read the same database."""
    people_csv(workdir / "p.csv", PEOPLE[:2])
    env = {"SENDER_STORE": pg_store}
    smtp = smtp_url(smtp_server)
    run = await asyncio.to_thread(
        cli, "run", "p.csv", "--smtp", smtp, "--run-id", "r-env", "--no-validate", **env
    )
    assert run.exit_code == 0, run.stderr
    listed = await asyncio.to_thread(cli, "status", "--all", "--json", **env)
    assert listed.exit_code == 0, listed.stderr
    assert [run["run_id"] for run in json.loads(listed.stdout)["runs"]] == ["r-env"]
    retried = await asyncio.to_thread(cli, "retry", "r-env", "--smtp", smtp, **env)
    assert retried.exit_code == 0, retried.stderr
    added = await asyncio.to_thread(cli, "suppress", "add", "ada@example.org", **env)
    assert added.exit_code == 0, added.stderr
    shown = await asyncio.to_thread(cli, "--store", pg_store, "suppress", "list")
    assert "ada@example.org" in shown.stdout
    home = await asyncio.to_thread(cli, "suppress", "list")  # the home's own outbox
    assert "ada@example.org" not in home.stdout
    assert len(smtp_server.messages) == 2


def test_status_without_runs_names_the_store_without_its_password(
    pg_store: str, workdir: Path
) -> None:
    """`status` on an empty PostgreSQL store says which store it looked in, no password."""
    with_password = pg_store.replace("://postgres@", "://postgres:hunter2@")
    result = cli("--store", with_password, "status")
    assert result.exit_code == 1
    assert "no runs yet in " + pg_store in result.stderr
    assert "hunter2" not in result.output + result.stderr


@pytest.mark.parametrize(
    "url", ["postgresql://lms:hunter2@db.example/", "mysql://lms:hunter2@db/x", "outbox.db"]
)
@pytest.mark.parametrize("command", [("status",), ("suppress", "list"), ("bounces", "report")])
def test_a_bad_store_url_is_one_line_naming_the_setting(url: str, command: tuple[str, ...]) -> None:
    """A URL that names no store: exit 2, one line naming `store`, never the password."""
    result = cli("--store", url, *command)
    assert_one_line_error(result, "store", "sqlite:///", "postgresql://")
    assert "hunter2" not in result.output + result.stderr


def test_an_unreachable_postgresql_store_is_one_line_without_its_password(
    closed_port: int,
) -> None:
    """A PostgreSQL server that is not there: one line naming the store, no password."""
    url = f"postgresql://lms:hunter2@127.0.0.1:{closed_port}/sender"
    result = cli("--store", url, "status")
    assert_one_line_error(result, f"127.0.0.1:{closed_port}")
    assert "hunter2" not in result.output + result.stderr


def test_a_sqlite_store_elsewhere_is_used_and_shown(workdir: Path) -> None:
    """--store sqlite:///other.db keeps the outbox there, and summaries name it."""
    added = cli("--store", "sqlite:///other.db", "suppress", "add", "ada@example.org")
    assert added.exit_code == 0, added.stderr
    assert f"store: sqlite:///{workdir}/other.db" in added.stdout
    assert (workdir / "other.db").is_file()
    assert not (workdir / ".sender" / "outbox.sqlite3").exists()
    assert "ada@example.org" in cli("--store", "sqlite:///other.db", "suppress", "list").stdout


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///relative/outbox.db",
        "sqlite:///{tmp}/outbox.db",
        "SQLite:///x",
        "postgresql://lms@db.example:5432/sender",
        "postgres://db.example/sender",
        "postgresql://lms:pw@db.example/sender?sslmode=require",
        "sqlite://",
        "sqlite:///",
        "sqlite:outbox.db",
        "postgresql://db.example",
        "postgresql://db.example/",
        "mysql://db.example/sender",
        "redis://127.0.0.1:6379/0",
        "outbox.sqlite3",
        "",
    ],
)
async def test_the_settings_and_open_store_read_a_url_alike(url: str, tmp_path: Path) -> None:
    """load_config's check and open_store accept and refuse the same URLs."""
    url = url.format(tmp=tmp_path)  # an absolute path, never one outside the test's folders
    try:
        store = open_store(url)
    except ConfigurationError:
        opened = False
    else:
        opened = True
        await store.aclose()
    try:
        store_file(url)
    except ConfigurationError:
        checked = False
    else:
        checked = True
    assert checked == opened


@pytest.mark.slow
async def test_worker_processes_send_for_a_postgresql_store(pg_store: str, workdir: Path) -> None:
    """`run --workers 2 --store postgresql://…` in a real process: every participant once,
    and its password in no line of output or of the --debug log."""
    people_csv(workdir / "p.csv", PEOPLE)
    url = pg_store.replace("://postgres@", "://postgres:hunter2@")  # trust auth ignores it
    completed = await asyncio.to_thread(
        run_python,
        workdir,
        *("-m", "sender", "--debug", "--store", url, "run", "p.csv", "--workers", "2"),
    )
    assert completed.returncode == 0, completed.stderr
    assert "in 2 worker processes" in completed.stderr
    assert "hunter2" not in completed.stdout + completed.stderr
    files = list((workdir / ".sender" / "maildir" / "new").iterdir())
    delivered = Counter(
        email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["Delivered-To"]
        for f in files
    )
    assert delivered == Counter(PEOPLE)
    status = await asyncio.to_thread(
        run_python, workdir, "-m", "sender", "--store", pg_store, "status", "--json"
    )
    assert json.loads(status.stdout)["counts"]["sent"] == len(PEOPLE)
