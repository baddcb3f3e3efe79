"""The admin pages over HTTP (httpx against a real uvicorn on loopback): logging in, the
session cookie, CSRF refusals, resume and stop, the clean-up CSV, `sender preview`.

What a browser shows is checked in tests/test_admin_browser.py.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sender.bulk.runner import BulkRunner, stop_run
from sender.client import Sender
from sender.config import CliConfig, load_config
from sender.configured import open_sending, run_settings
from sender.models import Participant
from sender.service import app
from sender.service.admin import COOKIE
from sender.store import BounceRecord, RunState, open_store
from sender.testing import RecordingSMTPServer
from tests.helpers import IDENTITY, hard_bounce, served, smtp_url, spawn_sender

pytestmark = pytest.mark.usefixtures("workdir")

KEY = "admin-key-" + "a" * 24
LINKS_ONLY = "links-key-" + "b" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}


def env_for(
    server: RecordingSMTPServer, *, keys: str = f"{KEY},{LINKS_ONLY}:links"
) -> dict[str, str]:
    return {
        "SENDER_API_KEYS": keys,
        "SENDER_SECRET_KEYS": "link-signing-key-" + "s" * 20,
        "SENDER_SMTP_URL": smtp_url(server),
        **IDENTITY,
    }


def config_for(workdir: Path, server: RecordingSMTPServer, toml: str = "", **env: str) -> CliConfig:
    (workdir / "sender.toml").write_text("rate = 0\ndomain_rate = 0\n" + toml, encoding="utf-8")
    return load_config(config_file=workdir / "sender.toml", environ=env_for(server, **env))


@pytest.fixture
def config(workdir: Path, smtp_server: RecordingSMTPServer) -> CliConfig:
    """Settings with an all-scopes key and a links-only key; a budget of one hard bounce."""
    return config_for(workdir, smtp_server, "bounce_budget = 1\n")


@pytest.fixture
async def client(config: CliConfig) -> AsyncIterator[httpx.AsyncClient]:
    """httpx against the app under uvicorn on loopback; runs are not sent (--no-work)."""
    async with served(app(config, work=False)) as http:
        yield http


async def login(client: httpx.AsyncClient, key: str = KEY) -> str:
    """Log in through the form; returns the CSRF token the pages' forms carry."""
    response = await client.post("/admin/login", data={"key": key})
    assert response.status_code == 303, response.text
    page = await client.get("/admin/runs")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def enqueue(client: httpx.AsyncClient, run_id: str, *people: int) -> None:
    response = await client.post(
        "/v1/runs",
        json={
            "run_id": run_id,
            "participants": [
                {
                    "email": f"user{i}@school.example",
                    "name": f"User {i}",
                    "participant_id": f"p-{i}",
                    "course_id": "PY101",
                }
                for i in people
            ],
        },
        headers=AUTH,
    )
    assert response.status_code == 202, response.text


async def test_a_wrong_key_gets_the_form_again_with_401_and_no_cookie(
    client: httpx.AsyncClient,
) -> None:
    """A key the server does not know is 401 with the login form and the error, no cookie;
    the pages still send the browser to the login form."""
    response = await client.post("/admin/login", data={"key": "not-a-key-" + "x" * 20})
    assert response.status_code == 401
    assert "not one of this server&#39;s API keys" in response.text
    assert 'name="key"' in response.text
    assert "set-cookie" not in response.headers
    later = await client.get("/admin/runs")
    assert (later.status_code, later.headers["location"]) == (303, "/admin/login")


async def test_a_key_without_the_admin_scope_is_refused(client: httpx.AsyncClient) -> None:
    """A links-only key logs nobody in: 403, no cookie."""
    response = await client.post("/admin/login", data={"key": LINKS_ONLY})
    assert response.status_code == 403
    assert "scope admin" in response.text
    assert "set-cookie" not in response.headers


