"""What the test modules share: the settings and event most tests send with, and the ``sender``
command in-process and as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from click.testing import CliRunner, Result

from sender import Address, LinkSettings, Sender, SenderSettings
from sender.bulk.runner import RunSettings
from sender.checks.resolve import Resolver
from sender.cli import main
from sender.compose.event import CalendarEvent
from sender.compose.links import ReturnPathSigner
from sender.config import BouncePolicy
from sender.feedback.suppression import ingest_bounce
from sender.invites import Invitations
from sender.pacing.schedule import RateLimits, Scheduler
from sender.servers.inbound import InboundMail
from sender.service.serve import Listener
from sender.store import BounceRecord, RsvpRecord, SqliteStore
from sender.testing import RecordingSMTPServer
from sender.transport import SmtpTransport

UNLIMITED = RateLimits(global_per_second=None, domain_per_minute=None)
"""No pacing at all: for tests whose subject is not the rate limits."""

EVENT = CalendarEvent(
    course_id="PY101",
    summary="Python intro",
    start=datetime(2027, 3, 27, 10, 0),
    end=datetime(2027, 3, 27, 12, 0),
    timezone="Europe/Oslo",
    organizer_email="invitation@calendar.example.com",
    event_id="session-1",
)
"""A two-hour session in Oslo; its organizer address is where the answers go."""

ISSUE_ZONES = (
    "Europe/Oslo",
    "Asia/Tokyo",
    "America/Sao_Paulo",
    "Africa/Casablanca",
    "America/New_York",
    "Australia/Lord_Howe",
)
"""The calendar zones the deliverability issue names: no DST at all, Ramadan changes, DST
abolished in 2019, a yearly rule in each hemisphere, and a 30-minute change."""


async def until(condition: Callable[[], bool], *, seconds: float = 10.0) -> None:
    """Wait (bounded) until ``condition()`` is true, checking every few milliseconds."""
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"not so within {seconds:g} s")


ARRIVAL_JITTER = 0.15
"""Seconds by which a loaded machine may bunch up messages that a limit spaced out: each is
built, sent and seen after its grant, by processes the scheduler can stall. A test of a
rate limit by arrival times counts windows this much shorter than the limit's own."""


def most_in_a_window(times: Sequence[float], window: float) -> int:
    """The most of ``times`` that any half-open window of ``window`` seconds holds."""
    times = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


@contextlib.asynccontextmanager
async def arrivals(server: RecordingSMTPServer) -> AsyncIterator[list[tuple[float, str]]]:
    """For the block: ``(time.monotonic(), recipient)`` of each message ``server``
    accepts, looked at every 5 ms."""
    seen: list[tuple[float, str]] = []

    async def watch() -> None:
        count = 0
        while True:
            now = time.monotonic()
            for message in server.messages[count:]:
                seen.extend((now, recipient) for recipient in message.recipients)
            count = len(server.messages)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        yield seen
        await asyncio.sleep(0.05)  # the last ones
    finally:
        watcher.cancel()


@contextlib.asynccontextmanager
async def served(asgi: Any, /) -> AsyncIterator[httpx.AsyncClient]:
    """httpx against ``asgi`` (``sender serve``'s app, say) under a real uvicorn on an
    ephemeral loopback port, for the block."""
    async with (
        Listener(asgi, host="127.0.0.1", port=0) as listening,
        httpx.AsyncClient(base_url=listening.url, timeout=30) as http,
    ):
        yield http


def smtp_url(server: RecordingSMTPServer) -> str:
    """The smtp:// URL of a plain recording server, for ``--smtp``."""
    return f"smtp://{server.host}:{server.port}"


def sender_settings(*keys: str, **more: object) -> SenderSettings:
    """Example Academy's From and the LMS login page, links signed with ``keys`` (default k*32)."""
    return SenderSettings(
        from_address=Address("noreply@learning.example.com", "Example Academy"),
        links=LinkSettings(
            secret_keys=keys or ("k" * 32,), base_url="https://lms.example.com/login"
        ),
        **more,  # type: ignore[arg-type]
    )


RELAY = "mx.relay.example"
"""The relay in front of the inbound listener whose ``dmarc=pass`` the RSVP tests trust."""


