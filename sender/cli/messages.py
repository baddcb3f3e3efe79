"""Commands about one message: login links, previews, single sends, template lint."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import click

from sender.cli.app import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNFINISHED,
    Context,
    duration,
    err,
    errors_as_lines,
    fail,
    home_line,
    maildir_option,
    main,
    pass_context,
    sending,
    smtp_option,
    variables,
    with_store,
)
from sender.cli.calendar import preview_calendar
from sender.client import Sender
from sender.compose.composer import RESERVED_VARIABLES
from sender.compose.links import LinkClaims
from sender.compose.render import Renderer, lint_templates, missing_variables, sample_context
from sender.config import require_real_identity
from sender.errors import CodeError, LinkError, TemplateNotFound
from sender.models import DeliveryResult, DeliveryStatus, Participant
from sender.store import Store

__all__ = [
    "SAMPLE",
    "code",
    "code_verify",
    "delivery_json",
    "describe",
    "link",
    "link_issue",
    "link_verify",
    "render",
    "send",
    "send_exit_code",
    "template_needs",
    "templates",
    "templates_lint",
    "templates_show",
]

# --- links -----------------------------------------------------------------------------


@main.group()
def link() -> None:
    """Issue and verify personal login links ("Get Link")."""


@link.command("issue")
@click.option("--participant", required=True, help="The participant's id in the LMS.")
@click.option("--course", required=True, help="The course (or project) id.")
@click.option("--next", "next_path", help="Same-site path to open after login, e.g. /courses/1.")
@click.option("--ttl", callback=duration, help="Lifetime, e.g. 7d or 12h (default 14d).")
@click.option("--stamp", help="Revocation stamp, e.g. a hash of the address plus a version.")
@click.option(
    "--purpose",
    default="login",
    show_default=True,
    help="What the link is for; one_time_purposes (login by default) redeem once.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {url, token, expires_at}.")
@pass_context
def link_issue(
    obj: Context,
    participant: str,
    course: str,
    next_path: str | None,
    ttl: timedelta | None,
    stamp: str | None,
    purpose: str,
    as_json: bool,
) -> None:
    """Print a participant's personal login URL."""
    with errors_as_lines(obj.debug):
        sender = Sender(obj.config().sender)
        issued = sender.links.issue(
            participant, course, purpose=purpose, next=next_path, ttl=ttl, stamp=stamp
        )
    if as_json:
        click.echo(json.dumps(issued.as_dict()))
    else:
        click.echo(issued.url)


@link.command("verify")
@click.argument("url_or_token")
@click.option("--stamp", help="The participant's current revocation stamp.")
@click.option("--purpose", help="The purpose the link must have (default: any configured).")
@click.option("--json", "as_json", is_flag=True, help="Print the claims, or {error: KIND}.")
@pass_context
def link_verify(
    obj: Context, url_or_token: str, stamp: str | None, purpose: str | None, as_json: bool
) -> None:
    """Check a link; exit 0 with its claims, or 1 with expired, invalid or revoked."""
    with errors_as_lines(obj.debug):
        sender = Sender(obj.config().sender)
        try:
            claims: LinkClaims | LinkError | CodeError = sender.verify_link(
                url_or_token, stamp=stamp, purpose=purpose
            )
        except LinkError as exc:
            claims = exc
    _print_claims(claims, as_json=as_json)


def _print_claims(found: LinkClaims | LinkError | CodeError, /, *, as_json: bool) -> None:
    """A check's claims (exit 0), or why it failed as ``kind: message`` (exit 1); JSON
    with ``as_json``. `link verify` and `code verify` answer alike."""
    if isinstance(found, LinkClaims):
        data = found.as_dict()
        if as_json:
            click.echo(json.dumps(data))
        else:
            for key, value in data.items():
                click.echo(f"{key}: {'' if value is None else value}")
        return
    if as_json:
        click.echo(json.dumps({"error": found.kind, "message": str(found)}))
    else:
        click.echo(f"{found.kind}: {found}")
    sys.exit(EXIT_FAILED)


# --- login codes -----------------------------------------------------------------------


@main.group()
def code() -> None:
    """Check the login codes that login mails carry beside their link."""


@code.command("verify")
@click.argument("typed", metavar="CODE")
@click.option("--email", required=True, help="The address the code was mailed to.")
@click.option("--json", "as_json", is_flag=True, help="Print the claims, or {error: KIND}.")
@pass_context
def code_verify(obj: Context, typed: str, email: str, as_json: bool) -> None:
    """Check a code (any case, spaces or dashes); exit 0 with its claims, or 1 with
    invalid or locked. Every try counts against the address, as through the API."""
    with errors_as_lines(obj.debug):
        config = obj.config()

    async def check(store: Store) -> LinkClaims | CodeError:
        try:
            return await Sender(config.sender, store=store).verify_code(typed, email=email)
        except CodeError as exc:
            return exc

    _print_claims(obj.run(with_store(config, check)), as_json=as_json)