async def test_the_session_cookie_is_httponly_strict_and_holds_no_key(
    client: httpx.AsyncClient,
) -> None:
    """The cookie is HttpOnly, SameSite=Strict, Path=/admin, lasts 8 hours, is Secure only
    over https (a proxy's X-Forwarded-Proto from loopback), and holds neither the key nor
    its base64."""
    response = await client.post("/admin/login", data={"key": KEY})
    assert (response.status_code, response.headers["location"]) == (303, "/admin/preview")
    cookie = response.headers["set-cookie"]
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert {"httponly", "samesite=strict", "path=/admin", "max-age=28800"} <= set(flags)
    assert "secure" not in flags
    value = cookie.split(";")[0].partition("=")[2]
    assert KEY not in value
    assert base64.urlsafe_b64encode(KEY.encode()).decode().rstrip("=")[:20] not in value
    over_https = await client.post(
        "/admin/login", data={"key": KEY}, headers={"X-Forwarded-Proto": "https"}
    )
    assert "secure" in [p.strip().lower() for p in over_https.headers["set-cookie"].split(";")]


async def test_a_tampered_session_or_one_from_a_removed_key_is_logged_out(
    config: CliConfig, workdir: Path, smtp_server: RecordingSMTPServer, client: httpx.AsyncClient
) -> None:
    """An edited cookie is no session; nor is a good one once its key left the settings."""
    await login(client)
    good = client.cookies[COOKIE]
    client.cookies.set(
        COOKIE, good[:-2] + ("AA" if not good.endswith("AA") else "BB"), path="/admin"
    )
    assert (await client.get("/admin/runs")).status_code == 303
    other = config_for(workdir, smtp_server, keys="other-key-" + "c" * 24)
    async with served(app(other, work=False)) as http:
        http.cookies.set(COOKIE, good, path="/admin")
        assert (await http.get("/admin/runs")).status_code == 303


