"""The landing page at ``base_url``'s path, and ``POST /v1/assertions/verify``.

``GET`` and ``HEAD`` only look (:meth:`sender.landing.Landing.inspect`): a mail scanner
that opens the link changes nothing and gets a page with one "Continue" button in a
``method="post"`` form. The button's ``POST`` checks the token again and where the
request came from, redeems a one-time link once (:meth:`~sender.landing.Landing.redeem`),
and answers 303 to ``lms_login_url`` with a minute's assertion, which the LMS checks at
``POST /v1/assertions/verify`` (scope ``links``) or with ``Sender.verify_assertion``.

Where the POST came from: an ``Origin`` header must be ``base_url``'s origin. A browser
sends ``Origin: null`` for a form on a page whose ``Referrer-Policy`` is ``no-referrer``
(as this one's is); then ``Sec-Fetch-Site: same-origin`` must vouch for it instead. A POST
with neither is refused (403), and so is any other origin.

The page's language: the first of en, nb, sv and ja in the browser's ``Accept-Language``
(``no`` and ``nn`` read as nb), else English; the course is named by its id, the one
course name the token carries. The outbox is not asked: a link issued through
``POST /v1/links`` has no outbox row, and a scanner's GET should cost no query.
Every answer carries the page headers (:func:`~sender.service.web.html_response`: no-store,
no referrer, noindex, a strict CSP) and sets no cookie. Tokens and assertions are never
logged.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

from sender.config import Scope
from sender.errors import LinkError
from sender.landing import Landing
from sender.service.html import PAGES
from sender.service.schemas import AssertionRequest
from sender.service.state import Service
from sender.service.web import (
    APIRouter,
    Request,
    Response,
    guard,
    html_response,
    page_csp,
    see_other,
)

__all__ = ["LOCALES", "WORDS", "page_language", "router"]

log = logging.getLogger("sender.service")

LOCALES = ("en", "nb", "sv", "ja")
_ALIASES = {"no": "nb", "nn": "nb", "nb": "nb", "en": "en", "sv": "sv", "ja": "ja"}

# Every string the landing page shows, per locale. {course} is the course id.
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Sign in to {course}",
        "intro": "Press Continue to sign in to {course}.",
        "note": "This link is personal. Do not forward it.",
        "continue": "Continue",
        "invalid": "This link is not valid",
        "invalid_text": "It may have been copied incompletely. Open the link from the "
        "e-mail again, or ask for a new one.",
        "expired": "This link has expired",
        "expired_text": "Ask for a new link from the course page or your teacher.",
        "revoked": "This link was replaced",
        "revoked_text": "A newer link was sent to you. Use the latest e-mail, or ask for a "
        "new link.",
        "used": "This link was already used",
        "used_text": "A sign-in link works once. Ask for a new link to sign in again.",
        "forbidden": "This request was refused",
        "forbidden_text": "The sign-in must be confirmed on this page. Open the link from "
        "the e-mail again.",
        "unavailable": "Sign-in is not available here yet",
        "unavailable_text": "This page is not set up for signing in. "
        "Tell the course administrator.",
    },
    "nb": {
        "title": "Logg inn på {course}",
        "intro": "Trykk Fortsett for å logge inn på {course}.",
        "note": "Lenken er personlig. Ikke videresend den.",
        "continue": "Fortsett",
        "invalid": "Lenken er ikke gyldig",
        "invalid_text": "Den kan ha blitt kopiert ufullstendig. Åpne lenken fra e-posten "
        "på nytt, eller be om en ny.",
        "expired": "Lenken er utløpt",
        "expired_text": "Be om en ny lenke fra kurssiden eller læreren din.",
        "revoked": "Lenken er erstattet",
        "revoked_text": "Du har fått en nyere lenke. Bruk den siste e-posten, eller be om "
        "en ny lenke.",
        "used": "Lenken er allerede brukt",
        "used_text": "En innloggingslenke virker én gang. Be om en ny lenke for å logge inn igjen.",
        "forbidden": "Forespørselen ble avvist",
        "forbidden_text": "Innloggingen må bekreftes på denne siden. Åpne lenken fra "
        "e-posten på nytt.",
        "unavailable": "Innlogging er ikke tilgjengelig her ennå",
        "unavailable_text": "Denne siden er ikke satt opp for innlogging. "
        "Si ifra til kursadministratoren.",
    },
    "sv": {
        "title": "Logga in på {course}",
        "intro": "Tryck på Fortsätt för att logga in på {course}.",
        "note": "Länken är personlig. Vidarebefordra den inte.",
        "continue": "Fortsätt",
        "invalid": "Länken är inte giltig",
        "invalid_text": "Den kan ha kopierats ofullständigt. Öppna länken från e-postmeddelandet "
        "igen, eller be om en ny.",
        "expired": "Länken har gått ut",
        "expired_text": "Be om en ny länk från kurssidan eller din lärare.",
        "revoked": "Länken har ersatts",
        "revoked_text": "Du har fått en nyare länk. Använd det senaste e-postmeddelandet, "
        "eller be om en ny länk.",
        "used": "Länken har redan använts",
        "used_text": "En inloggningslänk fungerar en gång. Be om en ny länk för att logga in igen.",
        "forbidden": "Begäran nekades",
        "forbidden_text": "Inloggningen måste bekräftas på den här sidan. Öppna länken från "
        "e-postmeddelandet igen.",
        "unavailable": "Inloggning är inte tillgänglig här ännu",
        "unavailable_text": "Den här sidan är inte inställd för inloggning. "
        "Meddela kursadministratören.",
    },
    "ja": {
        "title": "{course} にサインイン",
        "intro": "「続行」を押して {course} にサインインしてください。",
        "note": "このリンクはあなた専用です。転送しないでください。",
        "continue": "続行",
        "invalid": "このリンクは無効です",
        "invalid_text": "正しくコピーされていない可能性があります。メールのリンクをもう一度開くか、"
        "新しいリンクを依頼してください。",
        "expired": "このリンクは有効期限が切れています",
        "expired_text": "コースページまたは担当の先生に新しいリンクを依頼してください。",
        "revoked": "このリンクは置き換えられました",
        "revoked_text": "より新しいリンクが送信されています。最新のメールを使うか、"
        "新しいリンクを依頼してください。",
        "used": "このリンクは使用済みです",
        "used_text": "サインイン用のリンクは一度だけ使えます。もう一度サインインするには"
        "新しいリンクを依頼してください。",
        "forbidden": "このリクエストは拒否されました",
        "forbidden_text": "サインインはこのページで確認する必要があります。"
        "メールのリンクをもう一度開いてください。",
        "unavailable": "ここではまだサインインできません",
        "unavailable_text": "このページはサインイン用に設定されていません。"
        "コース管理者に連絡してください。",
    },
}
_STATUS = {
    "invalid": 400,
    "expired": 410,
    "revoked": 410,
    "used": 410,
    "forbidden": 403,
    "unavailable": 503,
}
_MAX_FORM = 8192  # bytes of the POST's form: one token


def page_language(accept_language: str | None, /) -> str:
    """The first of :data:`LOCALES` the ``Accept-Language`` header asks for, by weight."""
    choices: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "")[:512].split(",")):
        tag, _, params = item.strip().partition(";")
        weight = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                weight = float(params[2:])
            except ValueError:
                weight = 0.0
        locale = _ALIASES.get(tag.strip().lower().split("-")[0])
        if locale is not None and weight > 0:
            choices.append((-weight, position, locale))
    return min(choices)[2] if choices else "en"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> str:
    """``scheme://host[:port]`` as a browser's ``Origin`` header writes it (no default port)."""
    parts = urlsplit(url.strip().lower())
    try:
        port = parts.port
    except ValueError:
        return ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    shown = "" if port is None or port == _DEFAULT_PORTS.get(parts.scheme) else f":{port}"
    return f"{parts.scheme}://{host}{shown}"