# --- render ----------------------------------------------------------------------------

SAMPLE = {
    "to": "kari.nordmann@example.com",
    "name": "Kari Nordmann",
    "participant": "p-0001",
    "course": "PY101",
}


@main.command()
@click.argument("template")
@click.option("--locale", default="en", show_default=True)
@click.option("--var", "extra", multiple=True, callback=variables, help="key=value (repeatable).")
@click.option("--to", "to", help=f"Recipient (default {SAMPLE['to']}).")
@click.option("--name", help=f"Recipient's name (default {SAMPLE['name']}).")
@click.option("--participant", help="Participant id for the link (default p-0001).")
@click.option("--course", help="Course id for the link (default PY101).")
@click.option("--templates", "template_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the .eml here.")
@click.option(
    "--event",
    "event_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="EVENT.toml: for invite, invite_update and invite_cancel (adds the calendar).",
)
@click.option("--sequence", type=click.IntRange(0), help="The calendar SEQUENCE (default 0/1).")
@pass_context
def render(
    obj: Context,
    template: str,
    locale: str,
    extra: dict[str, str],
    to: str | None,
    name: str | None,
    participant: str | None,
    course: str | None,
    template_dir: Path | None,
    out: Path | None,
    event_file: Path | None,
    sequence: int | None,
) -> None:
    """Write a complete message without sending it; sample values fill the gaps."""
    with errors_as_lines(obj.debug):
        config = obj.config(templates=str(template_dir) if template_dir else None)
        calendar = preview_calendar(template, event_file, sequence)
        composed = Sender(config.sender).compose(
            Participant(
                email=to or SAMPLE["to"],
                name=name or SAMPLE["name"],
                participant_id=participant or SAMPLE["participant"],
                course_id=course or SAMPLE["course"],
                locale=locale,
                vars=extra,
            ),
            template=template,
            calendar=calendar,
            code=True,  # shown as the participant would see one; never kept
        )
        if out is None:
            sys.stdout.buffer.write(composed.message.data)
            return
        out.write_bytes(composed.message.data)
    err.print(
        f"wrote {out} ({len(composed.message.data)} bytes, {composed.rendered.template}/"
        f"{composed.rendered.locale}): {composed.rendered.subject}"
    )


@main.group()
def templates() -> None:
    """Work with template sets."""


@templates.command("lint")
@click.option("--templates", "template_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--var", "extra", multiple=True, callback=variables, help="Sample key=value.")
@pass_context
def templates_lint(obj: Context, template_dir: Path | None, extra: dict[str, str]) -> None:
    """Check every template in every locale: variables and the single-link rule.

    Also warns (without failing) about link hosts spam filters score, the configured
    base_url's among them.
    """
    with errors_as_lines(obj.debug):
        base_url = obj.config(quiet=True).sender.links.base_url
        renderer = Renderer(template_dirs=[template_dir] if template_dir else [])
        findings = lint_templates(renderer, base_url=base_url, extra=extra)
        names = renderer.names()
    for finding in findings:
        click.echo(str(finding))
    problems = [finding for finding in findings if not finding.warning]
    if problems:
        fail(f"{len(problems)} problem(s) in {len(names)} template set(s)")
    warnings = len(findings) - len(problems)
    click.echo(
        f"ok: {len(names)} template set(s) pass" + (f", {warnings} warning(s)" if warnings else "")
    )


@templates.command("show")
@click.argument("name")
@click.option("--templates", "template_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable listing.")
@pass_context
def templates_show(obj: Context, name: str, template_dir: Path | None, as_json: bool) -> None:
    """The variables template NAME uses: which sender fills, which come from CSV columns.

    Also its locales, and each locale's variables. Extra CSV columns become variables
    of the same name; sender's own (name, link, ...) cannot be set from the CSV.
    """
    with errors_as_lines(obj.debug):
        dirs = (template_dir,) if template_dir else obj.config(quiet=True).sender.template_dirs
        data = template_needs(Renderer(template_dirs=dirs), name)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return

    def names(key: str) -> str:
        listed = data[key]
        assert isinstance(listed, list)
        return ", ".join(listed) or "-"

    click.echo(f"template {name}: locales {names('locales')}")
    click.echo(f"  filled by sender: {names('filled_by_sender')}")
    click.echo(
        f"  from CSV columns: {names('csv_columns')} (a row without these fails: "
        f"{names('required_columns')})"
    )
    if data["optional_columns"]:
        click.echo(f"  optional CSV columns: {names('optional_columns')} (default: course_id)")
    by_locale = data["by_locale"]
    assert isinstance(by_locale, dict)
    for locale, used in by_locale.items():
        click.echo(f"  {locale}: {', '.join(used)}")


