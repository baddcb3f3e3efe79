"""Logs never carry a message body, a login token, a return-path signature or a key."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from click.testing import CliRunner

from sender import redact
from sender.cli import main
from sender.models import DeliveryStatus, Envelope
from sender.servers.inbound import InboundMail, InboundServer
from sender.store import SqliteStore
from sender.testing import RecordingSMTPServer, Stage
from sender.transport import SmtpTransport
from tests.helpers import free_port, spawn_sender, write_files

BOUNCE_DOMAIN = "bounce.logtest.example"
SECRET_KEY = "LOGSECRET-k3y-7f1e2d3c4b5a69788796a5b4"
NAME = "Quintessa Marplewood"
COURSE = "Thaumaturgy Zeta Seminar"
ADDRESS = "quintessa.marplewood@recipients.example"
DSN_MARKER = "Xylophone-Diagnostic-Q77 mailbox vanished"
TOKEN = re.compile(r"[?&]token=([^\s\"'<>&]+)")
CODE = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}\b")
QUIET_COMMAND = [
    "bounces",
    "parse",
    str(Path(__file__).parent / "samples" / "bounces" / "ordinary.eml"),
]


ENV = {"SENDER_SECRET_KEYS": SECRET_KEY, "PYTHONUNBUFFERED": "1"}


def dsn(return_path: str, original: bytes) -> bytes:
    """A DSN as an MTA writes one: the report and the whole original message attached."""
    return (
        b"From: MAILER-DAEMON@mx.recipients.example (Mail Delivery System)\r\n"
        + f"To: {return_path}\r\n".encode()
        + b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        b"\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        + f"{DSN_MARKER}\r\n".encode()
        + b"\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.recipients.example\r\n\r\n"
        + f"Final-Recipient: rfc822; {ADDRESS}\r\n".encode()
        + b"Action: failed\r\nStatus: 5.1.1\r\n"
        + f"Diagnostic-Code: smtp; 550 5.1.1 {DSN_MARKER}\r\n".encode()
        + b"\r\n--B\r\nContent-Type: message/rfc822\r\n\r\n"
        + original
        + b"\r\n--B--\r\n"
    )


def body_fragments(message: EmailMessage) -> list[str]:
    """Distinctive pieces of the message's text and HTML: lines of 12+ characters."""
    fragments = []
    for part in message.walk():
        if part.get_content_maintype() == "text":
            text = part.get_content()
            fragments += [line.strip() for line in text.splitlines() if len(line.strip()) >= 12]
    return fragments