def router(service: Service, /) -> APIRouter:
    settings = service.config.sender.links
    path = urlsplit(settings.base_url).path or "/"
    own_origin = _origin(settings.base_url)
    targets = (_origin(settings.lms_login_url),) if settings.lms_login_url else ()
    csp = page_csp(form_action=targets)
    routes = APIRouter()

    def page(lang: str, *, status: int, kind: str | None, course: str, token: str) -> Response:
        words = {k: v.format(course=course) for k, v in WORDS[lang].items()}
        body = PAGES.render(
            "landing.html",
            lang=lang,
            title=words[kind] if kind else words["title"],
            words=words,
            kind=kind,
            action=path,
            token=token,
        )
        return html_response(body, status=status, csp=csp)

    def refusal(lang: str, kind: str) -> Response:
        status = _STATUS.get(kind, 400)
        return page(lang, status=status, kind=kind, course="", token="")

    async def landing() -> Landing:
        store, _sender = await service.sending()
        return service.links.landing(store=store)

    @routes.api_route(path, methods=["GET", "HEAD"], include_in_schema=False)
    async def look(request: Request) -> Response:
        lang = page_language(request.headers.get("accept-language"))
        token = request.query_params.get("token", "")
        if settings.lms_login_url is None:
            return refusal(lang, "unavailable")  # a Continue button would lead nowhere
        try:
            claims = await (await landing()).inspect(token)
        except LinkError as exc:
            return refusal(lang, exc.kind)
        return page(lang, status=200, kind=None, course=claims.course_id, token=token)

    @routes.post(path, include_in_schema=False)
    async def confirm(request: Request) -> Response:
        lang = page_language(request.headers.get("accept-language"))
        origin = request.headers.get("origin")
        fetch_site = request.headers.get("sec-fetch-site")
        if origin is not None and origin != "null":
            allowed = _origin(origin) == own_origin
        else:
            allowed = fetch_site == "same-origin"
        if not allowed:
            log.warning("landing page: a POST from another origin was refused")
            return refusal(lang, "forbidden")
        if settings.lms_login_url is None:
            log.error("landing page: lms_login_url is not configured; nowhere to sign in")
            return refusal(lang, "unavailable")
        body = await request.body()
        form = parse_qs(body[:_MAX_FORM].decode("utf-8", "replace"))
        token = (form.get("token") or [""])[-1]
        try:
            redeemed = await (await landing()).redeem(token)
        except LinkError as exc:
            return refusal(lang, exc.kind)
        assert redeemed.redirect_url is not None  # lms_login_url is set: checked above
        return see_other(redeemed.redirect_url)

    @routes.post(
        "/v1/assertions/verify",
        tags=["links"],
        summary="Verify a landing page's assertion",
        dependencies=[guard(service, Scope.LINKS)],
    )
    async def verify_assertion(request: AssertionRequest) -> dict[str, str | None]:
        """The claims of a good assertion, which this call uses up; 400 with ``error``
        invalid (forged), expired or used (replayed)."""
        claims = await (await landing()).verify_assertion(
            request.assertion, purpose=request.purpose
        )
        return claims.as_dict()

    return routes
