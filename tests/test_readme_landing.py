"""README's own landing pages, as written: the Django view and the FastAPI route.

Each block is taken from README.md and run in this test's directory (its outbox is
``outbox.sqlite3`` there): Django's views under ``settings.configure`` with its test
``AsyncClient``, the FastAPI app through httpx's ASGI transport. Scanner GETs redeem
nothing; the participant's POST redirects once with an assertion the LMS's sso view
accepts once.
"""

from __future__ import annotations

import sys
import types
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.test_readme import blocks

pytestmark = pytest.mark.usefixtures("workdir")

SCANNER = "Mimecast URL Protect/1.0"


def readme_block(marker: str) -> dict[str, Any]:
    """Run the README python block that starts with ``marker``; its names."""
    (block,) = [b for b in blocks("python") if b.code.startswith(marker)]
    namespace: dict[str, Any] = {"__name__": "readme_block"}
    exec(compile(block.code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    return namespace


def assertion_in(location: str) -> str:
    """The assertion in a redirect to lms_login_url."""
    assert location.startswith("https://lms.example.com/sso/sender?assertion=")
    (value,) = parse_qs(urlsplit(location).query)["assertion"]
    return value


@pytest.fixture(scope="module")
def django_settings() -> None:
    """Django configured once for this module: the README's views as the URLconf."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="readme-landing-test-" + "d" * 40,
            ALLOWED_HOSTS=["testserver"],
            ROOT_URLCONF="readme_landing_urls",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
        )
        import django

        django.setup()


async def test_the_django_view_redeems_only_on_post(django_settings: None) -> None:
    """README's Django views: five scanner GETs and a HEAD change nothing, the POST
    redirects (303) with an assertion once, the sso view accepts it once."""
    from django.test import AsyncClient
    from django.urls import path

    views = readme_block("# views.py: an LMS's own landing page in Django")
    urls = types.ModuleType("readme_landing_urls")
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("login", views["login"]),
        path("sso/sender", views["sso"]),
    ]
    sys.modules["readme_landing_urls"] = urls
    try:
        token = views["SENDER"].links.issue("p-1", "PY101", purpose="login", next="/c/1").token
        client = AsyncClient(headers={"user-agent": SCANNER})
        for _ in range(5):
            page = await client.get("/login", {"token": token})
            assert page.status_code == 200
            assert b'method="post"' in page.content
            assert b"PY101" in page.content
            assert page["Cache-Control"] == "no-store"
        assert (await client.head("/login", {"token": token})).status_code == 200
        first = await client.post("/login", {"token": token})
        assert first.status_code == 303
        assertion = assertion_in(first["Location"])
        again = await client.post("/login", {"token": token})
        assert again.status_code == 410
        assert b"already used" in again.content
        signed_in = await client.get("/sso/sender", {"assertion": assertion})
        assert (signed_in.status_code, signed_in["Location"]) == (302, "/c/1")
        replayed = await client.get("/sso/sender", {"assertion": assertion})
        assert replayed.status_code == 400
        forged = await client.get("/sso/sender", {"assertion": assertion[:-6] + "abcdef"})
        assert forged.status_code == 400
    finally:
        del sys.modules["readme_landing_urls"]
        await views["SENDER"].store.aclose()


async def test_the_fastapi_route_redeems_only_on_post() -> None:
    """README's FastAPI app: scanner GETs and HEADs change nothing, a cross-origin POST is
    403, the POST redirects (303) once, and the assertion is accepted once."""
    app = readme_block("# app.py: an LMS's own landing page in FastAPI")
    token = app["SENDER"].links.issue("p-2", "PY101", purpose="login").token
    transport = httpx.ASGITransport(app=app["app"])
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="https://lms.example.com", headers={"user-agent": SCANNER}
        ) as client:
            for _ in range(5):
                page = await client.get("/login", params={"token": token})
                assert page.status_code == 200
                assert 'method="post"' in page.text
            assert (await client.head("/login", params={"token": token})).status_code == 200
            form = {"token": token}
            evil = await client.post("/login", data=form, headers={"origin": "https://evil.test"})
            assert evil.status_code == 403
            first = await client.post("/login", data=form, headers={"origin": app["ORIGIN"]})
            assert first.status_code == 303
            assertion = assertion_in(first.headers["location"])
            again = await client.post("/login", data=form, headers={"origin": app["ORIGIN"]})
            assert again.status_code == 410
            signed_in = await client.get("/sso/sender", params={"assertion": assertion})
            assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/")
            replayed = await client.get("/sso/sender", params={"assertion": assertion})
            assert replayed.status_code == 400
    finally:
        await app["SENDER"].store.aclose()
