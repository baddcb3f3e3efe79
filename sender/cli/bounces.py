"""Bounces, the inbound listener and the suppression list."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import click

from sender.checks.resolve import DnsSettings, Resolver
from sender.cli.app import (
    Context,
    err,
    errors_as_lines,
    fail,
    mail_files,
    main,
    out,
    pass_context,
    print_home,
    store_for,
    when,
    with_store,
    write_csv_rows,
)
from sender.client import Sender
from sender.compose.mime import envelope_address
from sender.config import CliConfig, parse_duration
from sender.errors import InputError, LinkInvalid
from sender.feedback.bounces import parse_bounce
from sender.feedback.intake import read_mail
from sender.feedback.suppression import (
    REPORT_FIELDS,
    BounceOutcome,
    SenderSideProblem,
    bounce_report,
    ingest_bounce,
)
from sender.feedback.unsubscribe import HOW_MAILTO, mailto_token, unsubscribe
from sender.invites import Invitations
from sender.servers.inbound import Disposition, InboundMail, InboundServer, Route, kept_for_people
from sender.store import Store
from sender.vocabulary import Stream

__all__ = [
    "REPORT_FIELDS",
    "bounce_rules",
    "bounces",
    "bounces_ingest",
    "bounces_parse",
    "bounces_report",
    "check_address",
    "inbound",
    "ingest_bounce_files",
    "serve_inbound",
    "suppress",
    "suppress_add",
    "suppress_list",
    "suppress_remove",
]

# --- bounces and the inbound listener ---------------------------------------------------


@main.group()
def bounces() -> None:
    """Bounces: parse them, record them, and report what to clean up."""


@bounces.command("parse")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="{path: [findings]} as JSON.")
@pass_context
def bounces_parse(obj: Context, files: tuple[Path, ...], as_json: bool) -> None:
    """Classify the bounces in FILES without recording anything."""
    result: dict[str, list[dict[str, str | int | bool | None]]] = {}
    with errors_as_lines(obj.debug):
        for path in files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read {path}: {exc.strerror}", field="path") from exc
            result[str(path)] = [
                {
                    "recipient": finding.recipient,
                    "reason": finding.reason.value,
                    "kind": finding.kind.value,
                    "status": finding.status,
                    "reply_code": finding.reply_code,
                    "suppress": finding.suppress,
                    "action": finding.action.value,
                    "diagnostic": finding.diagnostic,
                }
                for finding in parse_bounce(data)
            ]
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    for path_text, findings in result.items():
        if not findings:
            out.print(f"{path_text}: no bounce")
        for finding in findings:
            out.print(
                f"{path_text}: {finding['recipient'] or '(no address)'} {finding['reason']}"
                f" ({finding['kind']}, {finding['action']}) {finding['status'] or '-'}"
                f" {finding['diagnostic']}",
                overflow="ignore",
                crop=False,
                markup=False,
                highlight=False,
            )


@bounces.command("ingest")
@mail_files
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@pass_context
def bounces_ingest(obj: Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Record the bounces in .eml files, mbox files and Maildir folders; suppress by the rules."""
    config = obj.quiet_config()
    result = obj.answer(ingest_bounce_files(config, paths), as_json=as_json)
    if result is None:
        return
    for line in result["suppressed"]:
        out.print(f"suppressed {line['address']}: {line['why']}")
    out.print(
        f"{result['messages']} message(s) read, {result['findings']} finding(s) recorded, "
        f"{result['forged']} forged, {len(result['suppressed'])} address(es) suppressed, "
        f"{result['not_bounces']} no bounce (left for a person to read)"
    )


def bounce_rules(
    config: CliConfig, store: Store, sender: Sender
) -> partial[Coroutine[Any, Any, list[BounceOutcome]]]:
    """:func:`ingest_bounce` into ``store`` under this home's return-path keys and bounce
    policy: what every command that reads bounces hands each message to."""
    return partial(ingest_bounce, store, return_paths=sender.return_paths, policy=config.bounces)


async def ingest_bounce_files(config: CliConfig, paths: tuple[Path, ...]) -> dict[str, Any]:
    store = store_for(config)
    record = bounce_rules(config, store, Sender(config.sender))
    messages = findings = forged = not_bounces = 0
    suppressed: list[dict[str, str]] = []
    try:
        for item in read_mail(paths):
            messages += 1
            outcomes = await record(item.data, now=time.time(), source=item.source)
            if not outcomes:
                not_bounces += 1
            for outcome in outcomes:
                findings += 1
                forged += outcome.record.forged
                if outcome.suppressed and outcome.record.address:
                    suppressed.append(
                        {"address": outcome.record.address, "why": outcome.suppressed}
                    )
    finally:
        await store.aclose()
    return {
        "messages": messages,
        "findings": findings,
        "forged": forged,
        "suppressed": suppressed,
        "not_bounces": not_bounces,
    }


