"""`POST /v1/inbound/ses`: SES notifications through SNS, verified before anything happens.

Messages are signed with a certificate from the test CA, which a tiny HTTPS server on
loopback serves (the same server stands in for the SubscribeURL and records what was
asked of it). The app trusts that server's origin only because the test hands it a
verifier that does; settings cannot.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from sender.config import CliConfig, load_config, parse_ses_topics
from sender.errors import ConfigurationError
from sender.feedback.sns import SnsVerifier, canonical_string
from sender.service import app
from sender.service.web import App

pytestmark = pytest.mark.usefixtures("workdir")

KEY = "admin-key-" + "a" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
OTHER_TOPIC = "arn:aws:sns:eu-west-1:999999999999:attacker"


@dataclass
class CertServer:
    """An HTTPS server on loopback: the signing certificate at /cert.pem, 200 elsewhere."""

    pem: bytes
    key: Any
    paths: list[str] = field(default_factory=list)
    origin: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = head.split(b" ", 2)[1].decode()
            self.paths.append(path)
            body = self.pem if path == "/cert.pem" else b"<ConfirmSubscriptionResponse/>"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def cert_server(
    tls_ca: trustme.CA, server_tls_context: ssl.SSLContext
) -> AsyncIterator[CertServer]:
    """Serves a certificate the test CA issued for ``sns.test``, with an RSA key."""
    leaf = tls_ca.issue_cert("sns.test", key_type=trustme.KeyType.RSA)
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    server_state = CertServer(pem=leaf.cert_chain_pems[0].bytes(), key=key)
    server = await asyncio.start_server(server_state.handle, "127.0.0.1", 0, ssl=server_tls_context)
    port = server.sockets[0].getsockname()[1]
    server_state.origin = f"https://127.0.0.1:{port}"
    async with server:
        yield server_state


@pytest.fixture
def config(workdir: Path) -> CliConfig:
    return load_config(
        environ={
            "SENDER_API_KEYS": KEY,
            "SENDER_SECRET_KEYS": "link-signing-key-" + "s" * 20,
            "SENDER_SES_TOPICS": TOPIC,
        }
    )


@pytest.fixture
async def http(
    config: CliConfig, cert_server: CertServer, tls_ca: trustme.CA
) -> AsyncIterator[httpx.AsyncClient]:
    """The app through httpx's ASGI transport; its certificate fetches are real HTTPS."""
    trust = ssl.create_default_context()
    tls_ca.configure_trust(trust)
    api: App = app(
        config,
        work=False,
        sns=SnsVerifier(config.ses_topics, origin=cert_server.origin, verify=trust),
    )
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://lms.test") as client:
            yield client


def bounce(address: str, *, kind: str = "Permanent", status: str = "5.1.1") -> str:
    return json.dumps(
        {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": kind,
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": address,
                        "action": "failed",
                        "status": status,
                        "diagnosticCode": f"smtp; 550 {status} user unknown",
                    }
                ],
                "timestamp": "2026-12-03T12:00:00.000Z",
            },
            "mail": {"messageId": "0000", "destination": [address]},
        }
    )


def signed(
    server: CertServer,
    kind: str = "Notification",
    *,
    message: str = "",
    topic: str = TOPIC,
    version: str = "1",
    cert_url: str | None = None,
    subscribe: str | None = None,
) -> dict[str, Any]:
    """An SNS message signed the way SNS signs it, with the served certificate's key."""
    document: dict[str, Any] = {
        "Type": kind,
        "MessageId": "11111111-2222-3333-4444-555555555555",
        "TopicArn": topic,
        "Message": message or "You have chosen to subscribe to the topic.",
        "Timestamp": "2026-12-03T12:00:00.000Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url or f"{server.origin}/cert.pem",
    }
    if kind == "Notification":
        document["Subject"] = "Amazon SES Email Event Notification"
    else:
        document["Token"] = "2336412f37fb687f5d51e6e241d09c8058323f60b964"
        document["SubscribeURL"] = subscribe or f"{server.origin}/confirm?Token=x"
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303  # SNS v1
    signature = server.key.sign(canonical_string(document), padding.PKCS1v15(), algorithm)
    document["Signature"] = base64.b64encode(signature).decode()
    return document


async def post(http: httpx.AsyncClient, document: dict[str, Any]) -> httpx.Response:
    """As SNS posts: JSON with content-type text/plain, and no API key."""
    return await http.post(
        "/v1/inbound/ses",
        content=json.dumps(document),
        headers={"Content-Type": "text/plain; charset=UTF-8"},
    )


async def suppressed(http: httpx.AsyncClient) -> list[str]:
    response = await http.get("/v1/suppressions", headers=AUTH)
    assert response.status_code == 200, response.text
    return [entry["address"] for entry in response.json()["suppressions"]]


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_signed_permanent_bounce_suppresses_without_an_api_key(
    http: httpx.AsyncClient, cert_server: CertServer, version: str
) -> None:
    """SignatureVersion 1 (SHA1) and 2 (SHA256) both verify; 5.1.1 Permanent suppresses."""
    document = signed(cert_server, message=bounce("gone@school.example"), version=version)
    response = await post(http, document)
    assert response.status_code == 200, response.text
    assert response.json()["findings"][0]["suppressed"]
    assert await suppressed(http) == ["gone@school.example"]
    assert cert_server.paths == ["/cert.pem"]


async def test_a_transient_bounce_suppresses_nobody(
    http: httpx.AsyncClient, cert_server: CertServer
) -> None:
    """A verified Transient bounce is kept but does not suppress on its own."""
    document = signed(
        cert_server, message=bounce("full@school.example", kind="Transient", status="4.2.2")
    )
    response = await post(http, document)
    assert response.status_code == 200, response.text
    assert response.json()["findings"][0]["suppressed"] is None
    assert await suppressed(http) == []


