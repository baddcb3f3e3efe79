"""``sender enqueue`` and ``sender worker``: runs stored for any number of workers to send.

``enqueue`` stores a CSV's run with the settings it was given and returns; ``worker``
drains every active run in the shared store (:class:`~sender.bulk.drain.Drain`), beside
other workers on this host or others. ``sender run`` stays enqueue-and-work in one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from sender.bulk.drain import DrainReport
from sender.bulk.runner import BulkRunner, Enqueued, transport_identity
from sender.cli.app import (
    EXIT_INTERRUPTED,
    Context,
    err,
    errors_as_lines,
    json_mode,
    maildir_option,
    main,
    out,
    pass_context,
    sending,
    smtp_option,
)
from sender.cli.checks import preflight, validator_for
from sender.cli.runs import (
    csv_config,
    csv_run,
    keep_transport,
    run_config,
    run_id_value,
    run_options,
    run_settings,
    run_status_of,
    sending_options,
    switch_transport_option,
)
from sender.config import CliConfig, require_real_identity
from sender.configured import open_drain
from sender.participants import CsvRow
from sender.store import RunInfo

__all__ = ["enqueue", "worker"]

_STORED = ("rate", "domain_rate", "concurrency", "workers")  # a run's own sending options


@main.command()
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--template", default="invitation", show_default=True)
@click.option(
    "--run-id",
    callback=run_id_value,
    help="Name the run (default: from the file's path and template).",
)
@run_options
@switch_transport_option
@pass_context
def enqueue(
    obj: Context,
    /,
    csv_file: Path,
    template: str,
    run_id: str | None,
    progress: bool | None,
    switch_transport: bool,
    **options: Any,
) -> None:
    """Store a CSV's participants as a run for `sender worker` to send, and return at once.

    The run keeps the transport, rate, domain rate and concurrency given now, and any
    worker sends it that way. It prints the run id (--json: the run's status object).
    Enqueueing the same file again queues only added rows and corrected addresses.
    """
    del progress  # nothing is sent here
    with errors_as_lines(obj.debug):
        config = csv_config(obj, csv_file, template, options)
        config, run_id, rows = csv_run(
            obj, config, csv_file, template, run_id, options, switch=switch_transport
        )
        stored = obj.run(
            enqueue_rows(
                config,
                run_id,
                template=template,
                rows=rows,
                source=str(csv_file.resolve()),
                switch_transport=switch_transport,
            )
        )
    if json_mode():
        data = obj.run(run_status_of(config, run_id))
        changes = None if stored.changes is None else dataclasses.asdict(stored.changes)
        click.echo(json.dumps(data | {"changes": changes}, ensure_ascii=False))
        return
    counts = {state.value: n for state, n in stored.counts.items() if n}
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no rows"
    out.print(run_id, markup=False, highlight=False)
    err.print(f"{run_id}: stored ({summary}); `sender worker` sends it")


async def enqueue_rows(
    config: CliConfig,
    run_id: str,
    *,
    template: str,
    rows: Iterable[CsvRow],
    source: str,
    switch_transport: bool,
) -> Enqueued:
    require_real_identity(config)
    async with sending(config) as (store, sender, _scheduler):
        runner = BulkRunner(
            sender,
            store,
            run_settings(config, template=template, switch_transport=switch_transport),
            validator=validator_for(config) if preflight(config) else None,
        )
        return await runner.enqueue(run_id, rows, source=source, options=sending_options(config))


@main.command()
@click.option(
    "--concurrency", type=int, help="Connections in use per run (default: each run's own)."
)
@click.option(
    "--workers",
    type=int,
    help="Processes that compose and send (default: each run's own; at most --concurrency).",
)
@click.option(
    "--exit-when-idle",
    is_flag=True,
    help="Exit once no active run has a message due or in flight (for tests and cron).",
)
@smtp_option
@maildir_option
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=1.0, max=3600.0),
    default=30.0,
    show_default=True,
    help="Seconds without a heartbeat before other workers take back this one's claims.",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.05, max=60.0),
    default=1.0,
    show_default=True,
    help="Seconds an idle worker waits before it looks for work again.",
)
@click.option("--json", "as_json", is_flag=True, help="At exit, print what it sent as JSON.")
@pass_context
def worker(
    obj: Context,
    /,
    concurrency: int | None,
    workers: int | None,
    exit_when_idle: bool,
    smtp_url: str | None,
    maildir: Path | None,
    lease_ttl: float,
    poll: float,
    as_json: bool,
) -> None:
    """Send every active run in the shared store, beside any number of other workers.

    Each run goes through its own stored transport (the password from SENDER_SMTP_URL,
    sender.toml or --smtp naming the same server) at its own limits, shared with every
    other process. SIGTERM or Ctrl-C: in-flight messages finish, unstarted ones go back
    to the queue, and the worker exits with code 130.
    """
    flags: dict[str, Any] = {
        "smtp_url": smtp_url,
        "maildir": maildir,
        "rate": None,
        "domain_rate": None,
        "concurrency": concurrency,
        "workers": workers,
    }
    with errors_as_lines(obj.debug):
        base = run_config(obj, **flags)
    with errors_as_lines(obj.debug):
        report, stopped = obj.run(
            drain(obj, base, flags, exit_when_idle=exit_when_idle, ttl=lease_ttl, poll=poll)
        )
    if as_json:
        payload = {
            "sent_now": report.sent_now,
            "sent": report.sent,
            "finished": report.finished,
            "leases": report.leases,
        }
        click.echo(json.dumps(payload, ensure_ascii=False))
    else:
        finished = f"; finished {', '.join(report.finished)}" if report.finished else ""
        err.print(f"worker: sent {report.sent_now} message(s){finished}")
    if stopped:
        sys.exit(EXIT_INTERRUPTED)


class _RunConfigs:
    """Each run's configuration for this worker, made once per run: its stored options
    under the worker's flags, and its own transport."""

    def __init__(self, obj: Context, base: CliConfig, flags: Mapping[str, Any]) -> None:
        self._obj = obj
        self._flags = flags
        self._identity = transport_identity(base.smtp) if flags.get("smtp_url") else None
        self._made: dict[str, CliConfig] = {}

    def __call__(self, run: RunInfo, /) -> CliConfig:
        made = self._made.get(run.run_id)
        if made is not None:
            return made
        flags = dict(self._flags)
        if self._identity is not None and run.options.get("transport") != self._identity:
            flags["smtp_url"] = None  # --smtp is another server's: the run keeps its own
        merged = {
            key: flags.get(key) if flags.get(key) is not None else run.options.get(key)
            for key in _STORED
        }
        config = keep_transport(
            self._obj, run_config(self._obj, **(flags | merged)), run, flags | merged, switch=False
        )
        require_real_identity(config)
        self._made[run.run_id] = config
        return config


async def drain(
    obj: Context,
    base: CliConfig,
    flags: Mapping[str, Any],
    *,
    exit_when_idle: bool,
    ttl: float,
    poll: float,
) -> tuple[DrainReport, bool]:
    """Run the worker until stopped or idle; its report, and whether a signal stopped it."""
    async with open_drain(
        base, _RunConfigs(obj, base, flags), ttl=ttl, poll=poll, exit_when_idle=exit_when_idle
    ) as work:
        stopped = False

        def stop() -> None:
            nonlocal stopped
            stopped = True
            work.stop()

        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, stop)
            loop.add_signal_handler(signal.SIGTERM, stop)
        return await work.run(), stopped
