"""The admin pages in a real headless Chromium, over a real `sender serve` on loopback.

Before the browser comes in, a run of three is sent to a loopback SMTP server through the
API, and a real DSN for one of them goes through the bounce intake. Then a person logs in
with a key and opens every page; any console error, uncaught script error, failed request
or error status fails the test.

``SENDER_SCREENSHOTS=docs pytest tests/test_admin_browser.py`` also saves a screenshot of
each page there (the README shows them).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from sender.client import Sender
from sender.config import CliConfig, load_config
from sender.feedback.suppression import ingest_bounce
from sender.service import app
from sender.service.serve import Listener
from sender.store import open_store
from sender.testing import RecordingSMTPServer
from tests.dns_server import DnsServer
from tests.helpers import IDENTITY, dsn, smtp_url

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

KEY = "admin-key-" + "a" * 24
TEMPLATES = ("invitation", "get_link", "reminder", "invite", "invite_update", "invite_cancel")
LOCALES = ("en", "nb", "sv", "ja")
BOUNCED = "user2@school.example"
ZONE = """
amazonses.com.          TXT "v=spf1 ip4:199.255.192.0/22 -all"
learning.test.          TXT "v=spf1 include:amazonses.com ~all"
_dmarc.learning.test.   TXT "v=DMARC1; p=none"
"""
SHOTS = os.environ.get("SENDER_SCREENSHOTS")


@dataclass(frozen=True, slots=True)
class Site:
    url: str
    config: CliConfig
    run_id: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    """`sender serve` with one finished run of three and one real bounce for user2."""
    home = tmp_path_factory.mktemp("admin-browser")
    async with RecordingSMTPServer() as smtp, DnsServer(ZONE) as dns:
        (home / "sender.toml").write_text(
            f'rate = 0\ndomain_rate = 0\ndns_server = "{dns.address}"\n'
            'public_url = "https://mail.learning.test"\n',
            encoding="utf-8",
        )
        env = {
            "SENDER_API_KEYS": KEY,
            "SENDER_SECRET_KEYS": "link-signing-key-" + "s" * 20,
            "SENDER_SMTP_URL": smtp_url(smtp),
            **IDENTITY,
        }
        config = load_config(
            config_file=home / "sender.toml", environ=env, overrides={"home": str(home)}
        )
        async with (
            Listener(app(config, poll=0.05), host="127.0.0.1", port=0) as listening,
            httpx.AsyncClient(base_url=listening.url, timeout=30) as http,
        ):
            people = [
                {
                    "email": f"user{i}@school.example",
                    "name": f"User {i}",
                    "participant_id": f"p-{i}",
                    "course_id": "PY101",
                    "locale": locale,
                }
                for i, locale in ((1, "en"), (2, "nb"), (3, "ja"))
            ]
            auth = {"Authorization": f"Bearer {KEY}"}
            made = await http.post(
                "/v1/runs", json={"run_id": "spring", "participants": people}, headers=auth
            )
            assert made.status_code == 202, made.text
            for _ in range(400):
                status = (await http.get("/v1/runs/spring", headers=auth)).json()
                if status["state"] == "done":
                    break
                await asyncio.sleep(0.05)
            assert status["counts"]["sent"] == 3, status
            store = open_store(config.store)
            try:
                outcomes = await ingest_bounce(
                    store,
                    dsn(BOUNCED),
                    return_paths=None,
                    policy=config.bounces,
                    now=time.time(),
                )
            finally:
                await store.aclose()
            assert [o.record.address for o in outcomes] == [BOUNCED]
            yield Site(listening.url, config, "spring")


class Watched:
    """A page whose console errors, script errors, failed requests and error statuses
    are collected."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))
        page.on(
            "response",
            lambda r: self.problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None,
        )

    def clean(self) -> None:
        assert self.problems == []


async def logged_in(context: Any, site: Site, start: str) -> Watched:
    """A new page of ``context`` that opened ``start`` and logged in through the form with
    the admin key, landing on the preview."""
    watched = Watched(await context.new_page())
    await watched.page.goto(f"{site.url}{start}")
    await watched.page.fill("#key", KEY)
    await watched.page.click("button[type=submit]")
    await watched.page.wait_for_url(f"{site.url}/admin/preview")
    return watched


@pytest_asyncio.fixture(loop_scope="session")
async def page(chromium: Any, site: Site) -> AsyncIterator[Watched]:
    """A fresh browser context, logged in through the form with the admin key."""
    context = await chromium.new_context(viewport={"width": 1100, "height": 900})
    try:
        yield await logged_in(context, site, "/admin/")
    finally:
        await context.close()


async def shot(page: Any, name: str) -> None:
    """With SENDER_SCREENSHOTS set, the whole page as a PNG there (the viewport grown to
    the page's height: a full-page capture leaves the sandboxed frame blank)."""
    if not SHOTS:
        return
    size = page.viewport_size
    height = await page.evaluate("document.documentElement.scrollHeight")
    await page.set_viewport_size({"width": size["width"], "height": min(height, 4000)})
    await page.screenshot(path=str(Path(SHOTS) / f"admin-{name}.png"))
    await page.set_viewport_size(size)


