"""Bulk runs: run, resume, retry, status, and the glue that opens store and sender."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import signal
import sys
import time
from collections.abc import (
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from rich.table import Table

from sender.bulk.ingest import DryRun, check_rows
from sender.bulk.runner import (
    BulkRunner,
    RunReport,
    default_run_id,
    transport_identity,
)
from sender.bulk.settings import RUN_ID_MAX, calendar_of, check_run_id
from sender.bulk.status import run_status, status_report
from sender.cli.app import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PAUSED,
    EXIT_UNFINISHED,
    Context,
    ProgressDisplay,
    dns_option,
    err,
    errors_as_lines,
    fail,
    json_mode,
    maildir_option,
    main,
    out,
    pass_context,
    print_home,
    sending,
    smtp_option,
    store_for,
    store_name,
    when,
    with_store,
)
from sender.cli.checks import address_problems, preflight, validator_for
from sender.client import CalendarSend, Sender
from sender.config import CliConfig, require_real_identity
from sender.configured import run_settings, sending_options
from sender.errors import ConfigurationError, InputError
from sender.feedback.suppression import is_budget_pause
from sender.participants import CsvRow, read_csv
from sender.store import MessageState, RunInfo, RunState

__all__ = [
    "bulk",
    "check_rows_of",
    "csv_config",
    "csv_run",
    "describe_limits",
    "finish_run",
    "finish_runs",
    "json_option",
    "keep_transport",
    "print_dry_run",
    "print_run_report",
    "print_status",
    "print_workers",
    "require_template",
    "resume",
    "resume_config",
    "resume_hint",
    "resume_run",
    "retry",
    "run",
    "run_config",
    "run_exit_code",
    "run_id_value",
    "run_json",
    "run_options",
    "run_settings",
    "run_status_of",
    "sending_options",
    "status",
    "status_of",
    "stored_run",
    "switch_transport_option",
]

# --- bulk runs -------------------------------------------------------------------------


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object on stdout (run id, state, counts, skipped rows with "
    "reasons, next retry; the shape of `status --json`) and nothing else; no progress.",
)


def run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The sending options shared by run, resume and retry."""
    for option in reversed(
        [
            smtp_option,
            maildir_option,
            click.option("--rate", type=float, help="Global messages per second (0: no limit)."),
            click.option(
                "--domain-rate", help="Default limit per recipient domain, e.g. 30/min (0: none)."
            ),
            click.option("--concurrency", type=int, help="Connections in use (1 to 256)."),
            click.option(
                "--workers",
                type=int,
                help="Processes that compose and send (default 1; at most --concurrency, 64).",
            ),
            click.option(
                "--relay-timeouts",
                type=int,
                help="Timeouts in a row per connection before the run pauses as "
                "'relay not answering' (default 3).",
            ),
            click.option(
                "--validate/--no-validate",
                default=None,
                help="Check addresses (syntax, DNS) before queueing (default: on with --smtp).",
            ),
            json_option,
            dns_option,
            click.option(
                "--progress/--no-progress",
                default=None,
                help="Progress bar on a terminal, plain lines otherwise; --no-progress: quiet.",
            ),
        ]
    ):
        function = option(function)
    return function


switch_transport_option = click.option(
    "--switch-transport",
    is_flag=True,
    help="Send the rest of an existing run (or an event's mail) through the transport "
    "given now (--smtp, SENDER_SMTP_URL, or the capture server) instead of the one it "
    "was sent through so far.",
)


