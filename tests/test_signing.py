"""Our webhook signatures verify with the official Standard Webhooks library."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from sender.errors import ConfigurationError
from sender.signing import secret_bytes, signed_headers

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"an older secret, rotated away ..").decode()
BODY = json.dumps({"type": "message.sent", "data": {"run_id": "r1"}}).encode()


def headers(*secrets: str, body: bytes = BODY) -> dict[str, str]:
    keys = [secret_bytes(secret) for secret in secrets]
    return signed_headers(keys, webhook_id="msg_1", timestamp=int(time.time()), body=body)


def test_the_official_library_verifies_our_signature() -> None:
    payload = Webhook(SECRET).verify(BODY.decode(), headers(SECRET))
    assert payload == json.loads(BODY)


def test_a_tampered_body_fails() -> None:
    signed = headers(SECRET)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY.decode().replace("r1", "r2"), signed)


def test_another_secret_fails() -> None:
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD_SECRET).verify(BODY.decode(), headers(SECRET))


def test_during_a_rotation_either_secret_verifies() -> None:
    signed = headers(OLD_SECRET, SECRET)
    assert len(signed["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OLD_SECRET):
        Webhook(secret).verify(BODY.decode(), signed)


def test_the_headers_match_the_library_signing() -> None:
    now = int(time.time())
    ours = signed_headers([secret_bytes(SECRET)], webhook_id="msg_2", timestamp=now, body=BODY)
    theirs = Webhook(SECRET).sign("msg_2", datetime.fromtimestamp(now, UTC), BODY.decode())
    assert ours == {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(now),
        "webhook-signature": theirs,
    }


@pytest.mark.parametrize("bad", ["whsec_short", "whsec_not base64!!", ""])
def test_an_unusable_secret_is_refused_without_showing_it(bad: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        secret_bytes(bad, setting="webhooks[1].secret")
    assert caught.value.setting == "webhooks[1].secret"
    message = str(caught.value)
    assert "\n" not in message
    assert "webhooks[1].secret" in message
    assert bad == "" or bad not in message
