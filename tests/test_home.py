"""sender's home: where state lives, its file modes, and the key made on first use."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sender.client import Sender
from sender.config import load_config, local_secret
from sender.errors import ConfigurationError
from sender.home import tighten
from tests.helpers import clean_environment, cli_with

pytestmark = pytest.mark.usefixtures("workdir")


cli = cli_with()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the key made on first use (issue 10, 2.4) ---------------------------------------

# Each racer is a whole `python -m sender` (about a CPU-second of imports), all started at
# once so that they reach the home's first-use step together: ten collide as surely as forty.
RACERS = 10


@pytest.mark.slow
def test_concurrent_first_commands_all_end_with_the_same_key(tmp_path: Path) -> None:
    """Ten first-time `link issue` processes in a fresh home all succeed with one shared key."""
    home = tmp_path / "fresh"
    command = [sys.executable, "-m", "sender", "--home", str(home), "link", "issue"]
    processes = [
        subprocess.Popen(
            [*command, "--participant", f"p-{n}", "--course", "c"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_environment(),
        )
        for n in range(RACERS)
    ]
    results = [(p, *p.communicate(timeout=120)) for p in processes]
    failures = [err.decode() for p, _out, err in results if p.returncode != 0]
    assert failures == []
    key, _ = local_secret(home)
    config = load_config(environ={"SENDER_SECRET_KEYS": key}, state_dir=home)
    sender = Sender(config.sender)
    for n, (_p, out, _err) in enumerate(results):
        claims = sender.verify_link(out.decode().strip())
        assert claims.participant_id == f"p-{n}"
    assert [p.name for p in home.iterdir() if p.name.endswith(".tmp")] == []


def test_first_uses_that_arrive_together_all_read_one_key(tmp_path: Path) -> None:
    """Twenty threads released at once into a fresh home's first use all get the same key
    (ten fresh homes in turn: the processes above rarely meet so closely)."""
    for round_ in range(10):
        home = tmp_path / f"fresh-{round_}"
        barrier = threading.Barrier(20)

        def first_use(_: int, home: Path = home, barrier: threading.Barrier = barrier) -> str:
            barrier.wait()
            return local_secret(home)[0]

        with ThreadPoolExecutor(max_workers=20) as pool:
            keys = set(pool.map(first_use, range(20)))
        assert keys == {local_secret(home)[0]}
        assert [p.name for p in home.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.slow
def test_concurrent_first_commands_share_one_new_outbox(tmp_path: Path) -> None:
    """Ten first-time `suppress add` processes in a fresh home all succeed in one outbox."""
    home = tmp_path / "fresh"
    env = clean_environment() | {"SENDER_SECRET_KEYS": "home-test-key-aaaaaaaaaaaaaaaa"}
    command = [sys.executable, "-m", "sender", "--home", str(home), "suppress", "add"]
    processes = [
        subprocess.Popen(
            [*command, f"a{n}@example.org"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for n in range(RACERS)
    ]
    failures = [p.communicate(timeout=120)[1].decode() for p in processes]
    assert [p.returncode for p in processes] == [0] * RACERS, failures
    listed = cli("--home", str(home), "suppress", "list", **env)
    assert f"{RACERS} suppressed address(es)" in listed.stdout
    assert mode(home / "outbox.sqlite3") == 0o600


def test_a_key_file_without_a_usable_key_never_advises_deleting_it(tmp_path: Path) -> None:
    """A short key file is an error that names the file and the setting, not 'delete it'."""
    (tmp_path / "secret.key").write_text("short\n")
    with pytest.raises(ConfigurationError) as caught:
        local_secret(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "secret.key") in message
    assert "SENDER_SECRET_KEYS" in message
    assert "delete" not in message.lower()
    assert (tmp_path / "secret.key").read_text() == "short\n"


def test_a_key_file_that_is_not_text_is_a_one_line_error(workdir: Path) -> None:
    """A key file of binary garbage is a configuration error (exit 2), not an internal error."""
    (workdir / ".sender").mkdir()
    (workdir / ".sender" / "secret.key").write_bytes(b"\xff\xfe" * 20)
    result = cli("link", "issue", "--participant", "p", "--course", "c")
    assert result.exit_code == 2
    assert "secret.key" in result.stderr
    assert "internal error" not in result.stderr


def test_the_generated_key_warning_prints_once_per_home(workdir: Path) -> None:
    """The first command that uses a generated key warns; later ones in that home do not."""
    first = cli("link", "issue", "--participant", "p", "--course", "c")
    second = cli("link", "issue", "--participant", "p", "--course", "c")
    assert "warning: no secret key configured" in first.stderr
    assert "warning" not in second.stderr
    other = cli(
        "--home", str(workdir / "other"), "link", "issue", "--participant", "p", "--course", "c"
    )
    assert "warning: no secret key configured" in other.stderr


# --- file modes (issue 10, 2.6) --------------------------------------------------------


def test_a_new_home_and_its_files_are_private(workdir: Path) -> None:
    """The home is 0700; outbox, WAL files, key and Maildir are private to their owner."""
    os.umask(0o022)
    (workdir / "p.csv").write_text(
        "email,name,participant_id,course_id\nkari@example.com,Kari,p-1,c\n", encoding="utf-8"
    )
    result = cli("run", "p.csv", "--no-progress")
    assert result.exit_code == 0, result.output
    home = workdir / ".sender"
    assert mode(home) == 0o700
    for name in ("outbox.sqlite3", "secret.key"):
        assert mode(home / name) == 0o600, name
    for suffix in ("-wal", "-shm"):
        extra = home / f"outbox.sqlite3{suffix}"
        if extra.exists():
            assert mode(extra) == 0o600
    maildir = home / "maildir"
    for directory in (maildir, maildir / "new", maildir / "cur", maildir / "tmp"):
        assert mode(directory) == 0o700
    mails = list((maildir / "new").iterdir())
    assert len(mails) == 1
    assert mode(mails[0]) == 0o600


def test_an_existing_loose_home_is_tightened_on_open(workdir: Path) -> None:
    """A home an older version left world-readable is made 0700/0600 by the next command."""
    assert cli("suppress", "add", "ada@example.org").exit_code == 0
    home = workdir / ".sender"
    home.chmod(0o755)
    (home / "outbox.sqlite3").chmod(0o644)
    (home / "secret.key").chmod(0o644)
    (home / "maildir").mkdir()
    (home / "maildir" / "new").mkdir()
    (home / "maildir" / "new" / "1.eml").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    (home / "maildir" / "new" / "1.eml").chmod(0o644)
    (home / "maildir").chmod(0o755)
    assert cli("suppress", "list").exit_code == 0
    assert mode(home) == 0o700
    assert mode(home / "outbox.sqlite3") == 0o600
    assert mode(home / "secret.key") == 0o600
    assert mode(home / "maildir") == 0o700


def test_a_home_shared_with_other_files_tightens_only_senders_own(workdir: Path) -> None:
    """`--home .` makes the outbox private but leaves the project's other files alone."""
    (workdir / "notes.txt").write_text("x")
    (workdir / "notes.txt").chmod(0o644)
    (workdir / "docs").mkdir(mode=0o755)
    (workdir / "docs").chmod(0o755)
    assert cli("--home", ".", "suppress", "add", "ada@example.org").exit_code == 0
    assert cli("--home", ".", "suppress", "list").exit_code == 0
    assert mode(workdir / "outbox.sqlite3") == 0o600
    assert mode(workdir / "notes.txt") == 0o644
    assert mode(workdir / "docs") == 0o755