def invitations_for(
    server: RecordingSMTPServer,
    store: SqliteStore,
    settings: SenderSettings,
    *,
    run: RunSettings | None = None,
    resolver: Resolver | None = None,
    check_sender: bool = True,
    on_rsvp: Callable[[RsvpRecord], None] | None = None,
) -> Invitations:
    """Invitations sending through ``server`` unpaced (two at a time unless ``run`` says)."""
    return Invitations(
        Sender(settings, transport=SmtpTransport(server.smtp_settings())),
        store,
        run or RunSettings(concurrency=2),
        scheduler=Scheduler(UNLIMITED),
        resolver=resolver,
        check_sender=check_sender,
        on_rsvp=on_rsvp,
    )


def dsn(final_recipient: str | None, *, status: str = "5.1.1", message_id: str = "") -> bytes:
    """An RFC 3464 delivery status notification, as Postfix writes one.

    Give each copy its own ``message_id`` where copies must differ, as separate bounces do.
    """
    recipient_field = f"Final-Recipient: rfc822; {final_recipient}\r\n" if final_recipient else ""
    message_id_field = f"Message-ID: <{message_id}>\r\n" if message_id else ""
    return (
        "From: MAILER-DAEMON@mx.d0.example (Mail Delivery System)\r\n"
        "To: bounces@bounce.learning.example.com\r\n"
        f"{message_id_field}"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nThis is the mail system at host mx.\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.d0.example\r\n\r\n"
        f"{recipient_field}"
        "Action: failed\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} Recipient address rejected: User unknown\r\n"
        "\r\n--B--\r\n"
    ).encode()


def hard_bounce(
    at: float,
    *,
    address: str = "gone@elsewhere.example",
    fingerprint: str = "b-1",
    reason: str = "user unknown",
) -> BounceRecord:
    """A kept ``550 5.1.1`` hard bounce (by default gone@elsewhere.example, "user unknown"):
    it spends a budget of 1."""
    return BounceRecord(
        fingerprint=fingerprint,
        address=address,
        kind="hard",
        status="5.1.1",
        diagnostic=f"550 5.1.1 {reason[:1].upper()}{reason[1:]}",
        reason=reason,
        at=at,
    )


def bounce_ingester(
    store: SqliteStore, return_paths: ReturnPathSigner, policy: BouncePolicy
) -> Callable[[InboundMail], Awaitable[None]]:
    """An ``on_mail`` for :class:`~sender.servers.inbound.InboundServer` that ingests every mail
    as a bounce, as ``sender inbound`` does."""

    async def on_mail(mail: InboundMail) -> None:
        await ingest_bounce(
            store,
            mail.data,
            return_paths=return_paths,
            policy=policy,
            now=time.time(),
            envelope_to=mail.recipient,
            source="inbound",
        )

    return on_mail


THREE_ROWS = (
    "email,name,participant_id,course_id\n"
    "a@d.example,A,p-1,c\n"
    "b@d.example,B,p-2,c\n"
    "c@e.example,C,p-3,c\n"
)
"""A participants CSV of three, two of them sharing d.example."""

RETRY_DUE = 0.5
"""Seconds after which a deferral's first retry is due in :func:`run_dir` (0.3 s ± 10 %).

Not shorter: a run claims again what fell due while its other sends were still in flight."""


def run_dir(workdir: Path) -> Path:
    """``workdir`` with THREE_ROWS as p.csv and a sender.toml that retries after 0.3 s and
    paces no domain (two rows share d.example, and waiting for it proves nothing)."""
    (workdir / "sender.toml").write_text(
        'retry_first = "0.3s"\ndomain_rate = 0\n', encoding="utf-8"
    )
    (workdir / "p.csv").write_text(THREE_ROWS, encoding="utf-8")
    return workdir


def write_files(folder: Path, files: Mapping[str, str]) -> None:
    """Write each named file's text (UTF-8) into ``folder``: sender.toml, a CSV, an event."""
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


