"""`sender serve`'s HTTP API, called with httpx over a real uvicorn on a loopback port.

The issue's own checks: a Get Link issued over HTTP verifies with `sender link verify`;
one invitation reaches a real SMTP server; a run of 12 enqueued through the API shows
`sent: 12`; no key or a wrong one is 401, a malformed body and an off-site `next` 4xx.
Mounted use (inside an LMS's own ASGI app) goes through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from sender.compose.render import PageTemplates
from sender.config import CliConfig, load_config
from sender.service import app
from sender.store import open_store
from sender.testing import RecordingSMTPServer
from tests.helpers import IDENTITY, cli_with, hard_bounce, served, smtp_url, spawn_sender

pytestmark = pytest.mark.usefixtures("workdir")

KEY = "admin-key-" + "a" * 24
LINKS_ONLY = "links-key-" + "b" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
KEYS = f"{KEY},{LINKS_ONLY}:links"


def person(i: int, *, domain: str = "school.example") -> dict[str, str]:
    return {
        "email": f"user{i}@{domain}",
        "name": f"User {i}",
        "participant_id": f"p-{i}",
        "course_id": "PY101",
    }


def env_for(server: RecordingSMTPServer) -> dict[str, str]:
    return {
        "SENDER_API_KEYS": KEYS,
        "SENDER_SECRET_KEYS": "link-signing-key-" + "s" * 20,
        "SENDER_SMTP_URL": smtp_url(server),
        **IDENTITY,
    }


@pytest.fixture
def config(workdir: Path, smtp_server: RecordingSMTPServer) -> CliConfig:
    """Settings sending to the recording server, unpaced, with an all-scopes and a
    links-only key."""
    (workdir / "sender.toml").write_text("rate = 0\ndomain_rate = 0\n", encoding="utf-8")
    return load_config(config_file=workdir / "sender.toml", environ=env_for(smtp_server))


@pytest.fixture
async def client(config: CliConfig) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for the API under a real uvicorn on an ephemeral loopback port."""
    async with served(app(config, poll=0.05)) as http:
        yield http


