"""The landing page under `sender serve`: real uvicorn on loopback, real httpx, real outbox.

The issue's checks: five GETs and two HEADs with scanners' User-Agents redeem nothing; the
participant's POST redirects (303) to the LMS once with an assertion the LMS can verify,
and a second POST fails; a reusable purpose keeps working; a cross-origin POST is refused;
forged and replayed assertions are refused; the page headers are there and no cookie.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sender.client import Sender
from sender.config import CliConfig, load_config
from sender.errors import LinkInvalid, LinkUsed
from sender.service import app
from sender.store import open_store
from tests.helpers import IDENTITY, served

pytestmark = pytest.mark.usefixtures("workdir")

KEY = "landing-key-" + "k" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
ORIGIN = "https://learning.test"  # base_url's origin, as a browser behind the proxy sends it
LMS = "https://lms.learning.test/sso/sender?from=mail"
SCANNERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36 Microsoft Defender SafeLinks",
    "Mimecast URL Protect/1.0",
    "Proofpoint URL Defense (urldefense.com)",
    "Mozilla/5.0 (compatible; Barracuda Sentinel)",
    "python-requests/2.31 (Microsoft Office Protocol Discovery)",
)
HIDDEN = re.compile(r'<input type="hidden" name="token" value="([^"]+)">')


@pytest.fixture
def config(workdir: Path) -> CliConfig:
    """Settings with a links key, lms_login_url, and the capture server (no SMTP needed)."""
    (workdir / "sender.toml").write_text(
        f'lms_login_url = "{LMS}"\none_time_purposes = ["login"]\n', encoding="utf-8"
    )
    return load_config(
        config_file=workdir / "sender.toml",
        environ={
            "SENDER_API_KEYS": KEY,
            "SENDER_SECRET_KEYS": "landing-signing-key-" + "s" * 20,
            **IDENTITY,
        },
    )


@pytest.fixture
async def client(config: CliConfig) -> AsyncIterator[httpx.AsyncClient]:
    """httpx against `sender serve`'s app under a real uvicorn on a loopback port."""
    async with served(app(config, work=False)) as http:
        yield http


async def issue(client: httpx.AsyncClient, purpose: str = "login", **extra: str) -> str:
    """A link issued through POST /v1/links; its token."""
    response = await client.post(
        "/v1/links",
        json={"participant_id": "p-7", "course_id": "PY101", "purpose": purpose, **extra},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def post(client: httpx.AsyncClient, token: str, **headers: str) -> httpx.Response:
    """The Continue button's POST, as a browser on the landing page sends it."""
    return await client.post(
        "/login",
        content=f"token={token}",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": ORIGIN,
            **headers,
        },
    )


def assertion_of(response: httpx.Response) -> str:
    """The assertion in a 303 to the LMS (whose own query is kept)."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith("https://lms.learning.test/sso/sender?from=mail&assertion=")
    (value,) = parse_qs(urlsplit(location).query)["assertion"]
    return value


def assert_page_headers(response: httpx.Response) -> None:
    """The headers every landing answer carries, and no cookie."""
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-robots-tag"] == "noindex"
    assert "set-cookie" not in response.headers


async def test_scanners_get_and_head_without_redeeming_then_the_participant_posts_once(
    client: httpx.AsyncClient, config: CliConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Five scanner GETs and two HEADs change nothing; the POST redirects to the LMS with
    an assertion the API accepts once; a second POST fails; no log line holds either."""
    caplog.set_level(logging.DEBUG)
    token = await issue(client, next="/courses/1")
    for agent in SCANNERS:
        page = await client.get(f"/login?token={token}", headers={"User-Agent": agent})
        assert page.status_code == 200
        assert_page_headers(page)
        assert "PY101" in page.text
        assert page.text.count("<form") == 1
        assert 'method="post"' in page.text
        assert HIDDEN.search(page.text) is not None
        assert "<script" not in page.text
        assert "style=" not in page.text
    for agent in SCANNERS[:2]:
        head = await client.head(f"/login?token={token}", headers={"User-Agent": agent})
        assert head.status_code == 200
        assert_page_headers(head)
        assert head.content == b""
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "form-action 'self' https://lms.learning.test" in csp

    first = await post(client, token)
    assert_page_headers(first)
    assertion = assertion_of(first)
    second = await post(client, token)
    assert second.status_code == 410
    assert "already used" in second.text
    assert "<form" not in second.text

    verified = await client.post(
        "/v1/assertions/verify", json={"assertion": assertion}, headers=AUTH
    )
    assert verified.status_code == 200, verified.text
    claims = verified.json()
    assert (claims["participant_id"], claims["course_id"], claims["purpose"]) == (
        "p-7",
        "PY101",
        "login",
    )
    assert claims["next"] == "/courses/1"
    replayed = await client.post(
        "/v1/assertions/verify", json={"assertion": assertion}, headers=AUTH
    )
    assert (replayed.status_code, replayed.json()["error"]) == (400, "used")
    logged = [r for r in caplog.records if r.name.startswith(("sender", "uvicorn"))]
    assert logged  # the server did log (starting up, the outbox), just not these
    server_log = "\n".join(r.getMessage() for r in logged)
    assert token not in server_log
    assert assertion not in server_log