async def test_posts_without_the_right_csrf_token_or_from_another_site_are_refused(
    client: httpx.AsyncClient,
) -> None:
    """Stop without a CSRF token, with a wrong one, or sent from another site is 403 and
    leaves the run active; with the session's token it pauses the run, saying who."""
    await enqueue(client, "autumn", 1, 2)
    token = await login(client)
    stop = "/admin/runs/autumn/stop"
    assert (await client.post(stop, data={})).status_code == 403
    assert (await client.post(stop, data={"csrf": token[:-1] + "x"})).status_code == 403
    cross = await client.post(stop, data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    elsewhere = await client.post(
        stop, data={"csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403
    status = (await client.get("/v1/runs/autumn", headers=AUTH)).json()
    assert status["state"] != "paused"
    stopped = await client.post(stop, data={"csrf": token})
    assert stopped.status_code == 200, stopped.text
    status = (await client.get("/v1/runs/autumn", headers=AUTH)).json()
    assert status["state"] == "paused"
    assert status["paused_reason"] == "stopped from the admin pages (key 1)"
    logged_out = httpx.AsyncClient(base_url=str(client.base_url))
    async with logged_out:
        assert (await logged_out.post(stop, data={"csrf": token})).status_code == 403


async def test_resume_reactivates_a_run_but_not_while_the_budget_is_spent(
    client: httpx.AsyncClient, config: CliConfig
) -> None:
    """Resume makes a stopped run active again; once the bounce budget (1) is spent it is
    refused with 409 and the reason, and the run stays paused."""
    await enqueue(client, "winter", 1, 2)
    token = await login(client)
    assert (await client.post("/admin/runs/winter/stop", data={"csrf": token})).status_code == 200
    resumed = await client.post("/admin/runs/winter/resume", data={"csrf": token})
    assert resumed.status_code == 200
    assert "resumed" in resumed.text
    assert (await client.get("/v1/runs/winter", headers=AUTH)).json()["state"] != "paused"
    assert (await client.post("/admin/runs/winter/stop", data={"csrf": token})).status_code == 200
    store = open_store(config.store)
    try:
        await store.add_bounce(hard_bounce(time.time(), address="user1@school.example"))
    finally:
        await store.aclose()
    refused = await client.post("/admin/runs/winter/resume", data={"csrf": token})
    assert refused.status_code == 409
    assert "bounce budget" in refused.text
    assert (await client.get("/v1/runs/winter", headers=AUTH)).json()["state"] == "paused"


async def test_pages_carry_strict_headers_and_the_mail_frame_its_own(
    client: httpx.AsyncClient,
) -> None:
    """The preview page allows no inline script or style and frames only itself; the
    HTML part comes from its own route, sandboxed by CSP, scriptless, framable by sender."""
    await login(client)
    page = await client.get("/admin/preview", params={"template": "get_link", "locale": "sv"})
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "frame-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert re.search(r"<iframe src=\"/admin/preview/frame\?[^\"]+\" sandbox ", page.text)
    frame = await client.get(
        "/admin/preview/frame", params={"template": "get_link", "locale": "sv"}
    )
    assert frame.status_code == 200
    frame_csp = frame.headers["content-security-policy"]
    assert "sandbox" in frame_csp
    assert "script-src" not in frame_csp
    assert "default-src 'none'" in frame_csp
    assert "frame-ancestors 'self'" in frame_csp
    assert frame.headers["x-frame-options"] == "SAMEORIGIN"
    assert "https://learning.test/login?token=" in frame.text
    anonymous = httpx.AsyncClient(base_url=str(client.base_url))
    async with anonymous:
        assert (await anonymous.get("/admin/preview/frame")).status_code == 403


async def test_a_broken_single_link_rule_is_shown_not_raised(
    workdir: Path, smtp_server: RecordingSMTPServer
) -> None:
    """A user template linking to a second site is listed as failing lint and its preview
    names the foreign site, without headers (it would not be sent)."""
    folder = workdir / "mytemplates" / "promo" / "en"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hello {{ name }}", encoding="utf-8")
    (folder / "body.txt").write_text(
        "{{ link }}\nAlso see https://ads.example/x\n", encoding="utf-8"
    )
    config = config_for(workdir, smtp_server, f'templates = "{workdir / "mytemplates"}"\n')
    async with served(app(config, work=False)) as http:
        await login(http)
        page = await http.get("/admin/preview", params={"template": "promo", "locale": "en"})
        assert page.status_code == 200
        assert 'data-template="promo"' in page.text
        promo = page.text[page.text.index('data-template="promo"') :].split("</tr>")[0]
        assert 'class="locale bad" data-locale="en"' in promo
        assert "ads.example" in page.text
        assert "fails:" in page.text
        assert 'id="headers"' not in page.text


async def test_a_reminder_preview_carries_its_unsubscribe_link_or_names_public_url(
    workdir: Path, smtp_server: RecordingSMTPServer
) -> None:
    """The subscription template previews with the one-click URL on public_url's host and
    its List-Unsubscribe headers; without public_url it still shows, saying what is missing."""
    for extra, passes in (('public_url = "https://mail.learning.test"\n', True), ("", False)):
        config = config_for(workdir, smtp_server, extra)
        async with served(app(config, work=False)) as http:
            await login(http)
            page = await http.get("/admin/preview", params={"template": "reminder", "locale": "nb"})
        assert page.status_code == 200
        if passes:
            assert "https://mail.learning.test/u/" in page.text
            assert "List-Unsubscribe-Post" in page.text
            assert "fails:" not in page.text
        else:
            assert "fails:" in page.text
            assert "public_url" in page.text
            assert 'id="subject"' in page.text


async def test_cleanup_csv_has_the_bounce_with_a_working_get_link(
    client: httpx.AsyncClient, config: CliConfig
) -> None:
    """The CSV export lists the bounced participant with a Get Link the link signer
    accepts; a diagnostic that looks like a formula is written as text."""
    await enqueue(client, "spring", 3)
    store = open_store(config.store)
    try:
        await store.add_bounce(
            BounceRecord(
                fingerprint="csv-1",
                address="user3@school.example",
                kind="hard",
                status="5.1.1",
                diagnostic='=HYPERLINK("https://evil.example")',
                reason="user_unknown",
                at=time.time(),
            )
        )
    finally:
        await store.aclose()
    await login(client)
    page = await client.get("/admin/cleanup")
    assert "user3@school.example" in page.text
    assert "Copy Get Link" in page.text
    response = await client.get("/admin/cleanup.csv", params={"since": "1d"})
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["email"], r["participant_id"]) for r in rows] == [("user3@school.example", "p-3")]
    assert rows[0]["diagnostic"].startswith("'=")
    claims = Sender(config.sender).verify_link(rows[0]["get_link"])
    assert claims.participant_id == "p-3"


