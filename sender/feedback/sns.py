"""Amazon SNS messages, verified before anything acts on them; the only SNS/httpx user here.

SES reports bounces and complaints through SNS, which POSTs JSON to an HTTPS endpoint.
Anybody can POST the same JSON, so a message counts only when all of these hold:

- its ``TopicArn`` is on the allow-list (``ses_topics``): a valid signature proves only
  that *some* SNS topic sent it, and anyone can own a topic (another project accepted
  any topic, and an attacker's own topic went through);
- its ``SigningCertURL`` is ``https://sns.<region>.amazonaws.com/...pem`` (or
  ``.amazonaws.com.cn``): nothing else is ever fetched; no port, no userinfo, no redirect;
- its signature (``SignatureVersion`` 1: SHA1withRSA, 2: SHA256withRSA, PKCS#1 v1.5)
  verifies under that certificate's key over SNS's canonical string (below).

Certificates are fetched with httpx (TLS verified), size- and time-limited, and a bounded
number of them kept. A ``SubscriptionConfirmation``'s ``SubscribeURL`` is followed only
after all of that, and only when it too is on an SNS host. Every refusal is an
:class:`~sender.errors.InputError` (``field`` names the part) and nothing was acted on.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import ssl
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sender.errors import InputError

__all__ = ["CANONICAL_FIELDS", "SnsMessage", "SnsVerifier", "canonical_string", "sns_url"]

# Both confirmations sign the same fields.
_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")

#: The fields signed, in order, per message type (Subject only when present).
CANONICAL_FIELDS: Mapping[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _CONFIRMATION,
    "UnsubscribeConfirmation": _CONFIRMATION,
}
_HASHES: Mapping[str, type[hashes.SHA1] | type[hashes.SHA256]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?")
CERT_LIMIT = 64 * 1024  # bytes of a signing certificate
CACHE_SIZE = 16  # certificates kept (SNS signs with one per region at a time)
TIMEOUT = 10.0  # seconds for a certificate fetch or a subscription confirmation


def sns_url(url: str, /, *, field: str, origin: str | None = None) -> str:
    """``url`` when it is ``https://sns.<region>.amazonaws.com/...`` exactly, else InputError.

    The netloc must be the bare host: no userinfo, no port, no trailing dot, lower case.
    ``origin`` (``https://127.0.0.1:PORT``) is a test's own server; settings never reach it.
    """
    if not isinstance(url, str) or any(c in url for c in "\\\r\n\t ") or not url.isascii():
        raise InputError("not an SNS URL", field=field)
    parts = urlsplit(url)
    if origin is not None and f"{parts.scheme}://{parts.netloc}" == origin:
        return url
    if parts.scheme != "https" or not _SNS_HOST.fullmatch(parts.netloc):
        raise InputError("only https://sns.<region>.amazonaws.com/ is trusted for SNS", field=field)
    return url


def canonical_string(message: Mapping[str, object], /) -> bytes:
    """What SNS signs: ``name\\nvalue\\n`` for each of the type's fields present, in order."""
    fields = CANONICAL_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise InputError("unknown SNS message type", field="Type")
    text = []
    for name in fields:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise InputError(f"the SNS message has no {name}", field=name)
        text.append(f"{name}\n{value}\n")
    return "".join(text).encode("utf-8")


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """A verified SNS message: its type, topic and the fields an endpoint acts on."""

    type: str
    topic: str
    message: str  # the payload (an SES notification for a Notification)
    subscribe_url: str | None
    fields: Mapping[str, object]


def _document(body: bytes) -> dict[str, object]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError("the body is not JSON", field="body") from exc
    if not isinstance(document, dict):
        raise InputError("the body is not a JSON object", field="body")
    return document


class SnsVerifier:
    """Verifies SNS messages for the topics in ``topics``, fetching certificates as needed.

    ``origin`` and ``verify`` exist for tests only (a loopback HTTPS server and its CA);
    nothing in sender.toml or the environment sets them.
    """

    def __init__(
        self,
        topics: tuple[str, ...],
        /,
        *,
        origin: str | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.topics = frozenset(topics)
        self._origin = origin
        self._client = httpx.AsyncClient(
            verify=verify, follow_redirects=False, timeout=TIMEOUT, trust_env=False
        )
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def verify(self, body: bytes, /) -> SnsMessage:
        """The message in ``body`` once topic, certificate URL and signature all check out.

        Cheap checks go first, so a forged message from elsewhere fetches nothing.
        """
        document = _document(body)
        canonical = canonical_string(document)
        topic = document.get("TopicArn")
        if not isinstance(topic, str) or topic not in self.topics:
            raise InputError("the topic is not in ses_topics", field="TopicArn")
        algorithm = _HASHES.get(str(document.get("SignatureVersion")))
        if algorithm is None:
            raise InputError("SignatureVersion must be 1 or 2", field="SignatureVersion")
        try:
            signature = base64.b64decode(str(document.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError("the signature is not base64", field="Signature") from exc
        cert_url = sns_url(
            str(document.get("SigningCertURL", "")), field="SigningCertURL", origin=self._origin
        )
        if not urlsplit(cert_url).path.endswith(".pem"):
            raise InputError("the certificate URL is not a .pem", field="SigningCertURL")
        subscribe = document.get("SubscribeURL")
        if document["Type"] != "Notification":
            subscribe = sns_url(str(subscribe), field="SubscribeURL", origin=self._origin)
        key = await self._key(cert_url)
        try:
            key.verify(signature, canonical, padding.PKCS1v15(), algorithm())
        except InvalidSignature as exc:
            raise InputError("the signature does not verify", field="Signature") from exc
        return SnsMessage(
            type=str(document["Type"]),
            topic=topic,
            message=str(document["Message"]),
            subscribe_url=subscribe if isinstance(subscribe, str) else None,
            fields=document,
        )

    async def confirm(self, message: SnsMessage, /) -> None:
        """Follow a verified SubscriptionConfirmation's SubscribeURL (an SNS host only)."""
        if message.type != "SubscriptionConfirmation" or message.subscribe_url is None:
            raise InputError("not a subscription confirmation", field="Type")
        url = sns_url(message.subscribe_url, field="SubscribeURL", origin=self._origin)
        try:
            response = await self._client.get(url)
        except httpx.HTTPError as exc:
            raise InputError("SNS did not answer the confirmation", field="SubscribeURL") from exc
        if response.status_code != 200:
            raise InputError(
                f"SNS answered the confirmation with {response.status_code}", field="SubscribeURL"
            )

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        """The RSA key of the certificate at ``url``: fetched once, a few kept."""
        if (cached := self._keys.get(url)) is not None:
            self._keys.move_to_end(url)
            return cached
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise InputError(
                        f"the certificate URL answered {response.status_code}",
                        field="SigningCertURL",
                    )
                data = b""
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > CERT_LIMIT:
                        raise InputError("the certificate is too large", field="SigningCertURL")
        except httpx.HTTPError as exc:
            raise InputError("the certificate was not fetched", field="SigningCertURL") from exc
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError as exc:
            raise InputError("the certificate is not PEM", field="SigningCertURL") from exc
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise InputError("the signing certificate is not valid now", field="SigningCertURL")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise InputError("the signing certificate has no RSA key", field="SigningCertURL")
        self._keys[url] = key
        while len(self._keys) > CACHE_SIZE:
            self._keys.popitem(last=False)
        return key
