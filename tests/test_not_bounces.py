"""Mail to the bounce domain that is no bounce is kept raw for a person, not recorded as forged."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sender.cli import main
from sender.compose.links import ReturnPathSigner
from sender.config import BouncePolicy
from sender.feedback.suppression import ingest_bounce
from sender.servers.inbound import Disposition, InboundMail, InboundServer, kept_for_people
from sender.store import SqliteStore
from tests.helpers import deliver, dsn, spawn_inbound

BOUNCE_DOMAIN = "bounce.learning.example.com"
REPLY_TO = "invitation@calendar.example.com"
KEY = "not-bounces-key-0123456789abcdef"


def person(subject: str, to: str) -> bytes:
    """A person's own mail (no DSN, no daemon, no auto-reply)."""
    return (
        "From: Kari Nordmann <kari@example.org>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {subject}\r\n"
        "Date: Tue, 23 Feb 2027 09:14:27 +0000\r\n"
        "Message-ID: <q-1@example.org>\r\n"
        "\r\n"
        "Hello, I got your mail but my link does not work. Can someone help?\r\n"
    ).encode()


def maildir_messages(path: Path) -> list[bytes]:
    return sorted(f.read_bytes() for sub in ("new", "cur") for f in (path / sub).iterdir())


@pytest.mark.slow
async def test_sender_inbound_keeps_a_persons_mail_for_a_person_and_records_nothing(
    tmp_path: Path, closed_port: int
) -> None:
    """Over SMTP: no-bounce mail lands raw in for-people, nothing forged; the report says so."""
    (tmp_path / "sender.toml").write_text(f'bounce_domain = "{BOUNCE_DOMAIN}"\n', encoding="utf-8")
    to_postmaster = person("Question about my course", f"postmaster@{BOUNCE_DOMAIN}")
    to_return_path = person("Re: Invitation", f"bounces+m1-aaaaaaaaaaaaaaaa@{BOUNCE_DOMAIN}")
    to_reply_address = person("Can I bring a friend?", REPLY_TO)
    process = await spawn_inbound(
        tmp_path,
        closed_port,
        "--reply-address",
        REPLY_TO,
        env={"SENDER_SECRET_KEYS": KEY},
        verbose=True,
    )
    try:
        await deliver(closed_port, f"postmaster@{BOUNCE_DOMAIN}", to_postmaster, mail_from="k@x")
        await deliver(closed_port, f"bounces+m1-aaaaaaaaaaaaaaaa@{BOUNCE_DOMAIN}", to_return_path)
        await deliver(closed_port, REPLY_TO, to_reply_address, mail_from="kari@example.org")
        # A real DSN to a return path we never signed is still a forged bounce.
        await deliver(
            closed_port, f"bounces+m2-bbbbbbbbbbbbbbbb@{BOUNCE_DOMAIN}", dsn("a@b.example")
        )
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    logged = stderr.decode()
    assert logged.count("kept for a person") == 3
    assert "Can someone help" not in logged  # never a body
    inbound = tmp_path / ".sender" / "inbound"
    assert maildir_messages(inbound / "for-people") == sorted(
        [to_postmaster, to_return_path, to_reply_address]
    )
    assert maildir_messages(inbound / "unprocessed") == []
    async with SqliteStore(tmp_path / ".sender" / "outbox.sqlite3") as outbox:
        (kept,) = await outbox.bounces()  # only the DSN
        assert kept.forged
        assert kept.kind == "hard"
    home = str(tmp_path / ".sender")
    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["bounces", "report"],
        env={"SENDER_SECRET_KEYS": KEY, "SENDER_HOME": home},
    )
    assert result.exit_code == 0, result.stderr
    assert "3 message(s) with no bounce or calendar reply" in result.stdout
    assert "kept for a person to read in" in result.stdout


async def test_on_mail_can_leave_a_message_for_a_person(tmp_path: Path) -> None:
    """A handler returning FOR_PERSON gets a 250, and the raw bytes wait in for-people."""

    async def on_mail(mail: InboundMail) -> Disposition:
        return Disposition.FOR_PERSON

    data = person("hello", f"x@{BOUNCE_DOMAIN}")
    async with InboundServer(
        bounce_domain=BOUNCE_DOMAIN, on_mail=on_mail, keep_dir=tmp_path
    ) as server:
        await deliver(server.port, f"x@{BOUNCE_DOMAIN}", data)
    assert (server.for_people, server.kept, server.accepted) == (1, 0, 1)
    assert maildir_messages(server.for_people_dir) == [data]
    assert kept_for_people(tmp_path) == (tmp_path / "for-people", 1)


async def test_a_persons_mail_is_not_a_bounce_and_not_forged(tmp_path: Path) -> None:
    """ingest_bounce records nothing for a person's mail to an unsigned return path."""
    signer = ReturnPathSigner((KEY,), domain=BOUNCE_DOMAIN)
    async with SqliteStore(tmp_path / "outbox.sqlite3") as store:
        outcomes = await ingest_bounce(
            store,
            person("Re: Invitation", f"bounces+m1-aaaaaaaaaaaaaaaa@{BOUNCE_DOMAIN}"),
            return_paths=signer,
            policy=BouncePolicy(),
            now=1.0,
            envelope_to=f"bounces+m1-aaaaaaaaaaaaaaaa@{BOUNCE_DOMAIN}",
        )
        assert outcomes == []
        assert await store.bounces() == []


def test_bounces_ingest_counts_mail_that_is_no_bounce(workdir: Path) -> None:
    """`sender bounces ingest` says which files were no bounce instead of calling them forged."""
    mail = workdir / "question.eml"
    mail.write_bytes(
        b"Delivered-To: bounces+m1-aaaaaaaaaaaaaaaa@"
        + BOUNCE_DOMAIN.encode()
        + b"\r\n"
        + person("Re: Invitation", f"postmaster@{BOUNCE_DOMAIN}")
    )
    (workdir / "sender.toml").write_text(f'bounce_domain = "{BOUNCE_DOMAIN}"\n', encoding="utf-8")
    result = CliRunner().invoke(
        main, ["bounces", "ingest", str(mail), "--json"], env={"SENDER_SECRET_KEYS": KEY}
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["findings"], summary["forged"], summary["not_bounces"]) == (0, 0, 1)
