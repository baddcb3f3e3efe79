"""What importing sender costs: each process imports only the libraries its work uses.

A bulk run starts a worker process per core; each runs ``sender.bulk.workers`` and sends
over SMTP, so the libraries for SES (httpx), DKIM (dkimpy, dnspython), calendars
(icalendar), the SMTP servers (aiosmtpd) and the CLI (click, rich) are loaded only when
something asks for them. Each check runs a fresh interpreter: in this one, every other
test has imported everything already.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path

import sender
from sender.cli import COMMANDS, main
from sender.testing import RecordingSMTPServer
from sender.transport import SesTransport
from sender.transport.ses import SesTransport as SesTransportHome
from tests.helpers import IDENTITY, clean_environment, people_csv, run_python, smtp_url

HEAVY = ("aiosmtpd", "click", "dkim", "dns.resolver", "httpx", "icalendar", "rich")
# What the dispatcher of `sender run` over SMTP has no use for (it prints with rich, and
# checks addresses with dnspython).
NOT_FOR_RUNS = ("aiosmtpd", "cryptography", "dkim", "httpx", "icalendar")


def loaded_after(tmp_path: Path, code: str) -> list[str]:
    """Which of HEAVY a fresh interpreter has loaded after running ``code``."""
    report = f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    probe = f"{code}\nimport json, sys\n{report}"
    done = run_python(tmp_path, "-c", probe)
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_worker_entry_loads_no_heavy_library(tmp_path: Path) -> None:
    """The worker entry imports none of the SES, DKIM, calendar, server or CLI libraries."""
    assert loaded_after(tmp_path, "import sender.bulk.workers") == []


def test_a_library_loads_when_its_feature_is_used(tmp_path: Path) -> None:
    """Asking for SES, a calendar or DKIM imports its library then, and not the others."""
    for code, library in (
        ("from sender.transport import SesTransport", "httpx"),
        ("from sender.compose.ical import build_invite", "icalendar"),
        ("from sender.compose.dkim import DkimSigner", "dkim"),
        ("from sender.servers.capture import CaptureServer", "aiosmtpd"),
    ):
        loaded = loaded_after(tmp_path, f"import sender.bulk.workers\n{code}")
        others = {"httpx", "icalendar", "dkim", "aiosmtpd"} - {library}
        assert library in loaded, code
        assert others.isdisjoint(loaded), (code, loaded)


def test_every_public_name_resolves_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """Each name in sender.__all__ imports by name and by ``import *`` from a fresh start."""
    code = (
        "import json, sender\n"
        "names = {}\n"
        "exec('from sender import *', names)\n"
        "print(json.dumps({n: type(getattr(sender, n)).__name__ for n in sender.__all__}))\n"
        "print(json.dumps(sorted(set(sender.__all__) - set(names))))"
    )
    done = run_python(tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    kinds, missing = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    assert sorted(kinds) == sorted(sender.__all__)
    assert missing == []
    assert kinds["Sender"] == "type"
    assert kinds["open_sender"] == "function"


def test_ses_transport_is_still_exported_by_the_transport_package() -> None:
    """``from sender.transport import SesTransport`` gives the SES module's class."""
    assert SesTransport is SesTransportHome
    assert "SesTransport" in dir(sender.transport)


def test_command_table_names_each_command_and_its_module() -> None:
    """sender.cli.COMMANDS lists every command once, with the module that registers it."""
    for module in set(COMMANDS.values()):
        importlib.import_module(module)
    assert sorted(main.commands) == sorted(COMMANDS)
    for name, command in main.commands.items():
        assert command.callback is not None
        assert command.callback.__module__ == COMMANDS[name], name


def test_run_help_imports_only_the_run_commands_module(tmp_path: Path) -> None:
    """`sender run --help` shows run's help without importing other commands' libraries."""
    code = (
        "import json, sys\n"
        "from sender.cli import main\n"
        "code = main(['run', '--help'], standalone_mode=False)\n"
        f"print(json.dumps([m for m in {NOT_FOR_RUNS!r} if m in sys.modules]))"
    )
    done = run_python(tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    assert "Send one message to each participant in a CSV" in done.stdout
    assert json.loads(done.stdout.splitlines()[-1]) == []


async def test_a_bulk_run_over_smtp_imports_none_of_the_rare_libraries(
    smtp_server: RecordingSMTPServer, tmp_path: Path
) -> None:
    """A real `sender run --workers 2` over SMTP sends every row, and its dispatcher
    process never imported the SES, DKIM, calendar or SMTP-server libraries."""
    people_csv(tmp_path / "p.csv", [f"u{i}@d{i % 3}.example" for i in range(6)])
    args = ["run", "p.csv", "--smtp", smtp_url(smtp_server), "--no-validate", "--json"]
    args += ["--workers", "2", "--rate", "0", "--domain-rate", "0"]
    code = (
        "import json, sys\n"
        "from sender.cli import main\n"
        f"code = main({args!r}, standalone_mode=False)\n"
        f"print(json.dumps([m for m in {NOT_FOR_RUNS!r} if m in sys.modules]), file=sys.stderr)"
    )
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", code),
        cwd=tmp_path,
        env=clean_environment(**IDENTITY),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode()
    assert json.loads(out)["counts"]["sent"] == 6
    assert len(smtp_server.messages) == 6
    assert json.loads(err.decode().splitlines()[-1]) == []