async def test_no_access_line_holds_a_token_even_when_logging_was_set_up_elsewhere(
    config: CliConfig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logging set up after the server started (an LMS's, Django's) that makes uvicorn's
    access logger propagate again still gets no line with a landing page's query string."""
    access = logging.getLogger("uvicorn.access")
    caplog.set_level(logging.DEBUG)
    async with served(app(config, work=False)) as http:
        monkeypatch.setattr(access, "propagate", True)  # as a later dictConfig can
        monkeypatch.setattr(access, "disabled", False)
        token = await issue(http)
        page = await http.get("/login", params={"token": token})
        assert page.status_code == 200
    logged = [r for r in caplog.records if r.name.startswith(("sender", "uvicorn"))]
    assert logged  # the server logged (starting up), the client's own lines left aside
    assert token not in "\n".join(r.getMessage() for r in logged)
    assert not [r for r in logged if r.name == "uvicorn.access"]


async def test_the_library_verifies_an_assertion_once(
    client: httpx.AsyncClient, config: CliConfig
) -> None:
    """Sender.verify_assertion over the same outbox accepts the assertion once, then
    refuses the replay; a forged one is invalid."""
    assertion = assertion_of(await post(client, await issue(client)))
    async with open_store(config.store) as store:
        sender = Sender(config.sender, store=store)
        claims = await sender.verify_assertion(assertion, purpose="login")
        assert (claims.participant_id, claims.course_id, claims.next) == ("p-7", "PY101", None)
        with pytest.raises(LinkUsed):
            await sender.verify_assertion(assertion)
        forged = assertion[:-4] + ("AAAA" if not assertion.endswith("AAAA") else "BBBB")
        with pytest.raises(LinkInvalid):
            await sender.verify_assertion(forged)
    forged_api = await client.post(
        "/v1/assertions/verify", json={"assertion": forged}, headers=AUTH
    )
    assert (forged_api.status_code, forged_api.json()["error"]) == (400, "invalid")


async def test_a_reusable_purpose_keeps_working(client: httpx.AsyncClient) -> None:
    """An invitation link is not one-time: each POST redirects with a fresh assertion."""
    token = await issue(client, "invitation")
    first = assertion_of(await post(client, token))
    second = assertion_of(await post(client, token))
    assert first != second
    assert (await client.get(f"/login?token={token}")).status_code == 200


async def test_a_cross_origin_post_is_refused_and_redeems_nothing(
    client: httpx.AsyncClient,
) -> None:
    """A POST from another origin, or with no origin at all, is 403 and leaves the link
    usable; Origin null with Sec-Fetch-Site same-origin (a no-referrer page) is accepted."""
    token = await issue(client)
    evil = await post(client, token, Origin="https://evil.example")
    assert evil.status_code == 403
    assert_page_headers(evil)
    assert "<form" not in evil.text
    cross = await post(client, token, Origin="null", **{"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    plain = await client.post(
        "/login",
        content=f"token={token}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert plain.status_code == 403
    assert (await client.get(f"/login?token={token}")).status_code == 200
    same = await post(client, token, Origin="null", **{"Sec-Fetch-Site": "same-origin"})
    assertion_of(same)


async def test_bad_links_explain_themselves_without_a_form(client: httpx.AsyncClient) -> None:
    """A damaged token is 400 'not valid', and the page has no form; the page speaks the
    browser's language."""
    token = await issue(client)
    broken = await client.get(f"/login?token={token[:-5]}xxxxx")
    assert broken.status_code == 400
    assert "not valid" in broken.text
    assert "<form" not in broken.text
    assert_page_headers(broken)
    missing = await client.get("/login")
    assert missing.status_code == 400
    norsk = await client.get(
        f"/login?token={token}", headers={"Accept-Language": "de;q=1, nn;q=0.8, en;q=0.5"}
    )
    assert '<html lang="nb">' in norsk.text
    assert "Fortsett" in norsk.text
    japanese = await client.get(f"/login?token={token}", headers={"Accept-Language": "ja-JP"})
    assert "続行" in japanese.text
    svenska = await post(client, token[:-5] + "xxxxx", **{"Accept-Language": "sv"})
    assert svenska.status_code == 400
    assert "inte giltig" in svenska.text


async def test_without_lms_login_url_the_page_offers_no_form_and_redeems_nothing(
    workdir: Path,
) -> None:
    """With no lms_login_url the page says sign-in is unavailable (503), offers no form,
    and a POST leaves the link unused."""
    config = load_config(
        environ={
            "SENDER_API_KEYS": KEY,
            "SENDER_SECRET_KEYS": "landing-signing-key-" + "s" * 20,
            **IDENTITY,
        },
    )
    async with served(app(config, work=False)) as client:
        token = await issue(client)
        page = await client.get(f"/login?token={token}")
        assert page.status_code == 503
        assert "<form" not in page.text
        assert_page_headers(page)
        assert (await post(client, token)).status_code == 503
    async with open_store(config.store) as store:
        claims = await Sender(config.sender, store=store).inspect_link(token)
        assert claims.purpose == "login"