@bounces.command("report")
@click.option("--since", "since_text", default="7d", show_default=True, help="e.g. 24h, 7d, 30d.")
@click.option(
    "--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), help="Write CSV."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@pass_context
def bounces_report(obj: Context, since_text: str, csv_out: Path | None, as_json: bool) -> None:
    """One row per affected participant: what bounced, what to do, and a fresh Get Link."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
        since = time.time() - parse_duration(since_text, setting="--since").total_seconds()
    rows, problems = obj.run(
        with_store(
            config,
            partial(
                bounce_report,
                since=since,
                now=time.time(),
                policy=config.bounces,
                groups=config.limits.effective_groups(),
            ),
        )
    )
    sender = Sender(config.sender)
    table = [row.as_dict(lambda person: sender.get_link(person).url) for row in rows]
    if csv_out is not None:
        with errors_as_lines(obj.debug):
            write_csv_rows(csv_out, REPORT_FIELDS, table)
        err.print(f"wrote {csv_out} ({len(table)} row(s))")
    people, kept = kept_for_people(config.state_dir / "inbound")
    note = (
        f"{kept} message(s) with no bounce or calendar reply sender understood: "
        f"kept for a person to read in {people}"
    )
    if as_json:
        click.echo(json.dumps(table, ensure_ascii=False))
        for problem in problems:  # the rows say which; stderr sums them up per provider
            err.print(_problem_line(problem), markup=False, highlight=False, crop=False)
        if kept:
            err.print(note, markup=False, highlight=False, overflow="ignore", crop=False)
        return
    if csv_out is None:
        for entry in table:
            who = f"{entry['name']} ({entry['participant_id']})" if entry["name"] else "unknown"
            out.print(
                f"{entry['email']}  {who}  {entry['kind']} {entry['status']} x{entry['count']}"
                f"  -> {entry['action']} ({entry['rule']})",
                overflow="ignore",
                crop=False,
            )
        out.print(f"{len(table)} affected address(es)")
        if problems:
            out.print("sender-side problems (the addresses are fine; fix the sending side):")
        for problem in problems:
            out.print(
                "  " + _problem_line(problem),
                markup=False,
                highlight=False,
                overflow="ignore",
                crop=False,
            )
    if kept and not as_json:
        out.print(note, markup=False, highlight=False, overflow="ignore", crop=False)


def _problem_line(problem: SenderSideProblem) -> str:
    paused = " [bulk mail to it paused]" if problem.paused else ""
    return (
        f"sender-side refusals: {problem.count} from {problem.provider} "
        f"({problem.reason}: {problem.hint}){paused}"
    )


@main.command()
@click.option("--listen", default="127.0.0.1:2525", show_default=True, help="HOST:PORT.")
@click.option("--reply-address", "reply_addresses", multiple=True, help="Calendar-reply address.")
@click.option(
    "--backlog", type=int, help="Connections queued while busy (inbound_backlog, default 1024)."
)
@click.option(
    "--max-sessions",
    type=int,
    help="Open sessions before new clients hear 421 (inbound_max_sessions, default 1000).",
)
@click.option(
    "--max-recipients",
    type=int,
    help="RCPT TOs per message before 452 (inbound_max_recipients, default 100).",
)
@pass_context
def inbound(
    obj: Context,
    listen: str,
    reply_addresses: tuple[str, ...],
    backlog: int | None,
    max_sessions: int | None,
    max_recipients: int | None,
) -> None:
    """Receive bounces (the bounce domain) and calendar replies by SMTP, until Ctrl-C.

    Mail for any other domain is refused as relaying. Replies go to the RSVP reader;
    what cannot be handled is kept raw in .sender/inbound/unprocessed.
    """
    with errors_as_lines(obj.debug):
        config = obj.config(
            quiet=True,
            inbound_backlog=backlog,
            inbound_max_sessions=max_sessions,
            inbound_max_recipients=max_recipients,
        )
        host, _, port_text = listen.rpartition(":")
        if not host or not port_text.isdigit():
            raise InputError(f"--listen wants HOST:PORT, not {listen!r}", field="listen")
    obj.run(serve_inbound(config, host, int(port_text), reply_addresses))


def stream_bounce_domains(config: CliConfig, /) -> list[str]:
    """The streams' own bounce domains besides the top-level one (the listener takes them)."""
    own = {config.sender.for_stream(stream).bounce_domain for stream in Stream}
    return sorted(d for d in own if d and d != config.sender.bounce_domain)


def inbound_handler(
    config: CliConfig, store: Store, sender: Sender, invitations: Invitations
) -> Callable[[InboundMail], Awaitable[Disposition]]:
    """What the inbound listener does with each mail: a bounce is kept by the bounce rules,
    a List-Unsubscribe mail unsubscribes (its token verified), an answer is read."""
    record = bounce_rules(config, store, sender)

    async def on_mail(mail: InboundMail) -> Disposition:
        if mail.route is Route.UNSUBSCRIBE:
            token = mailto_token(mail.recipient)
            try:
                if token is None:
                    raise LinkInvalid("no unsubscribe token")
                await unsubscribe(
                    store, sender.composer.unsubscribes, token, how=HOW_MAILTO, now=time.time()
                )
            except LinkInvalid:
                return Disposition.FOR_PERSON  # forged or damaged: a person may look
            return Disposition.TAKEN
        if mail.route is Route.BOUNCE:
            outcomes = await record(
                mail.data, now=time.time(), envelope_to=mail.recipient, source="inbound"
            )
            if not outcomes or all(o.record.kind == "unknown" for o in outcomes):
                return Disposition.FOR_PERSON  # a person's mail, or nothing we understood
            return Disposition.TAKEN
        if await invitations.record_reply(mail.data, source="inbound"):
            return Disposition.TAKEN
        if await invitations.is_reply(mail.data):
            return Disposition.TAKEN  # an answer seen before
        return Disposition.FOR_PERSON  # written to the reply address by a person

    return on_mail


async def serve_inbound(
    config: CliConfig, host: str, port: int, reply_addresses: tuple[str, ...]
) -> None:
    store = store_for(config)
    sender = Sender(config.sender)
    dns = DnsSettings.from_text(config.dns_server) if config.dns_server else DnsSettings()
    invitations = Invitations(sender, store, resolver=Resolver(dns))
    organizers = {
        json.loads(event.event).get("organizer_email", "") for event in await store.events()
    }
    replies = sorted({a.lower() for a in (*reply_addresses, *organizers) if a})

    on_mail = inbound_handler(config, store, sender, invitations)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with InboundServer(
            bounce_domain=config.sender.bounce_domain,
            bounce_aliases=stream_bounce_domains(config),
            reply_addresses=replies,
            on_mail=on_mail,
            keep_dir=config.state_dir / "inbound",
            host=host,
            port=port,
            limits=config.inbound,
        ) as server:
            err.print(
                f"listening on {server.host}:{server.port} for "
                f"{config.sender.bounce_domain or 'no bounce domain'}"
                f" and {', '.join(replies) or 'no reply address'}; Ctrl-C stops"
            )
            await stop.wait()
    finally:
        await store.aclose()


# --- suppression ---------------------------------------------------------------------


@main.group()
def suppress() -> None:
    """The suppression list: addresses sender never writes to."""


@suppress.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
@pass_context
def suppress_list(obj: Context, as_json: bool) -> None:
    """Every suppressed address, with why and since when."""
    config = obj.quiet_config()
    entries = obj.run(with_store(config, lambda store: store.suppressions()))
    if as_json:
        rows = [
            {"address": e.address, "kind": e.kind, "reason": e.reason, "since": e.since}
            for e in entries
        ]
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for entry in entries:
        out.print(f"{entry.address}  {entry.kind}  since {when(entry.since)}  {entry.reason}")
    out.print(f"{len(entries)} suppressed address(es)")
    print_home(config)


@suppress.command("add")
@click.argument("address")
@click.option("--reason", default="added by hand", show_default=True)
@pass_context
def suppress_add(obj: Context, address: str, reason: str) -> None:
    """Never write to ADDRESS again (until it is removed)."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
        check_address(address)
    added = obj.run(
        with_store(
            config,
            lambda store: store.suppress(address, kind="manual", reason=reason, now=time.time()),
        )
    )
    out.print(f"{address}: {'suppressed' if added else 'was suppressed already'}")
    print_home(config)


@suppress.command("remove")
@click.argument("address")
@click.option("--reason", required=True, help="Why it may be written to again (logged).")
@pass_context
def suppress_remove(obj: Context, address: str, reason: str) -> None:
    """Take ADDRESS off the list; the reason is logged with the time."""
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
        if not reason.strip():
            raise InputError("removing an address needs a reason", field="reason")
    removed = obj.run(
        with_store(config, lambda store: store.unsuppress(address, reason=reason, now=time.time()))
    )
    if not removed:
        fail(f"{address} is not on the suppression list")
    out.print(f"{address}: removed from the suppression list ({reason})")
    print_home(config)


def check_address(address: str) -> None:
    envelope_address(address, field="address")
