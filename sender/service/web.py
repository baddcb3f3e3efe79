"""The one module that imports the web framework (FastAPI, on Starlette and pydantic).

Why FastAPI: the request bodies are declared once (:mod:`sender.service.schemas`) and
both validated and published as an OpenAPI document, from which a PHP, Ruby or Java LMS
generates its client. Everything framework-shaped the routers need comes from here, and
the framework's errors are translated here, into one JSON shape::

    {"error": "invalid_request", "field": "participant.email", "message": "..."}

Request bodies are read whole, up to a limit (413 beyond), before any route sees them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from sender.config import ApiKey, Scope
from sender.errors import (
    CodeError,
    CodeLocked,
    ConfigurationError,
    InputError,
    LinkError,
    RunBusy,
    SenderError,
    TemplateError,
)
from sender.service.state import Service

__all__ = [
    "ADMIN_CSP",
    "CSV_LIMIT",
    "FORM_LIMIT",
    "JSON_LIMIT",
    "MAIL_CSP",
    "PAGE_CSP",
    "APIRouter",
    "ApiError",
    "App",
    "Cookie",
    "Query",
    "Request",
    "Response",
    "body_of",
    "download_response",
    "either_body",
    "form_of",
    "guard",
    "html_response",
    "json_response",
    "mount_static",
    "new_app",
    "page_csp",
    "see_other",
]

log = logging.getLogger("sender.service")

App = FastAPI
JSON_LIMIT = 1 << 20  # bytes of a JSON body
CSV_LIMIT = 32 << 20  # bytes of a CSV upload (text/csv)
T = TypeVar("T")


class ApiError(Exception):
    """An answer other than success: the HTTP status and the JSON body's words."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        /,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.field = field
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body: dict[str, object] = {"error": self.error, "message": str(self)}
        if self.field is not None:
            body["field"] = self.field
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def json_response(data: object, /, *, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


# Pages load only sender's own /static files; nothing inline, nothing from elsewhere.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The admin pages also frame sender's own preview of a message (sandboxed).
ADMIN_CSP = PAGE_CSP + "; frame-src 'self'"
# A mail's HTML part, previewed in a sandboxed frame of an admin page: its own inline
# styles, pictures only inline, no script, no forms, no fetching, framed only by sender.
MAIL_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
    "frame-ancestors 'self'; base-uri 'none'; sandbox"
)
FORM_LIMIT = 64 << 10  # bytes of an HTML form's body (the admin pages)
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Cookie:
    """A cookie a page sets: HttpOnly and SameSite=Strict always; an empty ``value`` with
    ``max_age`` 0 clears it."""

    name: str
    value: str
    path: str
    max_age: int
    secure: bool


def _with_cookies(response: Response, cookies: Sequence[Cookie]) -> Response:
    for cookie in cookies:
        response.set_cookie(
            cookie.name,
            cookie.value,
            max_age=cookie.max_age,
            path=cookie.path,
            secure=cookie.secure,
            httponly=True,
            samesite="strict",
        )
    return response


def html_response(
    body: str,
    /,
    *,
    status: int = 200,
    csp: str = PAGE_CSP,
    headers: Mapping[str, str] | None = None,
    cookies: Sequence[Cookie] = (),
) -> HTMLResponse:
    """An HTML page with the headers every sender page carries: never cached, never
    indexed, no referrer, no framing, and a strict Content-Security-Policy."""
    merged = {**_PAGE_HEADERS, "Content-Security-Policy": csp, **(headers or {})}
    response = HTMLResponse(body, status_code=status, headers=merged)
    _with_cookies(response, cookies)
    return response


