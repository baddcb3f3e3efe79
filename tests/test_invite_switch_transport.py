"""`sender invite` keeps an event on the transport its invitations went through; moving it
to another server takes `sender invite ... --switch-transport`, and the refusal says so."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import Result

from sender.testing import RecordingSMTPServer
from tests.helpers import IDENTITY, cli_with, smtp_url

KEY = "invite-switch-test-key-aaaaaaaaaaaaa"
ROWS = "email,name,participant_id,course_id\na@d.example,A,p-1,c\nb@e.example,B,p-2,c\n"
EVENT = """\
course_id = "PY101"
event_id = "session-1"
summary = "Introduction to Python"
start = "{start}"
end = "2027-03-27T12:00:00"
timezone = "Europe/Oslo"
organizer_email = "invitation@calendar.learning.test"
"""

cli = cli_with(SENDER_SECRET_KEYS=KEY, **IDENTITY)


@pytest.fixture(autouse=True)
def workdir(workdir: Path) -> Path:
    """The shared empty working directory, holding p.csv and event.toml (10:00 to 12:00)."""
    (workdir / "sender.toml").write_text("domain_rate = 0\n", encoding="utf-8")
    (workdir / "p.csv").write_text(ROWS, encoding="utf-8")
    (workdir / "event.toml").write_text(EVENT.format(start="2027-03-27T10:00:00"), "utf-8")
    return workdir


def invite(*more: str) -> Result:
    return cli("invite", "event.toml", "p.csv", "--no-validate", "--no-progress", *more)


def recipients(server: RecordingSMTPServer) -> list[str]:
    return sorted(r for m in server.messages for r in m.recipients)


async def events() -> list[dict[str, object]]:
    listed = await asyncio.to_thread(cli, "rsvp", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    found: list[dict[str, object]] = json.loads(listed.stdout)["events"]
    return found


def test_invite_offers_switch_transport_like_run_resume_and_retry() -> None:
    """`sender invite --help` lists --switch-transport with the same help as `run`."""
    shown = {}
    for command in ("invite", "run", "resume", "retry"):
        result = cli(command, "--help")
        assert result.exit_code == 0, result.output
        shown[command] = " ".join(result.output.rsplit("--switch-transport", 1)[1].split())[:80]
    assert len(set(shown.values())) == 1, shown


@pytest.mark.parametrize("again", ["update", "same-event"])
async def test_invite_through_another_server_needs_switch_transport(
    again: str, smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """An event invited through server A, invited again with --smtp B: refused naming
    `sender invite ... --switch-transport` and changing nothing; with the flag, sent via B."""
    first = await asyncio.to_thread(invite, "--smtp", smtp_url(smtp_server))
    assert first.exit_code == 0, first.stderr
    assert recipients(smtp_server) == ["a@d.example", "b@e.example"]
    if again == "update":
        (workdir / "event.toml").write_text(EVENT.format(start="2027-03-27T11:00:00"), "utf-8")
    before = await events()
    async with RecordingSMTPServer() as other:
        url = smtp_url(other)
        refused = await asyncio.to_thread(invite, "--smtp", url)
        assert refused.exit_code == 2, refused.stdout + refused.stderr
        assert "Traceback" not in refused.output + refused.stderr
        (line,) = [line for line in refused.stderr.splitlines() if "error" in line]
        assert "sender invite" in line, line
        assert "--switch-transport" in line, line
        assert "sender resume" not in line
        assert url in line
        assert not other.messages
        assert await events() == before  # no SEQUENCE moved, nobody's invitation changed
        switched = await asyncio.to_thread(invite, "--smtp", url, "--switch-transport")
        assert switched.exit_code == 0, switched.stderr
        if again == "update":
            assert recipients(other) == ["a@d.example", "b@e.example"]
            (event,) = await events()
            assert event["sequence"] == 1
        again_b = await asyncio.to_thread(invite, "--smtp", url)
        assert again_b.exit_code == 0, again_b.stderr
    assert recipients(smtp_server) == ["a@d.example", "b@e.example"]
