"""``/admin/``: the admin pages, for a person with an API key of scope ``admin``.

Preview (every template in every locale), Runs (counts, per-domain progress against the
limits, ETA, resume and stop), Clean-up (what bounced, what to do, a fresh Get Link, a
CSV) and Health (the bounce budget, the complaint rate, sender-side refusals per
provider, the doctor's findings with the Gmail bulk-sender estimate). Plain HTML from
jinja2 (:data:`~sender.service.html.PAGES`), one CSS file and a few lines of optional
script from ``/static``.

Logging in: the form takes the key once and, when it holds the ``admin`` scope, answers
with a session cookie (:class:`~sender.compose.links.SessionSigner`: signed, expiring,
``HttpOnly``, ``SameSite=Strict``, ``Secure`` over https, ``Path=/admin``) that holds a
keyed digest of the key, never the key: removing the key from the settings ends its
sessions. Every POST carries the session's CSRF token and is refused (403) without it,
or from another origin.
"""

from __future__ import annotations

import csv
import hmac
import html
import io
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sender.bulk.runner import reactivate_run, stop_run
from sender.bulk.status import SENDER_SIDE_SINCE, limits_report, run_list, run_status
from sender.checks.doctor import DoctorReport
from sender.checks.gmail import gmail_bulk_estimate, gmail_check
from sender.compose.composer import CALENDAR_TEMPLATES
from sender.compose.links import AdminSession, SessionSigner
from sender.config import ApiKey, Scope
from sender.configured import diagnose_sender
from sender.errors import InputError, LinkError, SenderError
from sender.feedback.suppression import (
    REPORT_FIELDS,
    CleanupRow,
    bounce_verdict,
    sender_side_problems,
)
from sender.models import Participant
from sender.service.html import PAGES
from sender.service.preview import Preview, listing, preview, sample_event, sample_person
from sender.service.state import Service
from sender.service.web import (
    ADMIN_CSP,
    MAIL_CSP,
    ApiError,
    APIRouter,
    Cookie,
    Request,
    Response,
    download_response,
    form_of,
    html_response,
    see_other,
)
from sender.store import Store
from sender.vocabulary import Reason

__all__ = ["COOKIE", "SESSION_AGE", "router"]

log = logging.getLogger("sender.service")

COOKIE = "sender_admin"
SESSION_AGE = timedelta(hours=8)
NAV = (("preview", "Preview"), ("runs", "Runs"), ("cleanup", "Clean-up"), ("health", "Health"))


