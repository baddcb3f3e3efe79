"""`sender validate` and `run --dry-run` apply the row checks `run` applies (issue 10, 4.6)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sender.testing import RecordingSMTPServer
from tests.dns_server import DnsServer
from tests.helpers import cli_with

ENV = {
    "SENDER_SECRET_KEYS": "validate-rows-test-key-aaaaaaaaaaaa",
    "SENDER_FROM": "Example Academy <noreply@learning.example.com>",
    "SENDER_BASE_URL": "https://learning.example.com/login",
}
ZONE = """
school.example.        MX   10 mx.school.example.
mx.school.example.     A    192.0.2.10
"""
CSV = (
    "email,name,participant_id,course_id,locale,course_name\n"
    "kari@school.example,Kari,p-1,c,en,Python\n"  # 2: fine
    "ola@school.example,,p-2,c,en,Python\n"  # 3: empty name
    "per@school.example,Per,p-1,c,en,Python\n"  # 4: duplicate id of row 2
    "liv@school.example,Liv,p-4\n"  # 5: short row
    "ida@school.example,Ida,p-5,c,!!,Python\n"  # 6: bad locale
    "eva@school.example,Eva,p-6,c,en,A\x00B\n"  # 7: NUL: the subject cannot carry it
    "tor@school.example,Tor,p-7,c,nb,Python\n"  # 8: fine
)
SKIPPED = {3: "name", 4: "duplicate of row 2", 5: "fields", 6: "locale", 7: "Subject"}


@pytest.fixture(autouse=True)
def workdir(workdir: Path) -> Path:
    """The shared empty working directory (tests/conftest.py), holding p.csv."""
    (workdir / "p.csv").write_text(CSV, encoding="utf-8")
    return workdir


cli = cli_with(**ENV)


async def test_validate_says_which_rows_run_will_skip_and_why() -> None:
    """validate --json: each row run would skip carries its reason; the good rows do not."""
    async with DnsServer(ZONE) as dns:
        result = await asyncio.to_thread(
            cli, "validate", "p.csv", "--dns-server", dns.address, "--json"
        )
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    skips = {row["row"]: row["skip"] for row in data["rows"] if row["skip"]}
    assert set(skips) == set(SKIPPED)
    for row, word in SKIPPED.items():
        assert word in skips[row], (row, skips[row])
    assert data["summary"]["skipped"] == len(SKIPPED)
    rows = {row["row"]: row for row in data["rows"]}
    assert rows[2]["skip"] is None
    assert rows[8]["skip"] is None


async def test_validate_and_dry_run_skip_the_same_rows() -> None:
    """The text of validate names the same rows as `run --dry-run`, from one shared check."""
    async with DnsServer(ZONE) as dns:
        validated = await asyncio.to_thread(cli, "validate", "p.csv", "--dns-server", dns.address)
    dry = await asyncio.to_thread(cli, "run", "p.csv", "--dry-run")
    for row in SKIPPED:
        assert f"row {row} " in validated.stdout
        assert f"row {row} " in dry.stdout
    assert "run will skip 5 row(s)" in validated.stdout
    assert "2 message(s) would be sent, 5 skipped" in dry.stdout


async def test_dry_run_with_smtp_checks_addresses_too(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """run --dry-run --smtp checks addresses like a real run would: a dead domain is skipped."""
    (workdir / "q.csv").write_text(
        "email,name,participant_id,course_id\n"
        "kari@school.example,Kari,p-1,c\n"
        "ola@nowhere.example,Ola,p-2,c\n",
        encoding="utf-8",
    )
    smtp = f"smtp://{smtp_server.host}:{smtp_server.port}"
    async with DnsServer(ZONE) as dns:
        result = await asyncio.to_thread(
            cli, "run", "q.csv", "--dry-run", "--smtp", smtp, "--dns-server", dns.address
        )
    assert "1 message(s) would be sent, 1 skipped" in result.stdout, result.stdout
    assert "row 3 (ola@nowhere.example): field 'email'" in result.stdout
    assert smtp_server.messages == ()
