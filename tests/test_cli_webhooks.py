"""``sender webhooks list | test | replay`` against a receiver on loopback."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from standardwebhooks import Webhook

from tests.helpers import IDENTITY, cli_with

pytestmark = pytest.mark.usefixtures("workdir")

KEY = "cli-webhooks-test-key-0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(b"cli-receiver-secret-0123456789ab").decode()
cli = cli_with(SENDER_SECRET_KEYS=KEY, **IDENTITY)


class Received(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Received.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Received)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks?token=lms-side-token"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_test_posts_a_signed_event_and_shows_the_answer(receiver: str) -> None:
    env = {"SENDER_WEBHOOK_URL": receiver, "SENDER_WEBHOOK_SECRET": SECRET}
    result = cli("webhooks", "test", **env)
    assert result.exit_code == 0, result.output
    assert "webhooks[1]" in result.output
    assert "204" in result.output
    assert "lms-side-token" not in result.output
    (headers, body) = Received.requests[0]
    event = Webhook(SECRET).verify(body.decode(), headers)
    assert event["type"] == "webhook.test"
    assert SECRET not in result.output


def test_list_and_replay_name_the_endpoint_and_its_deliveries(receiver: str) -> None:
    env = {"SENDER_WEBHOOK_URL": receiver, "SENDER_WEBHOOK_SECRET": SECRET}
    replayed = cli("webhooks", "replay", "--since", "1h", **env)
    assert replayed.exit_code == 0, replayed.output
    assert "0 deliveries due again" in replayed.output
    listed = cli("webhooks", "list", "--json", **env)
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert row["endpoint"] == "webhooks[1]"
    assert row["url"].endswith("/hooks")
    assert (row["events"], row["pending"], row["disabled"]) == (["all"], 0, None)


def test_without_webhooks_test_is_a_configuration_error() -> None:
    result = cli("webhooks", "test")
    assert result.exit_code == 2
    assert "SENDER_WEBHOOK_URL" in result.output
