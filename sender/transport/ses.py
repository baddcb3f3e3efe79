"""Delivery through Amazon SES v2 ``SendEmail``; the only module that speaks to SES.

Each message goes out as the bytes sender composed (DKIM-signed as for SMTP) in
``Content.Raw.Data``, to the envelope's recipients, over one pooled
:class:`httpx.AsyncClient`, signed with AWS Signature Version 4 (written here with
:mod:`hmac`; no AWS SDK). Credentials come from ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``, read at the first send. SES picks
the return path itself, so the envelope's ``mail_from`` is not sent.

What the caller gets back, for every recipient alike (SES accepts or refuses the message):

=============================================  ======================================
what happened                                  result
=============================================  ======================================
200                                            ACCEPTED, ``detail`` has SES's MessageId
``MessageRejected``                            PERMANENT
429, ``TooManyRequests``/``Throttling``, 5xx   TEMPORARY
timeout, lost or refused connection            TEMPORARY, ``detail`` says which
any other refusal                              TEMPORARY, with SES's error code
=============================================  ======================================

Settings that cannot work raise :class:`~sender.errors.ConfigurationError`, which pauses
a run with the reason: missing credentials, a refused signature or key (403), an unknown
configuration set, and sending paused for the account or the configuration set
(``AccountSendingPausedException``, ``SendingPausedException``). Request bodies and
credentials are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime

import httpx

from sender.config import SesSettings
from sender.errors import ConfigurationError
from sender.lifecycle import AsyncResource
from sender.models import TIMEOUT, DeliveryStatus, Envelope, RecipientResult
from sender.readonly import ReadOnly
from sender.transport.base import results_for_all

__all__ = ["SesTransport", "sigv4_headers"]

_log = logging.getLogger("sender.transport")

PATH = "/v2/email/outbound-emails"
SERVICE = "ses"  # SES v2's signing name
_THROTTLED = {"TooManyRequestsException", "Throttling", "ThrottlingException"}
_PAUSED = {"AccountSendingPausedException", "SendingPausedException"}
_REFUSED_KEY = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AccessDeniedException",
    "AccessDenied",
    "ExpiredTokenException",
    "MissingAuthenticationTokenException",
}


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_headers(
    *,
    method: str,
    url: str,
    body: bytes,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    now: datetime | None = None,
    service: str = SERVICE,
) -> dict[str, str]:
    """The headers that sign one request (AWS Signature Version 4): ``host``,
    ``x-amz-date``, ``x-amz-content-sha256``, the session token if any, and
    ``authorization``. The URL must have no query string (SendEmail has none)."""
    parts = httpx.URL(url)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {
        "host": parts.netloc.decode("ascii"),
        "x-amz-content-sha256": payload_hash,
        "x-amz-date": stamp,
    }
    if session_token:
        headers["x-amz-security-token"] = session_token
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            parts.raw_path.decode("ascii") or "/",
            "",  # no query string
            *(f"{name}:{headers[name].strip()}" for name in sorted(headers)),
            "",
            signed,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret_key).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return headers


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """SES's error code and message, from the JSON body or the ``x-amzn-ErrorType`` header."""
    code = response.headers.get("x-amzn-errortype", "").partition(":")[0]
    message = ""
    try:
        data = json.loads(response.content)
    except ValueError:
        data = None
    if isinstance(data, dict):
        found = data.get("__type") or data.get("code") or data.get("Code") or ""
        code = code or str(found).rpartition("#")[2]
        message = str(data.get("message") or data.get("Message") or "")
    elif b"<Code>" in response.content:  # the older XML error shape
        text = response.text
        code = code or text.partition("<Code>")[2].partition("</Code>")[0]
        message = text.partition("<Message>")[2].partition("</Message>")[0]
    return code or f"HTTP {response.status_code}", " ".join(message.split())[:300]


