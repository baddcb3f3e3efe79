"""The SES v2 transport against moto's SES in server mode (real HTTP on loopback)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends

from sender.bulk.runner import transport_identity
from sender.client import open_sender
from sender.compose.dkim import generate_key
from sender.config import SesSettings, transport_from_url
from sender.errors import ConfigurationError
from sender.models import DeliveryStatus, Envelope, Participant
from sender.transport.ses import SesTransport, sigv4_headers
from tests.helpers import IDENTITY, cli_with, people_csv, sender_settings

CREDS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "not-a-real-secret"}
FROM = "noreply@learning.test"  # IDENTITY's From
MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's server on 127.0.0.1 (ephemeral port) as an endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def ses(moto_endpoint: str) -> str:
    """The endpoint, with moto's state reset so each test sees only its own mail."""
    httpx.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    return moto_endpoint


def backend(region: str) -> Any:
    return ses_backends[DEFAULT_ACCOUNT_ID][region]


# --- settings -----------------------------------------------------------------------------


def test_ses_urls_parse_and_bad_ones_name_the_setting() -> None:
    """ses://REGION with a configuration set parses; the identity keeps it."""
    settings = transport_from_url("ses://eu-west-1?configuration_set=lms", pool_size=8)
    assert settings == SesSettings("eu-west-1", configuration_set="lms", pool_size=8)
    assert transport_identity(settings) == "ses://eu-west-1?configuration_set=lms"
    for url, words in [
        ("ses://moon", "region"),
        ("ses://eu-west-1?endpoint=http://ses.example.com", "loopback"),
        ("ses://eu-west-1?colour=red", "colour"),
        ("ses://user:pw@eu-west-1", "AWS_ACCESS_KEY_ID"),
    ]:
        with pytest.raises(ConfigurationError, match=words) as caught:
            transport_from_url(url)
        assert caught.value.setting == "transport"
        assert "\n" not in str(caught.value)


def test_sigv4_matches_botocore() -> None:
    """Our signature is the one the AWS SDK computes for the same request."""
    url = "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
    body = b'{"Content": {}}'
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    request = AWSRequest(method="POST", url=url, data=body, headers={})
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    auth = SigV4Auth(Credentials("AKIDEXAMPLE", secret, "token/123"), "ses", "eu-west-1")
    auth.add_auth(request)
    when = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    ours = sigv4_headers(
        method="POST",
        url=url,
        body=body,
        region="eu-west-1",
        access_key="AKIDEXAMPLE",
        secret_key=secret,
        session_token="token/123",
        now=when.replace(tzinfo=UTC),
    )
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-security-token"] == request.headers["X-Amz-Security-Token"]


# --- against moto -------------------------------------------------------------------------