async def test_preview_lists_and_renders_every_template_in_every_locale(
    page: Watched, site: Site
) -> None:
    """The listing names invitation, get_link and the calendar templates in en, nb, sv and
    ja; each renders with a subject, a passing single-link verdict and its HTML framed."""
    listed = await page.page.eval_on_selector_all(
        "#templates a.locale",
        "links => links.map(a => [a.closest('tr').dataset.template, a.dataset.locale])",
    )
    for template in TEMPLATES:
        for locale in LOCALES:
            assert [template, locale] in listed
    assert await page.page.locator("#templates a.locale.bad").count() == 0
    for template in TEMPLATES:
        for locale in LOCALES:
            await page.page.goto(f"{site.url}/admin/preview?template={template}&locale={locale}")
            shown = page.page.locator("#shown")
            assert await shown.get_attribute("data-locale") == locale
            assert (await page.page.inner_text("#subject")).strip()
            assert "passes" in await page.page.inner_text("#verdict")
            frame = page.page.frame_locator("iframe")
            assert "learning.test/login?token=" in await frame.locator("body").inner_html()
    page.clean()


async def test_calendar_preview_shows_the_ics_in_the_events_zone(page: Watched, site: Site) -> None:
    """An invite previewed for 10:00 in Asia/Tokyo carries DTSTART;TZID=Asia/Tokyo at 10:00
    and says it is 01:00 UTC."""
    await page.page.goto(
        f"{site.url}/admin/preview?template=invite&locale=ja&event_start=2027-03-27T10:00"
        "&event_end=2027-03-27T11:00&event_zone=Asia/Tokyo"
    )
    ics = await page.page.inner_text("#ics")
    assert "DTSTART;TZID=Asia/Tokyo:20270327T100000" in ics.replace("\r", "")
    assert "2027-03-27 01:00 UTC" in await page.page.inner_text("#event-times")
    await shot(page.page, "preview")
    page.clean()


async def test_runs_page_shows_the_runs_counts(page: Watched, site: Site) -> None:
    """The runs list names the run with 3 sent; its page counts 3 sent and the domain's
    progress against its limit."""
    await page.page.click("nav >> text=Runs")
    row = page.page.locator("#runs tr", has_text=site.run_id)
    assert "3" in await row.inner_text()
    await shot(page.page, "runs")
    await row.locator("a").click()
    assert await page.page.inner_text("#counts tr[data-state=sent] td") == "3"
    assert "school.example" in await page.page.inner_text("#domains")
    assert (await page.page.inner_text("#state")).startswith("done")
    await shot(page.page, "run")
    page.clean()


async def test_cleanup_lists_the_bounce_and_its_get_link_verifies(
    page: Watched, site: Site
) -> None:
    """The bounced address is listed with its participant and what to do; Copy Get Link
    shows a link the link signer accepts for that participant, and Copy puts it on the
    clipboard."""
    await page.page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await page.page.click("nav >> text=Clean-up")
    row = page.page.locator(f"#cleanup tr[data-email='{BOUNCED}']")
    text = await row.inner_text()
    assert "p-2" in text
    assert "change address" in text
    await row.locator("button", has_text="Copy Get Link").click()
    link = await page.page.input_value("#issued-link")
    claims = Sender(site.config.sender).verify_link(link)
    assert (claims.participant_id, claims.course_id) == ("p-2", "PY101")
    await page.page.click("button.copy")
    assert await page.page.evaluate("navigator.clipboard.readText()") == link
    await shot(page.page, "cleanup")
    page.clean()


async def test_health_shows_gauges_and_the_doctors_findings(page: Watched, site: Site) -> None:
    """Health shows the bounce budget (1 of 80) as a meter, the complaint gauge, the
    doctor's SPF and DMARC findings for learning.test from the test DNS server, and the
    Gmail bulk-sender estimate."""
    await page.page.click("nav >> text=Health")
    assert await page.page.get_attribute("#budget", "value") == "1"
    assert await page.page.get_attribute("#budget", "max") == "80"
    assert await page.page.locator("#complaints").count() == 1
    assert "ok" in await page.page.inner_text("#doctor tr[data-check=spf]")
    assert "none" in (await page.page.inner_text("#doctor tr[data-check=dmarc]")).lower()
    gmail = await page.page.inner_text("#doctor tr[data-check=gmail-bulk]")
    assert "not a bulk sender" in gmail
    await shot(page.page, "health")
    page.clean()


async def test_pages_fit_a_phone(chromium: Any, site: Site) -> None:
    """On a 390 px wide phone, no page scrolls sideways (wide tables scroll inside)."""
    context = await chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        watched = await logged_in(context, site, "/admin/login")
        for path in ("preview", "runs", f"runs/{site.run_id}", "cleanup", "health"):
            await watched.page.goto(f"{site.url}/admin/{path}")
            wide = await watched.page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth"
            )
            assert wide <= 0, path
            if path == "cleanup":
                await shot(watched.page, "cleanup-phone")
        watched.clean()
    finally:
        await context.close()