async def test_the_certificate_is_fetched_once(
    http: httpx.AsyncClient, cert_server: CertServer
) -> None:
    """A second message signed with the same certificate uses the kept one."""
    for address in ("a@school.example", "b@school.example"):
        response = await post(http, signed(cert_server, message=bounce(address)))
        assert response.status_code == 200, response.text
    assert cert_server.paths == ["/cert.pem"]


async def test_a_bad_signature_is_refused_and_suppresses_nobody(
    http: httpx.AsyncClient, cert_server: CertServer
) -> None:
    """The message changed after signing (another address): 400, nothing suppressed."""
    document = signed(cert_server, message=bounce("gone@school.example"))
    document["Message"] = bounce("victim@school.example")
    response = await post(http, document)
    assert response.status_code == 400
    assert response.json()["field"] == "Signature"
    assert await suppressed(http) == []


@pytest.mark.parametrize(
    "cert_url",
    [
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.example/cert.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
        "https://snsXeu-west-1.amazonaws.com/cert.pem",
        "http://127.0.0.1/cert.pem",
    ],
)
async def test_a_certificate_from_elsewhere_is_refused_without_fetching(
    http: httpx.AsyncClient, cert_server: CertServer, cert_url: str
) -> None:
    """Plain http, lookalike hosts, userinfo and ports: 400 before any fetch."""
    document = signed(cert_server, message=bounce("gone@school.example"), cert_url=cert_url)
    response = await post(http, document)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "SigningCertURL"
    assert cert_server.paths == []
    assert await suppressed(http) == []


async def test_a_topic_not_on_the_allow_list_is_refused(
    http: httpx.AsyncClient, cert_server: CertServer
) -> None:
    """A validly signed message from another topic: 400, nothing fetched or suppressed."""
    document = signed(cert_server, message=bounce("gone@school.example"), topic=OTHER_TOPIC)
    response = await post(http, document)
    assert response.status_code == 400
    assert response.json()["field"] == "TopicArn"
    assert cert_server.paths == []
    assert await suppressed(http) == []


async def test_a_forged_subscription_confirmation_is_not_followed(
    http: httpx.AsyncClient, cert_server: CertServer
) -> None:
    """Bad signature or another topic: the SubscribeURL server hears nothing."""
    forged = signed(cert_server, "SubscriptionConfirmation")
    forged["Token"] = "another-token"
    assert (await post(http, forged)).status_code == 400
    other = signed(cert_server, "SubscriptionConfirmation", topic=OTHER_TOPIC)
    assert (await post(http, other)).status_code == 400
    assert not any(path.startswith("/confirm") for path in cert_server.paths)


async def test_a_subscribe_url_off_sns_is_not_followed(
    http: httpx.AsyncClient, cert_server: CertServer
) -> None:
    """A signed confirmation whose SubscribeURL is not an SNS host: 400, not followed."""
    document = signed(
        cert_server,
        "SubscriptionConfirmation",
        subscribe="https://evil.example/confirm?Token=x",
    )
    response = await post(http, document)
    assert response.status_code == 400
    assert response.json()["field"] == "SubscribeURL"
    assert cert_server.paths == []


async def test_a_valid_subscription_confirmation_is_followed(
    http: httpx.AsyncClient, cert_server: CertServer
) -> None:
    """Verified, on an allowed topic: its SubscribeURL is fetched once."""
    response = await post(http, signed(cert_server, "SubscriptionConfirmation", version="2"))
    assert response.status_code == 200, response.text
    assert response.json()["confirmed"] is True
    assert cert_server.paths == ["/cert.pem", "/confirm?Token=x"]


async def test_unsubscribe_confirmation_is_verified_and_not_followed(
    http: httpx.AsyncClient, cert_server: CertServer
) -> None:
    response = await post(http, signed(cert_server, "UnsubscribeConfirmation"))
    assert response.status_code == 200, response.text
    assert response.json()["confirmed"] is False
    assert cert_server.paths == ["/cert.pem"]


async def test_without_ses_topics_every_message_is_refused(
    workdir: Path, cert_server: CertServer, tls_ca: trustme.CA
) -> None:
    """No ses_topics configured: the endpoint accepts nothing."""
    config = load_config(
        environ={"SENDER_API_KEYS": KEY, "SENDER_SECRET_KEYS": "link-signing-key-" + "s" * 20}
    )
    trust = ssl.create_default_context()
    tls_ca.configure_trust(trust)
    verifier = SnsVerifier(config.ses_topics, origin=cert_server.origin, verify=trust)
    api = app(config, work=False, sns=verifier)
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://lms.test") as client:
            document = signed(cert_server, message=bounce("gone@school.example"))
            response = await post(client, document)
            assert response.status_code == 400
            assert response.json()["field"] == "TopicArn"
            assert await suppressed(client) == []


def test_ses_topics_come_from_sender_toml_or_the_environment(workdir: Path) -> None:
    (workdir / "sender.toml").write_text(f'ses_topics = ["{TOPIC}"]\n', encoding="utf-8")
    assert load_config(config_file=workdir / "sender.toml", environ={}).ses_topics == (TOPIC,)
    env = {"SENDER_SES_TOPICS": f"{TOPIC}, {OTHER_TOPIC}"}
    assert load_config(environ=env).ses_topics == (TOPIC, OTHER_TOPIC)


@pytest.mark.parametrize(
    "value", ["arn:aws:s3:::bucket", ["ok", 3], f"{TOPIC}\nx", "https://sns.example/topic"]
)
def test_a_bad_ses_topics_setting_is_one_line(value: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_ses_topics(value)
    assert caught.value.setting == "ses_topics"
    assert "\n" not in str(caught.value)