def download_response(body: str, /, *, filename: str, media_type: str) -> Response:
    """A file to save (the clean-up CSV), never cached."""
    headers = {
        **_PAGE_HEADERS,
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    return Response(body.encode("utf-8"), media_type=media_type, headers=headers)


async def form_of(request: Request, /) -> dict[str, str]:
    """An HTML form's fields (``application/x-www-form-urlencoded``), each's last value;
    another body, or one over :data:`FORM_LIMIT`, is refused with 400/413."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(400, "invalid_request", "a form is expected", field="body")
    raw = await request.body()
    if len(raw) > FORM_LIMIT:
        raise ApiError(413, "too_large", f"the form is larger than {FORM_LIMIT} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_request", "the form is not UTF-8", field="body") from exc
    try:
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=200))
    except ValueError as exc:
        raise ApiError(400, "invalid_request", "the form has too many fields") from exc


def page_csp(*, form_action: tuple[str, ...] = ()) -> str:
    """:data:`PAGE_CSP` with ``form_action`` origins allowed beside ``'self'``: a form whose
    POST answers 303 elsewhere needs that origin too (Chrome checks the redirect's target)."""
    extra = "".join(f" {origin}" for origin in form_action)
    return PAGE_CSP.replace("form-action 'self'", f"form-action 'self'{extra}")


def see_other(location: str, /, *, cookies: Sequence[Cookie] = ()) -> Response:
    """A 303 to ``location`` (a URL the caller built from settings or one of sender's own
    paths, never from the request), with the page headers: not cached, no referrer; and
    ``cookies`` set or cleared (the admin pages' session)."""
    response = RedirectResponse(location, status_code=303, headers=dict(_PAGE_HEADERS))
    return _with_cookies(response, cookies)


def mount_static(app: FastAPI, directory: Path, /) -> None:
    """Serve ``directory`` at ``/static``: the pages' CSS and script, from sender itself
    (no CDN)."""
    app.mount("/static", StaticFiles(directory=directory), name="static")


def _field(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """``("body", "participant", "email")`` is ``participant.email``; the body itself, ``body``."""
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts[:1]
    return ".".join(parts) or "body"


def _invalid(errors: Any) -> ApiError:
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return ApiError(400, "invalid_json", "the body is not valid JSON", field="body")
    where = _field(first.get("loc", ()))
    message = str(first.get("msg", "invalid"))  # never the input: it may hold a token
    return ApiError(422, "invalid_request", f"{where}: {message}", field=where)


def _from_sender_error(exc: SenderError) -> ApiError:
    if isinstance(exc, LinkError):
        return ApiError(400, exc.kind, str(exc), field="token")
    if isinstance(exc, CodeLocked):
        wait = max(1, math.ceil(exc.retry_after))
        return ApiError(429, exc.kind, str(exc), field="code", headers={"Retry-After": str(wait)})
    if isinstance(exc, CodeError):
        return ApiError(400, exc.kind, str(exc), field="code")
    if isinstance(exc, InputError):
        field = exc.field
        status = 404 if field == "run_id" and str(exc.args[0]).startswith("no run") else 400
        return ApiError(status, "invalid_input", str(exc), field=field)
    if isinstance(exc, TemplateError):
        return ApiError(422, "template", str(exc), field="template")
    if isinstance(exc, RunBusy):
        return ApiError(409, "run_busy", str(exc), field="run_id")
    if isinstance(exc, ConfigurationError):
        log.error("configuration: %s", exc)
        return ApiError(503, "configuration", str(exc))
    log.error("%s: %s", type(exc).__name__, exc)
    return ApiError(500, "failed", str(exc))


async def _on_api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _on_validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _invalid(exc.errors()).response()


async def _on_sender_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SenderError)
    return _from_sender_error(exc).response()


async def _on_http(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    words = {404: "not_found", 405: "method_not_allowed"}
    error = words.get(exc.status_code, "http_error")
    return ApiError(exc.status_code, error, str(exc.detail), headers=exc.headers).response()


Scope_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope_, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Read each request's body whole, up to its limit (CSV uploads get more), then hand
    it on; beyond the limit answer 413 before any route runs."""

    def __init__(self, app: Asgi, /, *, json_limit: int, csv_limit: int) -> None:
        self._app = app
        self._json = json_limit
        self._csv = csv_limit

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        csv = headers.get("content-type", "").split(";")[0].strip().lower() == "text/csv"
        limit = self._csv if csv else self._json
        too_big = ApiError(
            413, "too_large", f"the body is larger than {limit} bytes", field="body"
        ).response()
        declared = headers.get("content-length", "")
        if declared.isdecimal() and int(declared) > limit:
            await too_big(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await too_big(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: a disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)


def new_app(
    service: Service,
    /,
    *,
    title: str,
    version: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    json_limit: int = JSON_LIMIT,
    csv_limit: int = CSV_LIMIT,
) -> FastAPI:
    """An app whose errors are JSON, whose bodies are size-limited, and whose only public
    path is ``/openapi.json`` (no docs pages: those would be public too)."""
    del service  # the routers hold it; named here so every app is made from one
    app = FastAPI(
        title=title,
        version=version,
        description=description,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(SenderError, _on_sender_error)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_middleware(BodyLimit, json_limit=json_limit, csv_limit=csv_limit)
    return app


_bearer = HTTPBearer(
    auto_error=False, description="An API key from SENDER_API_KEYS or api_keys in sender.toml."
)


def guard(service: Service, scope: Scope, /) -> Any:
    """A dependency that lets a request through with a known key holding ``scope``:
    401 without a key or with a wrong one, 403 for a key without the scope."""

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        key = None if credentials is None else service.keys.match(credentials.credentials)
        if key is None:
            raise ApiError(
                401,
                "unauthorized",
                "an API key is needed: Authorization: Bearer KEY",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not service.keys.allows(key, scope):
            raise ApiError(403, "forbidden", f"this key may not use {scope.value}")
        return key

    return Depends(check)


async def body_of(request: Request, kind: type[T], /) -> T:
    """The JSON body validated as ``kind``, for a route that also takes other bodies."""
    raw = await request.body()
    try:
        return TypeAdapter(kind).validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc.errors()) from exc


def either_body(kind: type[object], /) -> dict[str, Any]:
    """OpenAPI for a route taking ``kind`` as JSON or a CSV upload (``text/csv``)."""
    schema = TypeAdapter(kind).json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # ParticipantIn: in components/schemas through MessageRequest
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
    }
