"""Standard Webhooks signatures (https://www.standardwebhooks.com): what an LMS checks
before it believes a webhook came from this sender.

A delivery carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256, under the secret's bytes,
of ``{id}.{timestamp}.{body}``. Several secrets (a rotation) give several signatures,
space-separated, so a receiver holding either secret verifies. Secrets are written
``whsec_`` + base64, as every Standard Webhooks library reads them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from sender.errors import ConfigurationError

__all__ = ["SECRET_PREFIX", "secret_bytes", "sign", "signed_headers"]

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_MIN = 16  # bytes: shorter HMAC keys are guessable


def secret_bytes(secret: str, /, *, setting: str = "webhooks.secret") -> bytes:
    """The key a ``whsec_…`` secret stands for; a one-line error naming ``setting``
    (never the secret) when it is not one."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < SECRET_MIN:
        raise ConfigurationError(
            f"{setting}: a secret must be {SECRET_PREFIX!r} and the base64 of at least "
            f"{SECRET_MIN} random bytes",
            setting=setting,
        )
    return key


def sign(key: bytes, /, *, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,`` signature of ``body`` under ``key``."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    keys: Sequence[bytes], /, *, webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery, signed with every key."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            sign(key, webhook_id=webhook_id, timestamp=timestamp, body=body) for key in keys
        ),
    }