async def run_status(client: httpx.AsyncClient, run_id: str, *, sent: int) -> dict[str, Any]:
    """GET /v1/runs/{run_id} until ``sent`` messages are sent (bounded)."""
    data: dict[str, Any] = {}
    for _ in range(600):
        response = await client.get(f"/v1/runs/{run_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        data = response.json()
        if data["counts"]["sent"] >= sent and data["state"] == "done":
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never sent {sent}: {data}")


async def test_get_link_issued_over_http_verifies_with_the_cli(
    client: httpx.AsyncClient, smtp_server: RecordingSMTPServer
) -> None:
    """POST /v1/links returns {url, token, expires_at}, and `sender link verify` accepts
    the URL with the same claims; /v1/links/verify says the same."""
    response = await client.post(
        "/v1/links",
        json={"participant_id": "p-7", "course_id": "PY101", "next": "/courses/1"},
        headers={"Authorization": f"Bearer {LINKS_ONLY}"},
    )
    assert response.status_code == 200, response.text
    issued = response.json()
    assert set(issued) == {"url", "token", "expires_at"}
    assert issued["url"].startswith("https://learning.test/login?token=")
    cli = cli_with(**env_for(smtp_server))
    result = await asyncio.to_thread(cli, "link", "verify", issued["url"], "--json")
    assert result.exit_code == 0, result.output
    claims = json.loads(result.output)
    assert (claims["participant_id"], claims["course_id"], claims["next"]) == (
        "p-7",
        "PY101",
        "/courses/1",
    )
    verified = await client.post("/v1/links/verify", json={"token": issued["token"]}, headers=AUTH)
    assert verified.status_code == 200
    assert verified.json() == claims


async def test_verify_names_why_a_link_fails(client: httpx.AsyncClient) -> None:
    """A tampered token is `invalid` and one under an old stamp `revoked`, both 400."""
    issued = (
        await client.post(
            "/v1/links",
            json={"participant_id": "p-1", "course_id": "c", "stamp": "v1", "ttl": "1h"},
            headers=AUTH,
        )
    ).json()
    revoked = await client.post(
        "/v1/links/verify", json={"url": issued["url"], "stamp": "v2"}, headers=AUTH
    )
    assert (revoked.status_code, revoked.json()["error"]) == (400, "revoked")
    tampered = await client.post(
        "/v1/links/verify", json={"token": issued["token"][:-3] + "xyz"}, headers=AUTH
    )
    assert (tampered.status_code, tampered.json()["error"]) == (400, "invalid")
    neither = await client.post("/v1/links/verify", json={}, headers=AUTH)
    assert (neither.status_code, neither.json()["field"]) == (400, "token")


async def test_one_invitation_reaches_the_smtp_server(
    client: httpx.AsyncClient, smtp_server: RecordingSMTPServer
) -> None:
    """POST /v1/messages sends one invitation now: accepted, with the server's reply and
    the Message-ID the server received."""
    response = await client.post(
        "/v1/messages",
        json={"template": "invitation", "participant": person(1) | {"locale": "nb"}},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    sent = response.json()
    assert sent["status"] == "accepted"
    assert sent["reply"].startswith("250")
    assert [m.recipients for m in smtp_server.messages] == [("user1@school.example",)]
    assert sent["message_id"].encode() in smtp_server.messages[0].data


async def test_a_run_of_twelve_sent_through_the_api_shows_sent_12(
    client: httpx.AsyncClient, smtp_server: RecordingSMTPServer
) -> None:
    """POST /v1/runs enqueues 12 participants (202 {run_id}); the serving process sends
    them, and GET /v1/runs/{id} shows sent 12, as the server saw them."""
    participants = [person(i, domain=f"d{i % 3}.example") for i in range(12)]
    response = await client.post(
        "/v1/runs", json={"run_id": "spring", "participants": participants}, headers=AUTH
    )
    assert response.status_code == 202, response.text
    assert response.json()["run_id"] == "spring"
    status = await run_status(client, "spring", sent=12)
    assert status["counts"]["sent"] == 12
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == sorted(
        p["email"] for p in participants
    )
    listed = (await client.get("/v1/runs", headers=AUTH)).json()
    assert [run["run_id"] for run in listed["runs"]] == ["spring"]


async def test_run_status_is_sender_status_json(
    client: httpx.AsyncClient, smtp_server: RecordingSMTPServer
) -> None:
    """GET /v1/runs/{id} is `sender status ID --json`'s object, less the server's home."""
    await client.post("/v1/runs", json={"run_id": "r", "participants": [person(1)]}, headers=AUTH)
    api = await run_status(client, "r", sent=1)
    result = await asyncio.to_thread(cli_with(**env_for(smtp_server)), "status", "r", "--json")
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output)
    assert set(cli) - set(api) == {"home"}
    for key in ("run_id", "state", "counts", "total", "options", "skipped", "domains"):
        assert api[key] == cli[key], key


async def test_a_csv_upload_enqueues_a_run_and_keeps_bad_rows_as_skipped(
    client: httpx.AsyncClient,
) -> None:
    """text/csv with `sender run`'s columns is a run too; a row with a bad address is
    skipped with its reason, and a file without the columns is refused naming one."""
    rows = "email,name,participant_id,course_id\na@x.example,A,p-1,c\nnot-an-address,B,p-2,c\n"
    response = await client.post(
        "/v1/runs?run_id=upload",
        content=rows.encode(),
        headers=AUTH | {"Content-Type": "text/csv"},
    )
    assert response.status_code == 202, response.text
    status = await run_status(client, "upload", sent=1)
    assert status["counts"]["skipped"] == 1
    assert "not-an-address" in status["skipped"][0]["reason"]
    refused = await client.post(
        "/v1/runs",
        content=b"email,name\na@x.example,A\n",
        headers=AUTH | {"Content-Type": "text/csv"},
    )
    assert (refused.status_code, refused.json()["field"]) == (400, "participant_id")


async def test_no_key_or_a_wrong_key_is_refused_and_only_the_openapi_document_is_public(
    client: httpx.AsyncClient,
) -> None:
    """Every endpoint answers 401 without a key or with a wrong one; /openapi.json
    answers anyone, and names every endpoint; no docs page is served."""
    calls = [
        ("POST", "/v1/links"),
        ("POST", "/v1/links/verify"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/runs"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/x"),
        ("GET", "/v1/suppressions"),
        ("POST", "/v1/suppressions"),
        ("DELETE", "/v1/suppressions/a@x.example"),
        ("GET", "/v1/bounces/report"),
    ]
    for headers in ({}, {"Authorization": "Bearer " + KEY[:-1] + "z"}, {"Authorization": KEY}):
        for method, path in calls:
            response = await client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["error"] == "unauthorized"
    document = await client.get("/openapi.json")
    assert document.status_code == 200
    assert {path for _method, path in calls} - {
        "/v1/runs/x",
        "/v1/suppressions/a@x.example",
    } <= set(document.json()["paths"])
    assert (await client.get("/docs")).status_code == 404


async def test_a_key_without_the_scope_is_forbidden(client: httpx.AsyncClient) -> None:
    """A links-only key issues links, and gets 403 for sends, runs and the suppression list."""
    links_only = {"Authorization": f"Bearer {LINKS_ONLY}"}
    for method, path in (
        ("POST", "/v1/messages"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/suppressions"),
    ):
        response = await client.request(method, path, headers=links_only, json={})
        assert (response.status_code, response.json()["error"]) == (403, "forbidden")


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/v1/links", b"{not json", 400, "body"),
        ("/v1/links", b'{"course_id": "c"}', 422, "participant_id"),
        ("/v1/links", b'{"participant_id": "p", "course_id": "c", "ttl": "soon"}', 400, "ttl"),
        (
            "/v1/links",
            b'{"participant_id": "p", "course_id": "c", "next": "https://evil.example/x"}',
            400,
            "next",
        ),
        (
            "/v1/links",
            b'{"participant_id": "p", "course_id": "c", "next": "//evil.example/x"}',
            400,
            "next",
        ),
        (
            "/v1/messages",
            b'{"participant": {"email": "kari@", "name": "K", "participant_id": "p",'
            b' "course_id": "c"}}',
            400,
            "participant.email",
        ),
        ("/v1/messages", b'{"participant": {"email": "k@x.example"}}', 422, "participant.name"),
        (
            "/v1/messages",
            b'{"template": "nope", "participant": {"email": "k@x.example", "name": "K",'
            b' "participant_id": "p", "course_id": "c"}}',
            422,
            "template",
        ),
        ("/v1/runs", b'{"participants": "everyone"}', 422, "participants"),
        ("/v1/runs", b'{"participants": [], "run_id": "  "}', 400, "run_id"),
        (
            "/v1/runs",
            b'{"participants": [{"email": "x", "name": "X", "participant_id": "p",'
            b' "course_id": "c"}]}',
            400,
            "participants.0.email",
        ),
        ("/v1/runs", b"[]", 422, "body"),
        ("/v1/suppressions", b'{"address": "nobody"}', 400, "address"),
    ],
)
async def test_a_bad_request_is_a_4xx_naming_the_field(
    client: httpx.AsyncClient, path: str, body: bytes, status: int, field: str
) -> None:
    """Malformed JSON, a missing field, a bad address, an off-site `next`, an unknown
    template: 4xx with a JSON body naming the field, never a 500."""
    response = await client.post(
        path, content=body, headers=AUTH | {"Content-Type": "application/json"}
    )
    assert (response.status_code, response.json().get("field")) == (status, field), response.text


async def test_a_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    """A JSON body over 1 MiB is refused with 413 before any route reads it."""
    response = await client.post(
        "/v1/links",
        content=b" " * ((1 << 20) + 1),
        headers=AUTH | {"Content-Type": "application/json"},
    )
    assert (response.status_code, response.json()["error"]) == (413, "too_large")


async def test_suppressions_are_listed_added_honoured_and_removed_with_a_reason(
    client: httpx.AsyncClient, smtp_server: RecordingSMTPServer
) -> None:
    """POST suppresses an address, GET lists it, a send to it is `suppressed` and reaches
    no server; DELETE needs a reason, then the address is off the list."""
    added = await client.post(
        "/v1/suppressions", json={"address": "user1@school.example", "reason": "left"}, headers=AUTH
    )
    assert (added.status_code, added.json()["added"]) == (201, True)
    listed = (await client.get("/v1/suppressions", headers=AUTH)).json()["suppressions"]
    assert [(e["address"], e["kind"], e["reason"]) for e in listed] == [
        ("user1@school.example", "manual", "left")
    ]
    sent = await client.post("/v1/messages", json={"participant": person(1)}, headers=AUTH)
    assert sent.json()["status"] == "suppressed"
    assert not smtp_server.messages
    no_reason = await client.delete("/v1/suppressions/user1@school.example", headers=AUTH)
    assert (no_reason.status_code, no_reason.json()["field"]) == (422, "reason")
    removed = await client.delete(
        "/v1/suppressions/user1@school.example", params={"reason": "new job"}, headers=AUTH
    )
    assert removed.status_code == 200
    assert (await client.get("/v1/suppressions", headers=AUTH)).json()["suppressions"] == []
    again = await client.delete(
        "/v1/suppressions/user1@school.example", params={"reason": "x"}, headers=AUTH
    )
    assert again.status_code == 404


async def test_bounce_report_is_json_with_a_get_link_per_participant(
    client: httpx.AsyncClient, config: CliConfig
) -> None:
    """GET /v1/bounces/report lists a bounced participant of a run with a fresh Get Link."""
    await client.post("/v1/runs", json={"run_id": "b", "participants": [person(3)]}, headers=AUTH)
    await run_status(client, "b", sent=1)
    store = open_store(config.store)
    try:
        await store.add_bounce(hard_bounce(time.time(), address="user3@school.example"))
    finally:
        await store.aclose()
    report = await client.get("/v1/bounces/report", params={"since": "1d"}, headers=AUTH)
    assert report.status_code == 200, report.text
    rows = report.json()["rows"]
    assert [(r["email"], r["participant_id"]) for r in rows] == [("user3@school.example", "p-3")]
    assert rows[0]["get_link"].startswith("https://learning.test/login?token=")
    bad = await client.get("/v1/bounces/report", params={"since": "ages"}, headers=AUTH)
    assert (bad.status_code, bad.json()["field"]) == (400, "since")


async def test_the_app_works_mounted_inside_an_lms_app(
    config: CliConfig, smtp_server: RecordingSMTPServer
) -> None:
    """Mounted under /sender in another ASGI app (no lifespan reaches it), it issues links
    and sends a message, its outbox opened on first use."""
    api = app(config, work=False)
    lms = Starlette(routes=[Mount("/sender", app=api)])
    transport = httpx.ASGITransport(app=lms)
    async with httpx.AsyncClient(transport=transport, base_url="http://lms.test") as http:
        issued = await http.post(
            "/sender/v1/links", json={"participant_id": "p", "course_id": "c"}, headers=AUTH
        )
        assert issued.status_code == 200, issued.text
        assert (await http.post("/sender/v1/links", json={})).status_code == 401
        sent = await http.post("/sender/v1/messages", json={"participant": person(2)}, headers=AUTH)
        assert sent.json()["status"] == "accepted"
        assert (await http.get("/sender/openapi.json")).status_code == 200
    async with api.router.lifespan_context(api):  # what closes the outbox it opened
        pass
    assert [m.recipients for m in smtp_server.messages] == [("user2@school.example",)]


def test_serve_needs_an_api_key(smtp_server: RecordingSMTPServer) -> None:
    """`sender serve` without SENDER_API_KEYS or api_keys exits 2 and says what to set."""
    result = cli_with(**IDENTITY)("serve", "--listen", "127.0.0.1:0")
    assert result.exit_code == 2
    assert "SENDER_API_KEYS" in result.output


@pytest.mark.slow
async def test_sender_serve_runs_until_sigterm(
    workdir: Path, smtp_server: RecordingSMTPServer
) -> None:
    """`sender serve --listen 127.0.0.1:0` says where it listens, answers there, and
    stops on SIGTERM."""
    process = await spawn_sender(
        workdir, "serve", "--listen", "127.0.0.1:0", env=env_for(smtp_server)
    )
    assert process.stderr is not None
    try:
        line = ""
        for _ in range(5):  # after the one-time warning about a generated key
            line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
            if "serving" in line or not line:
                break
        assert "serving the HTTP API on http://127.0.0.1:" in line, line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            issued = await http.post(
                "/v1/links", json={"participant_id": "p", "course_id": "c"}, headers=AUTH
            )
            assert issued.status_code == 200
            assert (await http.get("/v1/runs")).status_code == 401
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert KEY not in (await process.stderr.read()).decode()


async def test_the_pages_stylesheet_is_served_by_sender_itself(client: httpx.AsyncClient) -> None:
    """/static/sender.css needs no key and comes from sender, so pages use no CDN."""
    response = await client.get("/static/sender.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert "max-width" in response.text


def test_page_templates_escape_every_value(tmp_path: Path) -> None:
    """A value with markup is shown as text in sender's own pages, never run as HTML."""
    (tmp_path / "p.html").write_text("<p>{{ name }}</p>", encoding="utf-8")
    rendered = PageTemplates(tmp_path).render("p.html", name="<script>x</script>")
    assert rendered == "<p>&lt;script&gt;x&lt;/script&gt;</p>"
