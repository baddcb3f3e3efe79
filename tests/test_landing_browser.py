"""The login landing page in a real headless Chromium, over `sender serve` on loopback.

What httpx cannot show: what a browser itself sends from a page with
``Referrer-Policy: no-referrer`` (``Origin: null`` with ``Sec-Fetch-Site``), and that the
page's Content-Security-Policy lets the Continue button's 303 reach the LMS, with no
console error on the way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from sender.config import load_config
from sender.service import app
from sender.service.serve import Listener
from tests.helpers import IDENTITY, free_port

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

KEY = "landing-browser-key-" + "k" * 20
AUTH = {"Authorization": f"Bearer {KEY}"}
SCANNER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Microsoft Defender SafeLinks"


@dataclass(frozen=True, slots=True)
class Site:
    sender: str  # sender serve's URL
    lms: str  # the LMS's login URL, where the 303 goes
    http: httpx.AsyncClient


async def lms_login(request: Request) -> HTMLResponse:
    """The LMS's side: a page that says it got an assertion (it checks it in the test)."""
    got = "assertion" in request.query_params
    return HTMLResponse(
        f'<!doctype html><title>LMS</title><link rel=icon href="data:,"><p id=got>{got}</p>'
    )


@pytest_asyncio.fixture(loop_scope="session")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    """`sender serve` whose base_url is its own loopback address, and a loopback LMS."""
    home = tmp_path_factory.mktemp("landing-browser")
    lms_app = Starlette(routes=[Route("/sso", lms_login)])
    async with Listener(lms_app, host="127.0.0.1", port=0) as lms:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        (home / "sender.toml").write_text(
            f'lms_login_url = "{lms.url}/sso"\nbase_url = "{base}/login"\n', encoding="utf-8"
        )
        environ = {
            **IDENTITY,
            "SENDER_API_KEYS": KEY,
            "SENDER_SECRET_KEYS": "landing-browser-signing-" + "s" * 20,
        }
        environ.pop("SENDER_BASE_URL", None)
        config = load_config(
            config_file=home / "sender.toml", environ=environ, overrides={"home": str(home)}
        )
        async with (
            Listener(app(config, work=False), host="127.0.0.1", port=port) as listening,
            httpx.AsyncClient(base_url=listening.url, timeout=30) as http,
        ):
            yield Site(listening.url, f"{lms.url}/sso", http)


async def issue(site: Site, purpose: str = "login") -> str:
    response = await site.http.post(
        "/v1/links",
        json={"participant_id": "p-1", "course_id": "PY101", "purpose": purpose},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["url"]
    assert url.startswith(f"{site.sender}/login?token=")
    return url


def watch(page: Any) -> list[str]:
    """Console errors (a CSP violation is one), script errors and failed requests."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    page.on(
        "response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    return problems


async def test_a_scanner_opens_the_link_then_the_participant_continues_to_the_lms(
    chromium: Any, site: Site
) -> None:
    """Five scanner visits in a browser that runs scripts redeem nothing; the participant's
    Continue lands on the LMS with an assertion that verifies once; the link is then used."""
    url = await issue(site)
    scanner = await chromium.new_context(user_agent=SCANNER)
    try:
        page = await scanner.new_page()
        for _ in range(5):
            response = await page.goto(url)
            assert response is not None
            assert response.status == 200
    finally:
        await scanner.close()

    context = await chromium.new_context(locale="nb-NO")
    try:
        page = await context.new_page()
        problems = watch(page)
        await page.goto(url)
        assert await page.evaluate("document.documentElement.lang") == "nb"
        assert "PY101" in await page.inner_text("main")
        await page.click("form[method=post] button")
        await page.wait_for_url(f"{site.lms}?*")
        assert await page.inner_text("#got") == "True"
        (assertion,) = parse_qs(urlsplit(page.url).query)["assertion"]
        assert problems == []
        verified = await site.http.post(
            "/v1/assertions/verify", json={"assertion": assertion}, headers=AUTH
        )
        assert verified.status_code == 200, verified.text
        assert verified.json()["participant_id"] == "p-1"
        again = await site.http.post(
            "/v1/assertions/verify", json={"assertion": assertion}, headers=AUTH
        )
        assert again.status_code == 400

        response = await page.goto(url)
        assert response is not None
        assert response.status == 410
        assert await page.locator("form").count() == 0
    finally:
        await context.close()


async def test_a_page_on_another_site_cannot_post_the_button_for_the_participant(
    chromium: Any, site: Site
) -> None:
    """A form on another origin that posts a stolen token is refused by the browser's own
    headers, and the token stays unredeemed for its owner."""
    url = await issue(site)
    token = parse_qs(urlsplit(url).query)["token"][0]
    evil = Starlette(
        routes=[
            Route(
                "/",
                lambda _r: HTMLResponse(
                    f'<form method="post" action="{site.sender}/login">'
                    f'<input type="hidden" name="token" value="{token}">'
                    "<button>win</button></form>"
                ),
            )
        ]
    )
    async with Listener(evil, host="127.0.0.1", port=0) as attacker:
        context = await chromium.new_context()
        try:
            page = await context.new_page()
            await page.goto(attacker.url.replace("127.0.0.1", "localhost"))
            async with page.expect_response(f"{site.sender}/login") as answer:
                await page.click("button")
            assert (await answer.value).status == 403
        finally:
            await context.close()
    still = await site.http.get(url.removeprefix(site.sender))
    assert still.status_code == 200
    assert 'method="post"' in still.text