async def test_a_run_stopped_from_the_pages_stops_the_process_sending_it(
    config: CliConfig, smtp_server: RecordingSMTPServer
) -> None:
    """A run that `sender run` holds alone (BulkRunner.run) stops soon after it is paused
    elsewhere: it returns paused with the operator's reason and most rows unsent."""
    people = [
        Participant(f"user{i}@school.example", f"User {i}", f"p-{i}", "PY101") for i in range(40)
    ]
    slow = load_config(
        config_file=None,
        environ=env_for(smtp_server),
        overrides={"home": str(config.state_dir), "rate": 4.0},
    )
    async with open_sending(slow) as (store, sender, scheduler):
        runner = BulkRunner(
            sender,
            store,
            run_settings(slow, template="invitation", switch_transport=False),
            scheduler=scheduler,
        )
        task = asyncio.create_task(runner.run("held", people, source="test"))
        for _ in range(200):
            if len(smtp_server.messages) >= 2:
                break
            await asyncio.sleep(0.05)
        await stop_run(store, "held", reason="stopped by hand", now=time.time())
        report = await asyncio.wait_for(task, 30)
    assert report.run.state is RunState.PAUSED
    assert report.run.paused_reason == "stopped by hand"
    assert len(smtp_server.messages) < 40


async def test_sender_preview_prints_a_url_and_a_key_that_logs_in(
    workdir: Path, smtp_server: RecordingSMTPServer
) -> None:
    """`sender preview` serves on loopback, prints the Preview's URL and a key made for the
    process; that key logs in and the page lists the built-in templates."""
    env = env_for(smtp_server)
    del env["SENDER_API_KEYS"]
    process = await spawn_sender(workdir, "preview", env=env)
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/admin/preview", url), url
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        key = line.rsplit(": ", 1)[1].strip()
        base = url.removesuffix("/admin/preview")
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            await login(http, key)
            page = await http.get("/admin/preview")
            assert all(f'data-template="{t}"' in page.text for t in ("invitation", "get_link"))
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def test_sender_preview_listens_on_loopback_only(
    workdir: Path, smtp_server: RecordingSMTPServer
) -> None:
    """`sender preview --listen 0.0.0.0:0` is refused with one line naming --listen."""
    process = await spawn_sender(
        workdir, "preview", "--listen", "0.0.0.0:0", env=env_for(smtp_server)
    )
    _stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode != 0
    assert b"loopback only" in stderr
    assert b"Traceback" not in stderr


async def test_bad_preview_input_is_one_line_naming_the_field(client: httpx.AsyncClient) -> None:
    """An unknown time zone, a malformed start or a reserved variable gives the form back
    with one line naming the field, and no preview."""
    await login(client)
    for params, field in (
        ({"template": "invite", "event_zone": "Mars/Olympus"}, "timezone"),
        ({"template": "invite", "event_start": "tomorrow"}, "event_start"),
        ({"template": "invitation", "vars": "link=https://evil.example"}, "vars"),
        ({"template": "nope"}, "template"),
    ):
        page = await client.get("/admin/preview", params=params)
        assert page.status_code == 200
        alert = re.search(r'<p class="bad" role="alert">([^<]*)</p>', page.text)
        assert alert is not None, params
        assert alert.group(1).startswith(f"{field}: "), alert.group(1)
        assert 'id="shown"' not in page.text