@pytest.mark.slow
async def test_debug_logs_of_a_run_and_the_inbound_listener_hold_no_secrets(
    tmp_path: Path,
) -> None:
    """`sender --debug -v run` through the capture server, then a DSN to `sender inbound`: clean."""
    write_files(
        tmp_path,
        {
            "sender.toml": f'bounce_domain = "{BOUNCE_DOMAIN}"\nrate = 0\n',
            "people.csv": "email,name,participant_id,course_id,locale,course_name\n"
            f"{ADDRESS},{NAME},p-logs-1,LOG101,en,{COURSE}\n",
        },
    )
    run = await spawn_sender(
        tmp_path, "--debug", "-v", "run", "people.csv", "--no-progress", env=ENV
    )
    _out, run_log = await asyncio.wait_for(run.communicate(), 120)
    assert run.returncode == 0, run_log.decode()
    assert b"DEBUG" in run_log  # the logs were really on

    (path,) = (tmp_path / ".sender" / "maildir" / "new").iterdir()
    original = path.read_bytes()
    message = email.message_from_bytes(original, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return_path = str(message["Return-Path"]).strip("<>")
    local, _, domain = return_path.partition("@")
    assert domain == BOUNCE_DOMAIN
    signature = local.rpartition("-")[2]
    tokens = {match.group(1) for match in TOKEN.finditer(original.decode("utf-8", "replace"))}
    assert tokens
    codes = set(CODE.findall(original.decode("utf-8", "replace")))
    assert len(codes) == 1  # the invitation's login code, in text and HTML
    (code,) = codes
    fragments = body_fragments(message)
    assert any(NAME in fragment for fragment in fragments)

    port = free_port()
    inbound = await spawn_sender(
        tmp_path, "--debug", "-v", "inbound", "--listen", f"127.0.0.1:{port}", env=ENV, stdout=None
    )
    assert inbound.stderr is not None
    inbound_log = b""
    try:
        while b"listening on" not in inbound_log:
            line = await asyncio.wait_for(inbound.stderr.readline(), 60)
            assert line, inbound_log.decode()
            inbound_log += line
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
            await client.sendmail("", [return_path], dsn(return_path, original))
    finally:
        inbound.terminate()
        inbound_log += await asyncio.wait_for(inbound.stderr.read(), 60)
        await asyncio.wait_for(inbound.wait(), 60)
    assert b"DEBUG" in inbound_log
    checks = b""
    for typed in ("0000-0000" if code != "0000-0000" else "1111-1111", code.lower()):
        check = await spawn_sender(
            tmp_path, "--debug", "-v", "code", "verify", typed, "--email", ADDRESS, env=ENV
        )
        out, check_log = await asyncio.wait_for(check.communicate(), 120)
        checks += check_log
    assert b"p-logs-1" in out  # the right code verified (its claims printed, not logged)
    assert b"inbound: took a bounce message" in inbound_log  # it was handled, and logged
    async with SqliteStore(tmp_path / ".sender" / "outbox.sqlite3") as outbox:
        (bounce,) = await outbox.bounces()
    assert not bounce.forged  # the return path's signature was real, and checked

    secrets = {
        "the secret key": SECRET_KEY,
        "the return path": return_path,
        "the return-path signature": signature,
        "the name": NAME,
        "the course name": COURSE,
        "the DSN's text": DSN_MARKER,
        "the login code": code,
        "the login code typed": code.lower(),
        "the login code without its dash": code.replace("-", ""),
        **{f"token {n}": token for n, token in enumerate(sorted(tokens))},
        **{f"body line {n}": fragment for n, fragment in enumerate(fragments)},
    }
    logs = (("run", run_log), ("inbound", inbound_log), ("code verify", checks))
    for where, log in ((where, log.decode()) for where, log in logs):
        for what, secret in secrets.items():
            assert secret not in log, f"{what} appears in the {where} log: {secret!r}"


def test_aiosmtpd_debug_logging_needs_asking_for_by_name() -> None:
    """--debug leaves aiosmtpd's loggers at WARNING; --log-debug mail.log turns them on."""
    runner = CliRunner()
    before = logging.getLogger("mail.log").level
    try:
        assert runner.invoke(main, ["--debug", *QUIET_COMMAND]).exit_code == 0
        assert logging.getLogger("mail.log").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("mail.debug").getEffectiveLevel() == logging.WARNING
        result = runner.invoke(main, ["--debug", "--log-debug", "mail.log", *QUIET_COMMAND])
        assert result.exit_code == 0
        assert logging.getLogger("mail.log").getEffectiveLevel() == logging.DEBUG
    finally:
        logging.getLogger("mail.log").setLevel(before)


def test_help_documents_log_debug() -> None:
    """`sender --help` says how to turn on a quiet third-party logger."""
    result = CliRunner().invoke(main, ["--help"])
    assert "--log-debug" in result.output
    assert "mail.log" in result.output


@pytest.mark.parametrize("variable", ["SENDER_LOG_DEBUG"])
def test_log_debug_from_the_environment(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SENDER_LOG_DEBUG=mail.log does what --log-debug mail.log does."""
    monkeypatch.setenv(variable, "mail.log")
    before = logging.getLogger("mail.log").level
    try:
        assert CliRunner().invoke(main, QUIET_COMMAND).exit_code == 0
        assert logging.getLogger("mail.log").getEffectiveLevel() == logging.DEBUG
    finally:
        logging.getLogger("mail.log").setLevel(before)


async def test_smtp_replies_echoing_addresses_and_links_are_redacted_in_logs(
    smtp_server: RecordingSMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A relay's reply that quotes the return path, the recipient and a login URL logs none."""
    return_path = "bounces+m7-Sig9xq2kLm0pRt4@bounce.logtest.example"
    smtp_server.reply(
        Stage.RCPT,
        f"550 5.1.1 <{ADDRESS}> from <{return_path}> rejected; "
        "see https://lms.example.com/login?token=TOKEN-abc123xyz",
        address=ADDRESS,
    )
    smtp_server.reply(Stage.DATA, "554 5.7.1 content rejected: token=TOKEN-def456uvw in body")
    caplog.set_level(logging.DEBUG)
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        results = await transport.send(
            Envelope(return_path, (ADDRESS, "other@recipients.example")), b"Subject: x\r\n\r\nx\r\n"
        )
    assert [r.status for r in results] == [DeliveryStatus.PERMANENT, DeliveryStatus.PERMANENT]
    logged = caplog.text
    assert "smtp: RCPT q…@recipients.example refused: 550" in logged
    for secret in ("quintessa", "Sig9xq2kLm0pRt4", "m7-", "TOKEN-abc123xyz", "TOKEN-def456uvw"):
        assert secret not in logged


@pytest.mark.parametrize(
    ("raw", "kept", "gone"),
    [
        ("<bounces+m1-s1gn4ture@b.example>", "b…@b.example", "s1gn4ture"),
        (
            "go to https://lms.example.com/login?token=T0KEN now",
            "https://lms.example.com/…",
            "T0KEN",
        ),
        ("smtp://user:pa55word@relay.example:587", "smtp://relay.example:587/…", "pa55word"),
        ("key=K3Y-value and sig=S1G", "key=…", "K3Y-value"),
    ],
)
def test_redacted_text_keeps_the_shape_and_drops_the_secret(raw: str, kept: str, gone: str) -> None:
    """Addresses keep a first letter and the domain; URLs keep their host; secrets go."""
    redacted = redact.text(raw)
    assert kept in redacted
    assert gone not in redacted


async def test_an_unknown_command_is_not_quoted_in_the_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A body line sent as a command (a broken pipelining client) is not logged, even at WARNING."""

    async def on_mail(mail: InboundMail) -> None:
        return None

    caplog.set_level(logging.WARNING)
    async with InboundServer(
        bounce_domain=BOUNCE_DOMAIN, on_mail=on_mail, keep_dir=tmp_path
    ) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            await asyncio.wait_for(reader.readline(), 10)  # the greeting
            writer.write(b"https://lms.example.com/login?token=TOKEN-ghi789rst\r\n")
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
            await writer.wait_closed()
    assert reply.startswith(b"500")
    assert "unrecognised" in caplog.text  # aiosmtpd did warn
    logged = caplog.text.lower()  # aiosmtpd upper-cases the command it quotes
    assert "token-ghi789rst" not in logged
    assert "lms.example.com" not in logged


async def test_library_dkim_verification_logs_no_headers_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A library user logging at DEBUG gets no header or body from DKIM verification."""
    from sender.compose.dkim import DkimKey, DkimSigner, dns_record, generate_key, verified_domains

    key = DkimKey("uni.example", "s1", generate_key(bits=1024))
    name, record = dns_record(key)
    token = "LOGINTOKEN-5b0c9e"
    message = (
        "From: kari@uni.example\r\nTo: rsvp@lms.example\r\n"
        f"Subject: {token}\r\n\r\nbody {token}\r\n"
    ).encode()
    signed = DkimSigner(key).sign(message)

    async def lookup(query: str) -> str | None:
        return record if query.rstrip(".") == name.rstrip(".") else None

    with caplog.at_level(logging.DEBUG):
        assert await verified_domains(signed, lookup=lookup) == ("uni.example",)
    assert not [r for r in caplog.records if token in r.getMessage()]


async def test_checking_login_codes_logs_no_code_and_no_hash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Right, wrong and locked-out tries at DEBUG: neither the code nor its keyed hash is
    ever in a log record."""
    from sender import Participant, Sender
    from sender.errors import CodeError
    from tests.helpers import sender_settings

    caplog.set_level(logging.DEBUG)
    async with SqliteStore(tmp_path / "outbox.sqlite3") as store:
        sender = Sender(sender_settings(SECRET_KEY), store=store)
        composed = sender.compose(
            Participant(ADDRESS, NAME, "p-1", "LOG101"), template="get_link", code=True
        )
        assert composed.code is not None
        await store.keep_codes([composed.code])
        (code,) = set(CODE.findall(composed.rendered.text))
        await sender.verify_code(code, email=ADDRESS)
        for _ in range(6):
            with pytest.raises(CodeError):
                await sender.verify_code("0000-0000", email=ADDRESS)
        with pytest.raises(CodeError):
            await sender.verify_code(code, email=ADDRESS)
    assert "too many wrong codes" in caplog.text  # the lock was logged
    for secret in (code, code.replace("-", ""), composed.code.digest):
        assert secret not in caplog.text