def people_csv(path: Path, addresses: Sequence[str], *, locales: Sequence[str] = ("en",)) -> None:
    """Write a participants CSV: row i is ``addresses[i]``, "User i", p-i in PY101, the
    ``locales`` in turn."""
    lines = ["email,name,participant_id,course_id,locale"]
    lines += [
        f"{address},User {i},p-{i},PY101,{locales[i % len(locales)]}"
        for i, address in enumerate(addresses)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# A real-looking From and base URL: `--smtp` refuses the shipped examples.
IDENTITY = {
    "SENDER_FROM": "Academy <noreply@learning.test>",
    "SENDER_BASE_URL": "https://learning.test/login",
}


def cli_with(*, catch_exceptions: bool = False, **env: str) -> Callable[..., Result]:
    """``cli(*args, **more_env)``: runs ``sender ARGS`` through click's runner with ``env``.

    Keyword arguments to ``cli`` add to (or override) the environment given here.
    """

    def cli(*args: str, **more: str) -> Result:
        return CliRunner().invoke(
            main, list(args), env={**env, **more}, catch_exceptions=catch_exceptions
        )

    return cli


def clean_environment(**env: str) -> dict[str, str]:
    """This process's environment without any SENDER_* setting, plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SENDER_")}
    clean.update(env)
    return clean


def run_python(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` (this interpreter) in ``cwd`` to the end, its output captured as text.

    Its environment is this process's without any SENDER_* setting.
    """
    command, env = [sys.executable, *args], clean_environment()
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


async def spawn_sender(
    cwd: Path,
    *args: str,
    env: Mapping[str, str],
    stdout: int | None = asyncio.subprocess.PIPE,
    stderr: int | None = asyncio.subprocess.PIPE,
    own_group: bool = False,
) -> asyncio.subprocess.Process:
    """Start ``python -m sender ARGS`` in ``cwd`` as a real subprocess.

    Its environment is this process's without any SENDER_* setting, plus ``env``. With
    ``own_group`` it leads a process group of its own, as a shell's foreground job does,
    so ``os.killpg`` reaches it and its children as a terminal's Ctrl-C would.
    """
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "sender", *args),
        cwd=cwd,
        env=clean_environment(**env),
        stdout=stdout,
        stderr=stderr,
        start_new_session=own_group,
    )


async def two_runs_at_once(
    workdir: Path, smtp: str, *options: str, rows: int, seconds: float
) -> None:
    r"""Two ``sender run``\ s at once from one home, ``a.csv`` and ``b.csv`` of ``rows``
    participants each at firma.example (run ids ``r-a`` and ``r-b``), with ``options``;
    both must exit 0 within ``seconds``."""
    for name in ("a", "b"):
        people_csv(workdir / f"{name}.csv", [f"{name}{i}@firma.example" for i in range(rows)])
    runs = [
        await spawn_sender(
            workdir,
            *("run", f"{name}.csv", "--smtp", smtp, "--no-validate", "--run-id", f"r-{name}"),
            *options,
            env=IDENTITY,
        )
        for name in ("a", "b")
    ]
    outputs = [await asyncio.wait_for(run.communicate(), seconds) for run in runs]
    for run, (_, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr.decode()


async def spawn_inbound(
    cwd: Path, port: int, *options: str, env: Mapping[str, str], verbose: bool = False
) -> asyncio.subprocess.Process:
    """``sender inbound`` on 127.0.0.1:``port`` (``options`` after it) as a real subprocess,
    returned once it says it is listening; the rest of its stderr is left to read."""
    args = ("-v",) if verbose else ()
    args += ("inbound", "--listen", f"127.0.0.1:{port}", *options)
    process = await spawn_sender(cwd, *args, env=env, stdout=None)
    assert process.stderr is not None
    try:
        line = await asyncio.wait_for(process.stderr.readline(), 60)
        assert b"listening on" in line, line
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process


async def deliver(port: int, rcpt: str, data: bytes, *, mail_from: str = "") -> None:
    """One MAIL, RCPT and DATA to the listener on 127.0.0.1:``port``; by default from the null
    reverse-path, as an MTA sends a bounce."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) as client:
        await client.mail(mail_from)
        await client.rcpt(rcpt)
        await client.data(data)


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on now, for a server whose URL must be known before
    it starts (another process may take it in between; tests accept that small race)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