class _Refused(Exception):
    """A request the admin pages turn away: its status and a line for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _time(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ``= + - @`` (from a bounce's
    diagnostic, say) would otherwise be run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def router(service: Service, /) -> APIRouter:
    routes = APIRouter(prefix="/admin", include_in_schema=False)
    signer = SessionSigner(service.config.sender.links.secret_keys, max_age=SESSION_AGE)
    # What a session keeps of each key, computed once: every request compares them all.
    checks = [(signer.key_check(key.key), key) for key in service.config.api_keys]

    def key_of(session: AdminSession) -> ApiKey | None:
        """The configured admin key the session was opened with; every key is compared."""
        found = None
        for check, key in checks:
            if hmac.compare_digest(check, session.key_check) and Scope.ADMIN in key.scopes:
                found = key
        return found

    def session_of(request: Request) -> AdminSession | None:
        value = request.cookies.get(COOKIE)
        if not value:
            return None
        try:
            session = signer.verify(value)
        except LinkError:
            return None
        return session if key_of(session) is not None else None

    def cookie(request: Request, value: str, *, max_age: int) -> Cookie:
        secure = request.url.scheme == "https"
        return Cookie(COOKIE, value, path="/admin", max_age=max_age, secure=secure)

    def same_origin(request: Request) -> bool:
        """A POST a browser sends from another site is refused.

        Browsers say where a request comes from in ``Sec-Fetch-Site``; the pages' own
        ``Referrer-Policy: no-referrer`` makes their ``Origin`` ``null``, so a named
        ``Origin`` must be this server's. Clients that send neither (httpx, curl) are
        not browsers and carry no ambient cookie to abuse; the CSRF token still applies.
        """
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        return origin in (None, "null") or origin == f"{request.url.scheme}://{request.url.netloc}"

    def page(
        name: str,
        session: AdminSession | None,
        /,
        *,
        status: int = 200,
        cookies: Sequence[Cookie] = (),
        **context: Any,
    ) -> Response:
        context.setdefault("error", "")
        body = PAGES.render(
            f"admin/{name}.html",
            lang="en",
            nav=NAV if session is not None else (),
            current=name,
            csrf=signer.csrf_token(session) if session is not None else "",
            **context,
        )
        return html_response(body, status=status, csp=ADMIN_CSP, cookies=cookies)

    def login_page(error: str = "", *, status: int = 200) -> Response:
        return page("login", None, status=status, title="Log in", error=error)

    async def posted(request: Request) -> tuple[AdminSession, dict[str, str]]:
        """The session and form of a POST, after its origin and CSRF token are checked."""
        session = session_of(request)
        if session is None:
            raise _Refused(403, "your session ended: log in again")
        if not same_origin(request):
            raise _Refused(403, "this form was sent from another site")
        try:
            form = await form_of(request)
        except ApiError:
            form = {}  # not a form at all: no token either
        if not signer.check_csrf(session, form.get("csrf")):
            raise _Refused(403, "the form's CSRF token is missing or wrong: reload the page")
        return session, form

    def refused(exc: _Refused) -> Response:
        return page("refused", None, status=exc.status, title="Refused", error=str(exc))

    # --- logging in and out ----------------------------------------------------------

    @routes.get("")
    async def bare() -> Response:
        return see_other("/admin/")

    @routes.get("/")
    async def home(request: Request) -> Response:
        if session_of(request) is None:
            return login_page()
        return see_other("/admin/preview")

    @routes.get("/login")
    async def login_form(request: Request) -> Response:
        if session_of(request) is not None:
            return see_other("/admin/preview")
        return login_page()

    @routes.post("/login")
    async def login(request: Request) -> Response:
        if not same_origin(request):
            return login_page("this form was sent from another site", status=403)
        form = await form_of(request)
        key = service.keys.match(form.get("key", "").strip())
        if key is None:
            return login_page("that key is not one of this server's API keys", status=401)
        if not service.keys.allows(key, Scope.ADMIN):
            return login_page("that key may not use the admin pages (scope admin)", status=403)
        value = signer.issue(key_name=key.name, api_key=key.key, nonce=secrets.token_urlsafe(18))
        log.info("admin pages: %s logged in", key.name)
        max_age = int(SESSION_AGE.total_seconds())
        return see_other("/admin/preview", cookies=[cookie(request, value, max_age=max_age)])

    @routes.post("/logout")
    async def logout(request: Request) -> Response:
        try:
            await posted(request)
        except _Refused as exc:
            return refused(exc)
        return see_other("/admin/login", cookies=[cookie(request, "", max_age=0)])

    # --- preview ---------------------------------------------------------------------

    def preview_of(form: Mapping[str, str]) -> Preview:
        """The preview the query asks for (``template``, ``locale``, the participant's
        fields, the event's); raises what a send would for bad input."""
        names = service.links.renderer.names()
        template = form.get("template") or ("invitation" if "invitation" in names else names[0])
        if template not in names:
            raise InputError(f"no template named {template[:64]!r}", field="template")
        person = sample_person(form, locale=form.get("locale") or "en")
        event = (
            sample_event(service.links, form, course_id=person.course_id)
            if template in CALENDAR_TEMPLATES
            else None
        )
        return preview(service.links, template, person=person, event=event)

    @routes.get("/preview")
    async def preview_page(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return see_other("/admin/login")
        form = dict(request.query_params)
        shown, error = None, ""
        try:
            shown = preview_of(form)
        except SenderError as exc:
            field = getattr(exc, "field", None)
            error = f"{field}: {exc}" if field and not str(exc).startswith(field) else str(exc)
        zone_times = None
        if shown is not None and shown.event is not None:
            event = shown.event
            zone_times = {
                "zone": event.timezone,
                "start": event.start.strftime("%Y-%m-%d %H:%M"),
                "end": event.end.strftime("%Y-%m-%d %H:%M"),
                "start_utc": event.start_utc().strftime("%Y-%m-%d %H:%M UTC"),
            }
        frame = "/admin/preview/frame?" + str(request.query_params) if shown else ""
        return page(
            "preview",
            session,
            title="Preview",
            templates=listing(service.links),
            shown=shown,
            zone_times=zone_times,
            frame=frame,
            form=form,
            error=error,
        )

    @routes.get("/preview/frame")
    async def preview_frame(request: Request) -> Response:
        """The HTML part alone, for the preview's sandboxed iframe: the mail's own inline
        styles may apply, nothing may run, and only sender's own pages may frame it."""
        if session_of(request) is None:
            return html_response("", status=403, csp=MAIL_CSP)
        try:
            shown = preview_of(dict(request.query_params))
        except SenderError as exc:
            return html_response(f"<p>{html.escape(str(exc))}</p>", status=400, csp=MAIL_CSP)
        body = shown.html if shown.html is not None else "<p>This template has no HTML part.</p>"
        return html_response(body, csp=MAIL_CSP, headers={"X-Frame-Options": "SAMEORIGIN"})

    # --- runs ------------------------------------------------------------------------

    async def store() -> Store:
        opened, _sender = await service.sending()
        return opened

    @routes.get("/runs")
    async def runs_page(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return see_other("/admin/login")
        runs = await run_list(await store(), now=time.time())
        for run in runs:
            run["created"] = _time(run["created_at"])  # type: ignore[arg-type]
        return page("runs", session, title="Runs", runs=runs)

    async def run_page(
        session: AdminSession, run_id: str, *, notice: str = "", error: str = "", status: int = 200
    ) -> Response:
        opened = await store()
        now = time.time()
        try:
            data = await run_status(opened, run_id, now=now)
        except InputError as exc:
            return page("runs", session, title="Runs", runs=[], error=str(exc), status=404)
        domains, eta = limits_report(data["domains"], service.config.limits)  # type: ignore[arg-type]
        return page(
            "run",
            session,
            status=status,
            title=f"Run {run_id}",
            run=data,
            domains=domains,
            eta=_duration(eta),
            created=_time(data["created_at"]),  # type: ignore[arg-type]
            paused_since=_time(data["paused_since"]),  # type: ignore[arg-type]
            next_attempt=_time(data["next_attempt_at"]),  # type: ignore[arg-type]
            notice=notice,
            error=error,
        )

    @routes.get("/runs/{run_id}")
    async def run_detail(request: Request, run_id: str) -> Response:
        session = session_of(request)
        if session is None:
            return see_other("/admin/login")
        return await run_page(session, run_id)

    @routes.post("/runs/{run_id}/{action}")
    async def run_action(request: Request, run_id: str, action: str) -> Response:
        try:
            session, _form = await posted(request)
        except _Refused as exc:
            return refused(exc)
        key = key_of(session)
        who = key.name if key is not None else "an admin"
        opened = await store()
        try:
            if action == "stop":
                await stop_run(
                    opened, run_id, reason=f"stopped from the admin pages ({who})", now=time.time()
                )
                notice = "stopped: workers finish what is in flight and send nothing more"
            elif action == "resume":
                await reactivate_run(opened, run_id, policy=service.config.bounces, now=time.time())
                notice = "resumed: the workers send the rest"
            else:
                return page(
                    "runs", session, title="Runs", runs=[], error="no such action", status=404
                )
        except InputError as exc:
            return await run_page(session, run_id, error=str(exc), status=409)
        log.warning("admin pages: run %s %s by %s", run_id[:100], action, who)
        return await run_page(session, run_id, notice=notice)

    # --- clean-up --------------------------------------------------------------------

    async def report(since_text: str, now: float) -> list[CleanupRow]:
        """The clean-up report since ``since_text`` ago: the page's rows and the CSV's."""
        rows, _problems = await service.cleanup_report(since_text or "7d", now=now)
        return rows

    async def cleanup_rows(since_text: str) -> list[dict[str, object]]:
        rows = await report(since_text, time.time())
        table = []
        for row in rows:
            entry = row.as_dict(lambda _person: "")
            entry["course_id"] = row.participant.course_id if row.participant else ""
            table.append(entry)
        return table

    async def cleanup_page(
        session: AdminSession,
        since_text: str,
        *,
        issued: Mapping[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        error = ""
        rows: list[dict[str, object]] = []
        suppressed: list[dict[str, object]] = []
        try:
            rows = await cleanup_rows(since_text)
        except InputError as exc:
            error, status = str(exc), 400
        for entry in await (await store()).suppressions():
            suppressed.append(asdict(entry) | {"since": _time(entry.since)})
        return page(
            "cleanup",
            session,
            status=status,
            title="Clean-up",
            rows=rows,
            suppressed=suppressed,
            since=since_text or "7d",
            issued=issued,
            error=error,
        )

    @routes.get("/cleanup")
    async def cleanup(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return see_other("/admin/login")
        return await cleanup_page(session, request.query_params.get("since", "7d"))

    @routes.post("/cleanup/link")
    async def cleanup_link(request: Request) -> Response:
        try:
            session, form = await posted(request)
        except _Refused as exc:
            return refused(exc)
        person = Participant(
            email=form.get("email", ""),
            name=form.get("name", ""),
            participant_id=form.get("participant_id", ""),
            course_id=form.get("course_id", ""),
        )
        try:
            issued = service.links.get_link(person)
        except SenderError as exc:
            return await cleanup_page(
                session, form.get("since", "7d"), issued={"error": str(exc)}, status=400
            )
        return await cleanup_page(
            session,
            form.get("since", "7d"),
            issued={
                "participant_id": person.participant_id,
                "email": person.email,
                "url": issued.url,
                "expires": issued.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
            },
        )

    @routes.get("/cleanup.csv")
    async def cleanup_csv(request: Request) -> Response:
        if session_of(request) is None:
            return see_other("/admin/login")
        since_text = request.query_params.get("since", "7d")
        now = time.time()
        rows = await report(since_text, now)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(REPORT_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            entry = row.as_dict(service.link_url)
            writer.writerow({key: _cell(value) for key, value in entry.items()})
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
        return download_response(
            out.getvalue(), filename=f"sender-cleanup-{stamp}.csv", media_type="text/csv"
        )

    # --- health ----------------------------------------------------------------------

    @routes.get("/health")
    async def health(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return see_other("/admin/login")
        opened = await store()
        now = time.time()
        policy = service.config.bounces
        since = now - policy.window
        hard = await opened.hard_bounces_since(since)
        sent = await opened.sent_since(since)
        complaints = len(
            {
                record.address
                for record in await opened.bounces(since=since, reasons=[Reason.COMPLAINT.value])
                if not record.forged and record.address
            }
        )
        problems = await sender_side_problems(
            opened,
            since=now - SENDER_SIDE_SINCE,
            now=now,
            policy=policy,
            groups=service.config.limits.effective_groups(),
        )
        doctor = await diagnose_sender(service.config)
        gmail = gmail_check(await gmail_bulk_estimate(opened, now=now), doctor)
        doctor = DoctorReport(doctor.domain, (*doctor.checks, gmail))
        return page(
            "health",
            session,
            title="Health",
            hard=hard,
            budget=policy.budget,
            hours=f"{policy.window / 3600:g}",
            budget_reason=bounce_verdict(hard, sent, policy=policy) or "",
            sent=sent,
            complaints=complaints,
            complaint_rate=(complaints / sent) if sent else 0.0,
            complaint_limit=policy.complaint_pause,
            complaint_warn=policy.complaint_warn,
            sender_side=[asdict(problem) for problem in problems],
            doctor=doctor,
            domain=doctor.domain,
            dns_server=service.config.dns_server or "the system's resolver",
        )

    return routes