async def test_ses_receives_exactly_the_bytes_sender_built(
    ses: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A composed, DKIM-signed invitation goes to SES byte for byte, and is accepted."""
    for name, value in CREDS.items():
        monkeypatch.setenv(name, value)
    backend("eu-north-1").verify_email_identity("noreply@learning.example.com")
    settings = SesSettings("eu-north-1", endpoint=ses)
    participant = Participant("kari@example.com", "Kari", "p-1", "PY101")
    dkim = {
        "dkim_domain": "learning.example.com",
        "dkim_selector": "s1",
        "dkim_private_key": generate_key(),
    }
    async with open_sender(sender_settings(**dkim), smtp=settings) as sender:
        assert isinstance(sender.transport, SesTransport)
        composed = sender.compose(participant)
        result = await sender.deliver(composed)
    assert result.status is DeliveryStatus.ACCEPTED, result
    (stored,) = backend("eu-north-1").sent_messages
    assert stored.raw_data.encode() == composed.message.data
    assert composed.message.data.startswith(b"DKIM-Signature:")
    assert "kari@example.com" in stored.destinations


async def test_message_rejected_is_permanent(ses: str) -> None:
    """An unverified From makes SES answer MessageRejected: a permanent result per recipient."""
    async with SesTransport(SesSettings("eu-south-1", endpoint=ses), env=CREDS) as transport:
        results = await transport.send(Envelope("a@example.org", ("b@x.test", "c@x.test")), MESSAGE)
    assert [r.recipient for r in results] == ["b@x.test", "c@x.test"]
    assert {r.status for r in results} == {DeliveryStatus.PERMANENT}
    assert "MessageRejected" in results[0].detail
    assert backend("eu-south-1").sent_messages == []


async def test_missing_credentials_are_a_configuration_error(ses: str) -> None:
    async with SesTransport(SesSettings("eu-south-1", endpoint=ses), env={}) as transport:
        with pytest.raises(ConfigurationError, match="AWS_ACCESS_KEY_ID"):
            await transport.send(Envelope("a@example.org", ("b@x.test",)), MESSAGE)


def test_cli_run_delivers_every_row_through_ses(ses: str, workdir: Path) -> None:
    """`sender run --transport ses://eu-west-1` sends every row; status shows them sent,
    and a rerun of a resumed run keeps its transport."""
    backend("eu-west-1").verify_email_identity(FROM)
    people = [f"user{i}@{d}.example" for i in range(3) for d in ("a", "b")]
    people_csv(workdir / "p.csv", people)
    cli = cli_with(SENDER_SECRET_KEYS="ses-test-key-aaaaaaaaaaaaaaaaaaaaa", **IDENTITY, **CREDS)
    url = f"ses://eu-west-1?endpoint={ses}"
    run = cli(
        "run", "p.csv", "--transport", url, "--run-id", "r-ses", "--no-validate",
        "--domain-rate", "0",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    status = json.loads(cli("status", "r-ses", "--json").stdout)
    assert status["counts"]["sent"] == len(people)
    assert status["options"]["transport"].startswith("ses://eu-west-1")
    sent = backend("eu-west-1").sent_messages
    # Our Destination comes first; moto adds the To header's addresses after it.
    assert sorted(m.destinations[0] for m in sent) == sorted(people)
    assert all(f"<{m.destinations[0]}>" in m.raw_data for m in sent)


def test_cli_run_records_rejections_as_failures(ses: str, workdir: Path) -> None:
    """Without a verified From, SES rejects each message; the run records permanent failures."""
    people_csv(workdir / "p.csv", ["a@a.example", "b@b.example"])
    cli = cli_with(SENDER_SECRET_KEYS="ses-test-key-aaaaaaaaaaaaaaaaaaaaa", **IDENTITY, **CREDS)
    run = cli(
        "run", "p.csv", "--smtp", f"ses://eu-west-1?endpoint={ses}", "--run-id", "r-rej",
        "--no-validate", "--domain-rate", "0",
    )  # fmt: skip
    status = json.loads(cli("status", "r-rej", "--json").stdout)
    assert status["counts"].get("sent", 0) == 0, run.stdout
    assert status["counts"]["failed"] == 2, status


def test_workers_with_ses_are_refused(workdir: Path) -> None:
    people_csv(workdir / "p.csv", ["a@a.example"])
    cli = cli_with(SENDER_SECRET_KEYS="ses-test-key-aaaaaaaaaaaaaaaaaaaaa", **IDENTITY, **CREDS)
    result = cli("run", "p.csv", "--transport", "ses://eu-west-1", "--workers", "2")
    assert result.exit_code == 2
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "workers" in line


def test_transport_key_in_sender_toml(workdir: Path) -> None:
    """`transport = "ses://..."` in sender.toml is the transport; a bad region names it."""
    (workdir / "sender.toml").write_text('transport = "ses://nowhere"\n', encoding="utf-8")
    people_csv(workdir / "p.csv", ["a@a.example"])
    cli = cli_with(SENDER_SECRET_KEYS="ses-test-key-aaaaaaaaaaaaaaaaaaaaa", **IDENTITY, **CREDS)
    result = cli("run", "p.csv")
    assert result.exit_code == 2
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "region" in line


# --- refusals from a plain loopback HTTP server ---------------------------------------------


class Canned(BaseHTTPRequestHandler):
    status = 429
    body = b'{"__type": "TooManyRequestsException", "message": "slow down"}'

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def canned(status: int, body: bytes) -> Iterator[str]:
    handler = type("H", (Canned,), {"status": status, "body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, b'{"__type": "TooManyRequestsException", "message": "slow down"}', "TooMany"),
        (400, b'{"__type": "Throttling", "message": "Maximum sending rate"}', "Throttling"),
        (503, b"<html>unavailable</html>", "HTTP 503"),
    ],
)
async def test_throttling_and_5xx_are_temporary(status: int, body: bytes, expected: str) -> None:
    for endpoint in canned(status, body):
        settings = SesSettings("eu-west-1", endpoint=endpoint)
        async with SesTransport(settings, env=CREDS) as transport:
            (result,) = await transport.send(Envelope("a@example.org", ("b@x.test",)), MESSAGE)
        assert result.status is DeliveryStatus.TEMPORARY
        assert expected in result.detail


@pytest.mark.parametrize("code", ["AccountSendingPausedException", "SendingPausedException"])
async def test_paused_sending_is_a_configuration_error(code: str) -> None:
    """Paused sending stops the run with SES's reason instead of booking bounces."""
    body = json.dumps({"__type": code, "message": "paused by review"}).encode()
    for endpoint in canned(400, body):
        async with SesTransport(SesSettings("eu-west-1", endpoint=endpoint), env=CREDS) as t:
            with pytest.raises(ConfigurationError, match=f"{code}: paused by review"):
                await t.send(Envelope("a@example.org", ("b@x.test",)), MESSAGE)


async def test_refused_connection_is_temporary() -> None:
    with socket.socket() as closed:  # a port nobody listens on once closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = SesSettings("eu-west-1", endpoint=f"http://127.0.0.1:{port}", timeout=5)
    async with SesTransport(settings, env=CREDS) as transport:
        (result,) = await asyncio.wait_for(
            transport.send(Envelope("a@example.org", ("b@x.test",)), MESSAGE), 30
        )
    assert result.status is DeliveryStatus.TEMPORARY


def test_paused_account_pauses_the_run_with_the_reason(workdir: Path) -> None:
    """AccountSendingPausedException stops the run, paused with SES's reason; no row is
    booked as a bounce."""
    people_csv(workdir / "p.csv", ["a@a.example", "b@b.example"])
    cli = cli_with(SENDER_SECRET_KEYS="ses-test-key-aaaaaaaaaaaaaaaaaaaaa", **IDENTITY, **CREDS)
    body = b'{"__type": "AccountSendingPausedException", "message": "under review"}'
    for endpoint in canned(400, body):
        run = cli(
            "run", "p.csv", "--transport", f"ses://eu-west-1?endpoint={endpoint}",
            "--run-id", "r-paused", "--no-validate", "--domain-rate", "0",
        )  # fmt: skip
        assert run.exit_code != 0
    status = json.loads(cli("status", "r-paused", "--json").stdout)
    assert status["state"] == "paused"
    assert "AccountSendingPausedException: under review" in status["paused_reason"]
    assert status["counts"]["queued"] == 2  # kept for a resume, not failed


async def test_close_lets_a_send_in_flight_finish(ses: str) -> None:
    """aclose waits for the request in flight; a send after it is refused, not lost."""
    backend("ap-south-1").verify_email_identity("a@example.org")
    transport = SesTransport(SesSettings("ap-south-1", endpoint=ses), env=CREDS)
    sending = asyncio.create_task(transport.send(Envelope("a@example.org", ("b@x.test",)), MESSAGE))
    await asyncio.sleep(0)  # the send has its turn
    await transport.aclose()
    (result,) = await sending
    assert result.status is DeliveryStatus.ACCEPTED
    with pytest.raises(ConfigurationError, match="closed"):
        await transport.send(Envelope("a@example.org", ("b@x.test",)), MESSAGE)
    await transport.aclose()