class SesTransport(AsyncResource):
    """Sends through SES v2 with up to ``settings.pool_size`` requests in flight."""

    settings = ReadOnly[SesSettings]("_settings")

    def __init__(self, settings: SesSettings, /, *, env: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._env = env if env is not None else os.environ
        self._url = (settings.endpoint or f"https://email.{settings.region}.amazonaws.com").rstrip(
            "/"
        ) + PATH
        self._turns = asyncio.Semaphore(settings.pool_size)
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    def _credentials(self) -> tuple[str, str, str | None]:
        key = self._env.get("AWS_ACCESS_KEY_ID", "")
        secret = self._env.get("AWS_SECRET_ACCESS_KEY", "")
        if not key or not secret:
            raise ConfigurationError(
                "ses: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to send through SES",
                setting="AWS_ACCESS_KEY_ID",
            )
        return key, secret, self._env.get("AWS_SESSION_TOKEN") or None

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise ConfigurationError("ses: the transport is closed")
        if self._client is None:
            size = self._settings.pool_size
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._settings.timeout),
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                trust_env=False,  # no proxy from the environment sees signed requests
            )
        return self._client

    async def send(self, envelope: Envelope, message: bytes, /) -> tuple[RecipientResult, ...]:
        """Deliver ``message`` to every envelope recipient with one ``SendEmail`` call."""
        key, secret, token = self._credentials()
        request: dict[str, object] = {
            "Destination": {"ToAddresses": list(envelope.recipients)},
            "Content": {"Raw": {"Data": base64.b64encode(message).decode("ascii")}},
        }
        if self._settings.configuration_set:
            request["ConfigurationSetName"] = self._settings.configuration_set
        body = json.dumps(request).encode()
        recipients = envelope.recipients
        async with self._turns:
            headers = sigv4_headers(
                method="POST",
                url=self._url,
                body=body,
                region=self._settings.region,
                access_key=key,
                secret_key=secret,
                session_token=token,
            )
            headers["content-type"] = "application/json"
            try:
                async with asyncio.timeout(self._settings.timeout * 2):
                    response = await self._http().post(self._url, content=body, headers=headers)
            except (TimeoutError, httpx.TimeoutException):
                return results_for_all(recipients, DeliveryStatus.TEMPORARY, detail=TIMEOUT)
            except httpx.ConnectError:
                return results_for_all(
                    recipients, DeliveryStatus.TEMPORARY, detail="connection refused"
                )
            except httpx.TransportError:
                return results_for_all(
                    recipients, DeliveryStatus.TEMPORARY, detail="connection lost"
                )
        return self._verdict(response, recipients)

    def _verdict(
        self, response: httpx.Response, recipients: tuple[str, ...]
    ) -> tuple[RecipientResult, ...]:
        if response.status_code == 200:
            try:
                message_id = str(json.loads(response.content).get("MessageId", ""))
            except (ValueError, AttributeError):
                message_id = ""
            return results_for_all(
                recipients, DeliveryStatus.ACCEPTED, detail=f"ses: MessageId {message_id}"
            )
        code, text = _error_of(response)
        detail = f"ses: {code}" + (f": {text}" if text else "")
        _log.info("ses refused a message: HTTP %s %s", response.status_code, code)
        if code in _PAUSED:
            raise ConfigurationError(f"{detail} (sending is paused)", setting="transport")
        if code in _REFUSED_KEY or response.status_code in {401, 403}:
            raise ConfigurationError(
                f"{detail} (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
                setting="AWS_ACCESS_KEY_ID",
            )
        if code == "NotFoundException":  # e.g. the configuration set does not exist
            raise ConfigurationError(detail, setting="transport")
        if code == "MessageRejected":
            return results_for_all(recipients, DeliveryStatus.PERMANENT, detail=detail)
        return results_for_all(recipients, DeliveryStatus.TEMPORARY, detail=detail)

    async def aclose(self) -> None:
        """Wait for requests in flight, then close the connection pool; idempotent.

        Sends that come after it find the transport closed (a ConfigurationError)."""
        if self._closed:
            return
        self._closed = True
        size = self._settings.pool_size
        for _ in range(size):  # every turn back: nothing is in flight any more
            await self._turns.acquire()
        client, self._client = self._client, None
        try:
            if client is not None:
                await client.aclose()
        finally:
            for _ in range(size):
                self._turns.release()