def run_id_value(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--run-id``, checked by :func:`~sender.bulk.settings.check_run_id`: a name that
    cannot identify a run is a usage mistake (exit 2), refused before any run exists."""
    if value is None:
        return None
    try:
        return check_run_id(value)
    except InputError as exc:
        fail(f"--run-id {exc.args[0].removeprefix('the run id ')}", EXIT_CONFIG)


def run_config(
    obj: Context,
    *,
    smtp_url: str | None,
    maildir: Path | None,
    rate: float | None,
    domain_rate: str | None,
    concurrency: int | None,
    workers: int | None,
    validate: bool | None = None,
    dns_server: str | None = None,
    as_json: bool = False,  # --json: how to print (json_mode), not a setting
    relay_timeouts: int | None = None,
) -> CliConfig:
    del as_json
    return obj.config(
        validate=validate,
        dns_server=dns_server,
        smtp_url=smtp_url,
        maildir=str(maildir) if maildir else None,
        rate=rate,
        domain_rate=domain_rate,
        concurrency=concurrency,
        workers=workers,
        relay_timeouts=relay_timeouts,
    )


@main.command()
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--template", default="invitation", show_default=True)
@click.option(
    "--run-id",
    callback=run_id_value,
    help=f"Name the run, up to {RUN_ID_MAX} printable characters "
    "(default: from the file's path and template).",
)
@click.option("--dry-run", is_flag=True, help="Render and check every row; send nothing.")
@run_options
@switch_transport_option
@pass_context
def run(
    obj: Context,
    /,
    csv_file: Path,
    template: str,
    run_id: str | None,
    dry_run: bool,
    progress: bool | None,
    switch_transport: bool,
    **options: Any,
) -> None:
    """Send one message to each participant in a CSV, durably.

    Columns: email,name,participant_id,course_id[,locale] plus any extra
    columns, which become template variables. Running the same file again (or
    `sender resume RUN_ID`) continues where it stopped and never sends twice;
    after the file was edited, it sends to added rows and corrected addresses only.
    """
    with errors_as_lines(obj.debug):
        config = csv_config(obj, csv_file, template, options)
        if dry_run:
            dry = obj.run(check_rows_of(config, csv_file, template=template))
            print_dry_run(dry, csv_file)
            sys.exit(EXIT_FAILED if dry.skipped and not dry.ok else 0)
        config, run_id, rows = csv_run(
            obj, config, csv_file, template, run_id, options, switch=switch_transport
        )
    report = obj.run(
        bulk(
            config,
            run_id,
            template=template,
            rows=rows,
            source=str(csv_file.resolve()),
            progress=progress,
            switch_transport=switch_transport,
        )
    )
    finish_run(obj, config, report)


def csv_config(obj: Context, csv_file: Path, template: str, flags: Mapping[str, Any]) -> CliConfig:
    """The configuration a CSV's run starts from, once the file and template are known to
    exist (``sender run``, ``sender enqueue``)."""
    config = run_config(obj, **flags)
    if not csv_file.is_file():
        raise InputError(f"{csv_file} does not exist", field="csv")
    require_template(config, template)
    return config


def csv_run(
    obj: Context,
    config: CliConfig,
    csv_file: Path,
    template: str,
    run_id: str | None,
    flags: Mapping[str, Any],
    *,
    switch: bool,
) -> tuple[CliConfig, str, Iterable[CsvRow]]:
    """The run a CSV file makes (``sender run``, ``sender enqueue``): the configuration it
    sends with, its id (``--run-id`` or from the path), and its rows, the header read
    already, so a file it refuses leaves no run behind."""
    if run_id is None:
        run_id = obj.run(
            with_store(config, lambda store: default_run_id(store, csv_file, template))
        )
    config = keep_transport(obj, config, stored_run(obj, config, run_id), flags, switch=switch)
    rows = read_csv(csv_file)
    first = next(rows, None)
    return config, run_id, itertools.chain([] if first is None else [first], rows)


@main.command()
@click.argument("run_id")
@click.option(
    "--force", is_flag=True, help="Send even though the bounce budget is spent (after clean-up)."
)
@run_options
@switch_transport_option
@pass_context
def resume(
    obj: Context,
    /,
    run_id: str,
    force: bool,
    progress: bool | None,
    switch_transport: bool,
    **options: Any,
) -> None:
    """Continue a run that was interrupted, crashed, paused, or has retries due.

    It sends through the transport the run was started with (the password from
    SENDER_SMTP_URL, sender.toml or --smtp naming the same server; another server needs
    --switch-transport) and with its limits, unless flags say otherwise. A run the bounce
    budget paused stays paused while the budget is still spent, unless --force.
    """
    with errors_as_lines(obj.debug):
        config = resume_config(obj, run_id, options, switch=switch_transport)
    report = obj.run(
        resume_run(
            config, run_id, progress=progress, force=force, switch_transport=switch_transport
        )
    )
    finish_run(obj, config, report)


@main.command()
@click.argument("run_id")
@run_options
@switch_transport_option
@pass_context
def retry(
    obj: Context, /, run_id: str, progress: bool | None, switch_transport: bool, **options: Any
) -> None:
    """Send again to the run's failed and not-yet-sent recipients; never to those sent.

    Like resume, it sends through the run's own transport unless --switch-transport.
    """
    with errors_as_lines(obj.debug):
        config = resume_config(obj, run_id, options, switch=switch_transport)
    report = obj.run(
        resume_run(
            config,
            run_id,
            progress=progress,
            reset_failed=True,
            switch_transport=switch_transport,
        )
    )
    finish_run(obj, config, report)


@main.command()
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable status.")
@click.option("--all", "all_runs", is_flag=True, help="List the runs, newest first (at most 100).")
@pass_context
def status(obj: Context, run_id: str | None, as_json: bool, all_runs: bool) -> None:
    """Counts per state, progress per domain, next retry, skipped rows and why a run is paused.

    --all lists the runs instead: id, template, state, counts and when each was created.
    Both list the workers holding a live lease (none: nothing is printed); with --json,
    `workers` is a list of {owner, host, pid, started_at, heartbeat_at, heartbeat_age
    (seconds since its last heartbeat), runs (the run ids whose lease it holds), exited
    (a process of this host that is gone; its claims go back when its lease expires)}.
    """
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True)
        if all_runs and run_id is not None:
            raise InputError("--all lists every run; give no RUN_ID with it", field="run_id")
    data = obj.run(status_of(config, run_id, all_runs=all_runs))
    if as_json:
        click.echo(json.dumps(data | {"home": str(config.state_dir)}, ensure_ascii=False))
        return
    if all_runs:
        print_run_list(data["runs"])
    else:
        print_status(data)
    print_workers(data["workers"])
    print_sender_side(data["sender_side"])
    print_complaints(data["complaints"])
    print_home(config)


# --- bulk glue: open the store and sender, run, print ---------------------------------


async def bulk(
    config: CliConfig,
    run_id: str,
    *,
    template: str,
    rows: Iterable[CsvRow] | None,
    source: str,
    progress: bool | None,
    reset_failed: bool = False,
    calendar: CalendarSend | None = None,
    force: bool = False,
    switch_transport: bool = False,
) -> RunReport:
    require_real_identity(config)
    err.print(f"{run_id}: {describe_limits(config)}")
    async with sending(config) as (store, sender, _scheduler):
        runner = BulkRunner(
            sender,
            store,
            run_settings(
                config,
                template=template,
                calendar=calendar,
                force=force,
                switch_transport=switch_transport,
            ),
            validator=validator_for(config) if preflight(config) else None,
        )
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not main thread
            loop.add_signal_handler(signal.SIGINT, runner.stop)
            loop.add_signal_handler(signal.SIGTERM, runner.stop)
        with ProgressDisplay(enabled=progress) as display:
            return await runner.run(
                run_id,
                rows,
                source=source,
                options=sending_options(config),
                on_progress=display.update,
                retry_failed=reset_failed,
            )


def describe_limits(config: CliConfig) -> str:
    per_second = config.limits.global_per_second
    per_minute = config.limits.domain_per_minute
    overall = f"at most {per_second:g} msgs/s" if per_second else "no overall rate limit"
    domain = f"{per_minute:g}/min per domain" if per_minute else "no per-domain limit"
    processes = f" in {config.workers} worker processes" if config.workers > 1 else ""
    return f"sending {overall}, {domain}, {config.concurrency} at a time{processes}"


def stored_run(obj: Context, config: CliConfig, run_id: str) -> RunInfo | None:
    return obj.run(with_store(config, lambda store: store.get_run(run_id)))


def resume_config(
    obj: Context, run_id: str, flags: dict[str, Any], *, switch: bool = False
) -> CliConfig:
    """Flags given now win; otherwise the run's own stored limits; then sender.toml.

    The run's own transport is kept (:func:`keep_transport`); after ``switch`` the limits
    it was started with are not reused either, since they were meant for another server.
    """
    info = stored_run(obj, run_config(obj, **flags), run_id)
    if info is None:
        raise InputError(f"no run named {run_id!r}; see `sender status`", field="run_id")
    keys = ("rate", "domain_rate", "concurrency", "workers")
    stored = {key: None if switch else info.options.get(key) for key in keys}
    merged = {key: flags.get(key) if flags.get(key) is not None else stored[key] for key in stored}
    return keep_transport(
        obj, run_config(obj, **(flags | merged)), info, flags | merged, switch=switch
    )


def keep_transport(
    obj: Context,
    config: CliConfig,
    info: RunInfo | None,
    flags: Mapping[str, Any],
    *,
    switch: bool,
) -> CliConfig:
    """``config`` sending through the transport ``info`` was started with.

    An SMTP server that needs a login gets its password from the configuration of the
    day (SENDER_SMTP_URL, sender.toml or --smtp naming the same server, user and port);
    without one that is an error, never a silent fall-back to the capture server. --smtp
    naming another transport is refused unless ``switch``; SENDER_SMTP_URL or sender.toml
    naming another one is set aside with a note.
    """
    stored = info.options.get("transport") if info is not None else None
    if info is None or switch or not isinstance(stored, str):
        return config  # a new run, a switch, or a run from before transports were kept
    current = transport_identity(config.smtp)
    if stored == current:
        return config
    if flags.get("smtp_url") is not None:
        raise ConfigurationError(
            f"run {info.run_id} sends through {stored}, but --smtp names {current}; "
            "add --switch-transport to send the rest through it",
            setting="smtp_url",
        )
    if stored == transport_identity(None):
        smtp = None
    elif urlsplit(stored).username is not None:
        raise ConfigurationError(
            f"run {info.run_id} sends through {stored}, and no password for it is "
            "configured: set SENDER_SMTP_URL (or smtp_url in sender.toml) to that server's "
            "URL with its password, or give it with --smtp",
            setting="smtp_url",
        )
    else:
        smtp = run_config(obj, **(dict(flags) | {"smtp_url": stored})).smtp
    err.print(
        f"note: run {info.run_id} keeps sending through {stored}, not {current}; "
        "--switch-transport changes that",
        style="yellow",
    )
    return dataclasses.replace(config, smtp=smtp)


async def resume_run(
    config: CliConfig,
    run_id: str,
    *,
    progress: bool | None,
    reset_failed: bool = False,
    force: bool = False,
    switch_transport: bool = False,
) -> RunReport:
    store = store_for(config)
    try:
        run_info = await store.get_run(run_id)
    finally:
        await store.aclose()
    if run_info is None:
        raise InputError(f"no run named {run_id!r}; see `sender status`", field="run_id")
    rows: Iterable[CsvRow] | None = None
    if not run_info.ingest_complete and run_info.event_uid is None:
        source = Path(run_info.source)
        if not await asyncio.to_thread(source.is_file):
            raise InputError(
                f"run {run_id} was not fully read from {source}, which is gone", field="csv"
            )
        rows = read_csv(source)
    return await bulk(
        config,
        run_id,
        template=run_info.template,
        rows=rows,
        source=run_info.source,
        progress=progress,
        reset_failed=reset_failed,
        calendar=calendar_of(run_info),
        force=force,
        switch_transport=switch_transport,
    )


async def run_status_of(config: CliConfig, run_id: str | None) -> dict[str, object]:
    store = store_for(config)
    try:
        return await run_status(store, run_id, now=time.time())
    except InputError as exc:
        raise InputError(f"{exc.args[0]} in {store_name(config)}", field=exc.field) from exc
    finally:
        await store.aclose()


async def print_run_report(config: CliConfig, report: RunReport) -> None:
    store = store_for(config)
    try:
        problems = await store.problems(report.run.run_id, limit=20)
        skipped = await store.skipped(report.run.run_id, limit=SKIPPED_SHOWN)
    finally:
        await store.aclose()
    table = Table(
        title=f"run {report.run.run_id}: {report.total} participant(s), "
        f"{report.sent_now} sent now in {report.elapsed:.1f} s",
        title_justify="left",
    )
    table.add_column("state")
    table.add_column("count", justify="right")
    for state in MessageState:
        table.add_row(state.value, str(report.counts.get(state, 0)))
    out.print(table)
    if report.changes is not None:
        out.print(f"Rows read again, by participant id: {report.changes.describe()}.")
    if report.retried:
        out.print(f"{report.retried} failed or deferred message(s) queued again.")
    if report.requeued:
        out.print(
            f"{report.requeued} message(s) were in flight when the last worker stopped; "
            "they were sent again (same Message-ID)."
        )
    print_skipped(
        [{"row": row, "email": email, "reason": reason} for row, email, reason in skipped],
        report.counts.get(MessageState.SKIPPED, 0),
    )
    for row, email_address, state, reason in problems:
        out.print(f"  row {row} ({email_address}): {state.value}: {reason}")
    if report.next_attempt_at is not None:
        out.print(
            f"Deferred messages retry from {when(report.next_attempt_at)}: "
            f"run `sender resume {report.run.run_id}` then."
        )
    if report.run.state is RunState.PAUSED:
        out.print(
            resume_hint(report.run.run_id, report.run.paused_reason),
            overflow="ignore",
            crop=False,
            markup=False,
        )
    if config.smtp is None:
        out.print(
            f"Messages are in {config.maildir}/new (embedded capture server; "
            "use --smtp or SENDER_SMTP_URL to send for real)."
        )
    else:
        out.print(f"Sent through {config.smtp.redacted_url()}.")
    print_home(config)
    if report.first_sent is not None:
        participant = report.first_sent
        url = Sender(config.sender).get_link(participant).url
        out.print(
            f"Get Link for {participant.name} ({participant.participant_id}), "
            "to share by hand if mail does not arrive:"
        )
        out.print(f"  {url}", overflow="ignore", crop=False)


def require_template(config: CliConfig, template: str) -> None:
    """An unknown template is refused before any run is created."""
    if template not in Sender(config.sender).renderer.names():
        raise InputError(f"no template named {template!r}", field="template")


async def check_rows_of(config: CliConfig, csv_file: Path, *, template: str) -> DryRun:
    """The dry run: the row checks of a real run, with its address checks when it would
    check addresses (--smtp, or --validate)."""
    require_template(config, template)
    rows = list(read_csv(csv_file))
    invalid = await address_problems(config, rows) if preflight(config) else None
    return check_rows(Sender(config.sender), rows, template=template, undeliverable=invalid)


def print_dry_run(dry: DryRun, csv_file: Path) -> None:
    if json_mode():
        payload = {
            "would_send": dry.ok,
            "skipped": [
                {"row": row, "email": email, "reason": reason} for row, email, reason in dry.skipped
            ],
            "fallbacks": dict(dry.fallbacks),
        }
        click.echo(json.dumps(payload, ensure_ascii=False))
        return
    out.print(f"{csv_file}: {dry.ok} message(s) would be sent, {len(dry.skipped)} skipped")
    for row, email_address, reason in dry.skipped[:50]:
        out.print(f"  row {row} ({email_address or 'no address'}): {reason}")
    if len(dry.skipped) > 50:
        out.print(f"  ... and {len(dry.skipped) - 50} more")
    for locale, count in sorted(dry.fallbacks.items()):
        out.print(f"  {count} row(s) asked for locale {locale!r}; they get the closest one")


SKIPPED_SHOWN = 20  # skipped rows a report prints; `status --json` lists more


def print_skipped(skipped: Sequence[Mapping[str, Any]], total: int) -> None:
    """``row N (address): skipped: reason`` for each, and how many more there are."""
    for item in skipped:
        out.print(
            f"  row {item['row']} ({item['email'] or 'no address'}): skipped: {item['reason']}",
            overflow="ignore",
            crop=False,
            markup=False,
        )
    if total > len(skipped):
        out.print(f"  ... and {total - len(skipped)} more skipped (see `sender status --json`)")


def resume_hint(run_id: str, reason: str | None) -> str:
    """What to do about a paused run; a bounce-budget pause needs --force to go on now."""
    reason = reason or "paused"
    if is_budget_pause(reason):
        return (
            f"Paused ({reason}). `sender resume {run_id}` pauses again while the budget is "
            f"spent; after cleaning up, `sender resume {run_id} --force` sends anyway."
        )
    return f"Paused ({reason}); continue with `sender resume {run_id}`."


def run_exit_code(report: RunReport) -> int:
    """0 all sent; 3 failed or deferred rows; 4 paused; 130 interrupted; 1 nothing sendable."""
    counts = report.counts
    if report.run.state is RunState.PAUSED:
        return EXIT_INTERRUPTED if report.run.paused_reason == "interrupted" else EXIT_PAUSED
    if counts.get(MessageState.FAILED, 0) or counts.get(MessageState.DEFERRED, 0):
        return EXIT_UNFINISHED
    if report.total and not counts.get(MessageState.SENT, 0):
        return EXIT_FAILED  # every row was skipped or suppressed: the input was refused
    return EXIT_OK


_EXIT_SEVERITY = (EXIT_OK, EXIT_FAILED, EXIT_UNFINISHED, EXIT_PAUSED, EXIT_INTERRUPTED)


async def run_json(config: CliConfig, report: RunReport) -> dict[str, object]:
    """``status --json``'s object for the run, plus what this invocation did."""
    data = await run_status_of(config, report.run.run_id)
    return data | {
        "sent_now": report.sent_now,
        "requeued": report.requeued,
        "retried": report.retried,
        "elapsed": round(report.elapsed, 3),
        "exit_code": run_exit_code(report),
        "home": str(config.state_dir),
        # rows given again to the run, matched by participant id: new, corrected, ...
        "changes": None if report.changes is None else dataclasses.asdict(report.changes),
    }


def finish_runs(
    obj: Context,
    config: CliConfig,
    reports: Sequence[RunReport],
    *,
    extra: Mapping[str, object] | None = None,
) -> int:
    """Print the reports (with --json: one object, ``{runs: [...]}`` plus ``extra``); the
    most severe of their exit codes."""
    if json_mode():
        runs = [obj.run(run_json(config, report)) for report in reports]
        payload = dict(extra or {}) | {"runs": runs, "home": str(config.state_dir)}
        click.echo(json.dumps(payload, ensure_ascii=False))
    else:
        for report in reports:
            obj.run(print_run_report(config, report))
    codes = [run_exit_code(report) for report in reports] or [EXIT_OK]
    return max(codes, key=_EXIT_SEVERITY.index)


def finish_run(obj: Context, config: CliConfig, report: RunReport) -> None:
    """Print the report (with --json, :func:`run_json`'s object alone) and exit with its code.

    Exit codes: 0 all sent, 3 finished with failed or deferred rows, 4 paused,
    130 interrupted, 1 nothing could be sent (every row refused).
    """
    if json_mode():
        click.echo(json.dumps(obj.run(run_json(config, report)), ensure_ascii=False))
    else:
        obj.run(print_run_report(config, report))
    code = run_exit_code(report)
    if code != EXIT_OK:
        sys.exit(code)


async def status_of(config: CliConfig, run_id: str | None, *, all_runs: bool) -> dict[str, Any]:
    """``status --json``'s object (:func:`~sender.bulk.status.status_report`)."""
    store = store_for(config)
    try:
        return await status_report(
            store,
            run_id,
            all_runs=all_runs,
            now=time.time(),
            policy=config.bounces,
            groups=config.limits.effective_groups(),
            domains=config.sender.sending_domains(),
        )
    except InputError as exc:
        raise InputError(f"{exc.args[0]} in {store_name(config)}", field=exc.field) from exc
    finally:
        await store.aclose()


def print_run_list(runs: Sequence[Mapping[str, Any]]) -> None:
    if not runs:
        out.print("no runs yet")
        return
    table = Table(title="runs, newest first", title_justify="left")
    table.add_column("run", no_wrap=True)  # the id `resume` needs: never cut
    table.add_column("template", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("messages")
    table.add_column("created (UTC)", no_wrap=True)
    for item in runs:
        counts = item["counts"]
        table.add_row(
            item["run_id"],
            item["template"],
            item["state"],
            ", ".join(
                f"{name} {counts[name]}"
                for name in ("sent", "queued", "deferred", "failed", "skipped", "suppressed")
                if counts.get(name) or name == "sent"
            ),
            datetime.fromtimestamp(item["created_at"], UTC).strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


def print_status(data: Mapping[str, Any]) -> None:
    state = data["state"]
    if data["running"]:
        state = f"{state}, being sent by {data['owner']}"
    out.print(f"run {data['run_id']} ({data['template']}, from {data['source']}): {state}")
    if data["state"] == "queued":
        out.print("waiting for a worker: start `sender worker` to send it")
    if data["state"] == "interrupted":
        out.print(
            "its process stopped without finishing (killed or crashed); "
            f"continue with `sender resume {data['run_id']}`"
        )
    if data["paused_reason"]:
        out.print(f"paused since {when(data['paused_since'])}: {data['paused_reason']}")
        if data["state"] == "paused" and is_budget_pause(data["paused_reason"]):
            out.print(resume_hint(data["run_id"], data["paused_reason"]), markup=False)
    counts = data["counts"]
    out.print("  ".join(f"{name} {count}" for name, count in counts.items()))
    print_skipped(data["skipped"], counts.get("skipped", 0))
    if data["next_attempt_at"] is not None:
        out.print(f"next retry: {when(data['next_attempt_at'])}")
    domains = sorted(
        data["domains"], key=lambda d: -sum(d["counts"].get(s, 0) for s in ("queued", "deferred"))
    )
    if domains:
        table = Table(title="per domain", title_justify="left")
        table.add_column("domain")
        for name in ("sent", "queued", "deferred", "failed", "skipped"):
            table.add_column(name, justify="right")
        table.add_column("next retry")
        for item in domains[:20]:
            table.add_row(
                item["domain"],
                *(
                    str(item["counts"].get(name, 0))
                    for name in ("sent", "queued", "deferred", "failed", "skipped")
                ),
                when(item["next_attempt_at"]),
            )
        out.print(table)
        if len(domains) > 20:
            out.print(f"... and {len(domains) - 20} more domains (see --json)")


def print_sender_side(problems: Sequence[Mapping[str, Any]]) -> None:
    """Refusals of the sender or the message in the last 24 h, per provider and reason."""
    if not problems:
        return
    out.print("sender-side refusals (24 h; nobody was suppressed for them):")
    for item in problems:
        paused = "  [bulk mail to it paused]" if item["paused"] else ""
        out.print(
            f"  {item['count']} from {item['provider']} ({item['reason']}: {item['hint']}){paused}",
            markup=False,
            highlight=False,
            overflow="ignore",
            crop=False,
        )


def print_complaints(rates: Sequence[Mapping[str, Any]]) -> None:
    """Complaint rates above the warning line (24 h), per stream and sending domain."""
    for item in rates:
        if item["level"] not in ("warn", "pause"):
            continue
        what = f"{item['name']} mail" if item["scope"] == "stream" else f"mail from {item['name']}"
        action = (
            "bulk runs of it pause" if item["level"] == "pause" else "warning: keep it below 0.3%"
        )
        out.print(
            f"complaint rate {item['rate']:.2%} for {what}: {item['complaints']} complaint(s) "
            f"for {item['delivered']} delivered in 24 h ({action})",
            markup=False,
            highlight=False,
            overflow="ignore",
            crop=False,
        )


def print_workers(workers: Sequence[Mapping[str, Any]]) -> None:
    """The workers holding a lease, one line each; nothing when there are none."""
    if not workers:
        return
    out.print(f"workers holding a lease: {len(workers)}")
    for worker in workers:
        runs = f", sending {', '.join(worker['runs'])}" if worker["runs"] else ""
        gone = " (process gone; its claims go back when the lease expires)"
        out.print(
            f"  {worker['host']} pid {worker['pid']}: heartbeat {worker['heartbeat_age']:g} s ago"
            f"{runs}{gone if worker['exited'] else ''}",
            overflow="ignore",
            crop=False,
            markup=False,
        )