def test_tighten_leaves_a_private_file_alone(tmp_path: Path) -> None:
    """A file that is already private keeps its mode (e.g. 0400 stays 0400)."""
    path = tmp_path / "f"
    path.write_text("x")
    path.chmod(0o400)
    tighten(path)
    assert mode(path) == 0o400


# --- where state lives (issue 10, 4.1) ------------------------------------------------

CSV = "email,name,participant_id,course_id\nkari@example.com,Kari,p-1,c\n"


def test_a_home_is_shared_from_any_directory(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --home or SENDER_HOME, another directory sees the same runs, list and key."""
    home = workdir / "state"
    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    monkeypatch.chdir(workdir / "a")
    (workdir / "a" / "p.csv").write_text(CSV, encoding="utf-8")
    assert (
        cli("--home", str(home), "run", "p.csv", "--run-id", "r1", "--no-progress").exit_code == 0
    )
    assert cli("--home", str(home), "suppress", "add", "ada@example.org").exit_code == 0
    url = cli("--home", str(home), "link", "issue", "--participant", "p", "--course", "c").stdout
    monkeypatch.chdir(workdir / "b")
    listed = cli("suppress", "list", SENDER_HOME=str(home))
    assert "ada@example.org" in listed.stdout
    status = cli("status", "--json", SENDER_HOME=str(home))
    assert status.exit_code == 0, status.output
    assert '"run_id": "r1"' in status.stdout
    assert cli("link", "verify", url.strip(), SENDER_HOME=str(home)).exit_code == 0
    assert not (workdir / "b" / ".sender").exists()


def test_home_in_sender_toml_is_relative_to_the_file(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`home = "state"` in sender.toml means the folder next to it, wherever sender runs."""
    (workdir / "project").mkdir()
    toml = workdir / "project" / "sender.toml"
    toml.write_text('home = "state"\n', encoding="utf-8")
    (workdir / "elsewhere").mkdir()
    monkeypatch.chdir(workdir / "elsewhere")
    assert cli("--config", str(toml), "suppress", "add", "ada@example.org").exit_code == 0
    assert (workdir / "project" / "state" / "outbox.sqlite3").is_file()
    flag_home = workdir / "flag"
    cli("--config", str(toml), "--home", str(flag_home), "suppress", "add", "bo@example.org")
    assert (flag_home / "outbox.sqlite3").is_file()


def test_every_summary_names_the_home(workdir: Path) -> None:
    """run, resume, retry, status, send and suppress name the home they used."""
    home = f"home: {workdir / '.sender'}"
    (workdir / "p.csv").write_text(CSV, encoding="utf-8")
    commands = [
        ("run", "p.csv", "--run-id", "r1", "--no-progress"),
        ("resume", "r1", "--no-progress"),
        ("retry", "r1", "--no-progress"),
        ("status", "r1"),
        ("send", "--to", "bo@example.org", "--name", "Bo", "--participant", "p-2", "--course", "c"),
        ("suppress", "add", "ada@example.org"),
        ("suppress", "list"),
        ("suppress", "remove", "ada@example.org", "--reason", "asked"),
    ]
    for command in commands:
        result = cli(*command)
        assert result.exit_code == 0, (command, result.output)
        assert home in result.stdout, command


def test_status_without_runs_names_the_home(workdir: Path) -> None:
    """`status` in a home with no runs says which home it looked in."""
    result = cli("status")
    assert result.exit_code == 1
    assert str(workdir / ".sender") in result.stderr