# Filled by sender for every message, or from the event for calendar mail (sender invite).
_EVENT_VARIABLES = frozenset(
    key for key in sample_context("en", base_url="") if key.startswith("event_")
)
_DEFAULTED_COLUMNS = frozenset({"course_name"})  # a column that falls back to course_id


def template_needs(renderer: Renderer, name: str, /) -> dict[str, object]:
    """``templates show``'s data: locales, and the variables by who provides them."""
    locales = renderer.locales(name)
    if not locales:
        raise TemplateNotFound(f"no template named {name!r}", template=name)
    by_locale: dict[str, list[str]] = {}
    for locale in locales:
        used: set[str] = set()
        for variables_of_part in renderer.variables(name, locale).values():
            used |= variables_of_part
        by_locale[locale] = sorted(used)
    every = {variable for used in by_locale.values() for variable in used}
    filled = every & (RESERVED_VARIABLES | _EVENT_VARIABLES)
    optional = every & _DEFAULTED_COLUMNS
    required: set[str] = set()  # columns a row must have, or rendering it fails
    for locale in locales:
        given = {
            key: value
            for key, value in sample_context(locale, base_url="https://lms.example/x").items()
            if key in RESERVED_VARIABLES or key in _EVENT_VARIABLES or key in optional
        }
        required.update(v for _part, v in missing_variables(renderer, name, locale, context=given))
    return {
        "template": name,
        "locales": locales,
        "filled_by_sender": sorted(filled),
        "csv_columns": sorted(every - filled - optional),
        "required_columns": sorted(required - RESERVED_VARIABLES - _EVENT_VARIABLES - optional),
        "optional_columns": sorted(optional),
        "by_locale": by_locale,
    }


def describe(result: DeliveryResult) -> str:
    return f"{result.status.value}: {result.describe()}"


@main.command()
@click.option("--to", "to", required=True, help="The participant's address.")
@click.option("--name", required=True)
@click.option("--participant", required=True, help="The participant's id in the LMS.")
@click.option("--course", required=True)
@click.option("--template", default="invitation", show_default=True)
@click.option("--locale", default="en", show_default=True)
@click.option("--next", "next_path", help="Same-site path to open after login.")
@click.option("--var", "extra", multiple=True, callback=variables, help="key=value (repeatable).")
@smtp_option
@maildir_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (status, reply, message_id, home) and nothing else.",
)
@pass_context
def send(
    obj: Context,
    to: str,
    name: str,
    participant: str,
    course: str,
    template: str,
    locale: str,
    next_path: str | None,
    extra: dict[str, str],
    smtp_url: str | None,
    maildir: Path | None,
    as_json: bool,
) -> None:
    """Send one message to one participant now.

    Exits 0 when the server accepted it, 3 when it refused or deferred it, 1 when it was
    not sent (the address is suppressed).
    """
    with errors_as_lines(obj.debug):
        config = obj.config(smtp_url=smtp_url, maildir=str(maildir) if maildir else None)
        require_real_identity(config)
    person = Participant(to, name, participant, course, locale, extra)

    async def go() -> DeliveryResult:
        # The limits every process shares (a slot ahead of bulk work), the outbox's
        # suppression list, and refusals kept there as bounces.
        async with sending(config, feedback=True) as (_store, s, _scheduler):
            return await s.send(person, template=template, next=next_path)

    result = obj.run(go())
    if as_json:
        click.echo(json.dumps(delivery_json(result) | {"home": str(config.state_dir)}))
        sys.exit(send_exit_code(result))
    if result.status is DeliveryStatus.SUPPRESSED:
        fail(f"not sent: {to} is on the suppression list (see `sender suppress list`)")
    if result.status is DeliveryStatus.UNSUBSCRIBED:
        fail(f"not sent: {to} unsubscribed from this template's stream")
    click.echo(f"{describe(result)} (message {result.message_id})")
    if config.smtp is None:
        click.echo(f"stored in {config.maildir}")
    click.echo(home_line(config))
    sys.exit(send_exit_code(result))


def send_exit_code(result: DeliveryResult) -> int:
    """0 accepted; 1 not sent at all (suppressed, unsubscribed); 3 refused or deferred."""
    if result.ok:
        return EXIT_OK
    if result.status in (DeliveryStatus.SUPPRESSED, DeliveryStatus.UNSUBSCRIBED):
        return EXIT_FAILED
    return EXIT_UNFINISHED


def delivery_json(result: DeliveryResult) -> dict[str, object]:
    """One delivery as plain data: ``send --json``."""
    return result.as_dict() | {"exit_code": send_exit_code(result)}
