"""The ``sender`` command group and what every command shares: context, errors, output.

Commands hold no logic of their own. Every :class:`~sender.errors.SenderError`
becomes one line on stderr and a non-zero exit code; ``--debug`` shows the
traceback for anything unexpected.
"""

from __future__ import annotations

import asyncio
import csv
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn
from rich.progress import Progress as RichProgress

from sender.bulk.runner import (
    Progress,
)
from sender.config import (
    CliConfig,
    load_config,
    parse_duration,
)
from sender.configured import open_sending
from sender.errors import ConfigurationError, InputError, SenderError
from sender.home import KEY_WARNING, first_time
from sender.loop import fast_loop
from sender.store import Store, open_store
from sender.storeurl import redacted_store_url, sqlite_store_url
from sender.vocabulary import MessageState

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PAUSED",
    "EXIT_UNFINISHED",
    "Context",
    "ProgressDisplay",
    "count_bar",
    "dns_option",
    "duration",
    "duration_text",
    "err",
    "errors_as_lines",
    "fail",
    "home_line",
    "json_mode",
    "mail_files",
    "maildir_option",
    "main",
    "out",
    "pass_context",
    "print_home",
    "sending",
    "smtp_option",
    "store_for",
    "store_name",
    "variables",
    "when",
    "with_store",
    "write_csv_rows",
]

T = TypeVar("T")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

# Exit codes (documented in `sender --help` and the README; scripts rely on them).
EXIT_OK = 0  # everything was sent (or the command did what it was asked)
EXIT_FAILED = 1  # the command ran and the answer is "no" (refused input, invalid, ...)
EXIT_CONFIG = 2  # the command could not run as given (also click's usage errors)
EXIT_UNFINISHED = 3  # the run finished with failed or deferred rows (or a send not sent)
EXIT_PAUSED = 4  # the run is paused (bounce budget, relay not answering, ...)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: the run stopped and can be resumed


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True)
    sys.exit(code)


@contextmanager
def errors_as_lines(debug: bool) -> Iterator[None]:
    """Turn our errors into one clear line; only --debug shows tracebacks."""
    try:
        yield
    except ConfigurationError as exc:
        fail(str(exc), EXIT_CONFIG)
    except SenderError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if debug:
            raise
        fail(f"internal error ({type(exc).__name__}: {exc}); rerun with --debug for details")


class Context:
    """What the group resolved for its subcommands."""

    def __init__(
        self,
        *,
        config_file: Path | None,
        debug: bool,
        home: Path | None = None,
        store: str | None = None,
        limits: str | None = None,
    ) -> None:
        self.config_file = config_file
        self.debug = debug
        self.home = home  # --home; None: SENDER_HOME, sender.toml's home, or ./.sender
        self.store = store  # --store; None: SENDER_STORE, sender.toml's store, or the home's
        self.limits = limits  # --limits; None: SENDER_LIMITS, sender.toml's limits, or "store"

    def config(self, *, quiet: bool = False, **overrides: object) -> CliConfig:
        """Settings from flags, environment and sender.toml; warns once per home about a
        generated key (unless ``quiet``)."""
        home = str(self.home) if self.home is not None else None
        given = {"home": home, "store": self.store, "limits": self.limits}
        config = load_config(config_file=self.config_file, overrides=given | overrides)
        generated = config.generated_secret
        if generated is not None and not quiet and first_time(generated.parent / KEY_WARNING):
            err.print(
                "warning: no secret key configured (SENDER_SECRET_KEYS); using the generated "
                f"key in {generated}. Links stop verifying if that file is lost. "
                "(This warning is shown once per home.)",
                style="yellow",
                markup=False,
            )
        return config

    def quiet_config(self) -> CliConfig:
        """:meth:`config` for commands that read or record rather than send: no key warning,
        and a mistake in it is one line, as everywhere."""
        with errors_as_lines(self.debug):
            return self.config(quiet=True)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        with errors_as_lines(self.debug), asyncio.Runner(loop_factory=fast_loop()) as runner:
            return runner.run(coroutine)

    def answer(self, coroutine: Coroutine[Any, Any, T], /, *, as_json: bool) -> T | None:
        """:meth:`run`; with ``as_json`` print the result as JSON and return None, so the
        command prints its human form only when it gets the result back."""
        result = self.run(coroutine)
        if as_json:
            click.echo(json.dumps(result, ensure_ascii=False))
            return None
        return result


pass_context = click.make_pass_decorator(Context)

mail_files = click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
"""PATHS for commands that read mail: .eml files, mbox files and Maildir folders."""


def duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value, setting="--ttl")
    except ConfigurationError as exc:
        fail(str(exc), EXIT_CONFIG)


def variables(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> dict[str, str]:
    result = {}
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value")
        result[key.strip()] = val
    return result


# Loggers that log message content (aiosmtpd: each SMTP line, DATA included; dkimpy
# through sender.dkim.verify: signed header values). WARNING unless named.
CONTENT_LOGGERS = ("mail.log", "mail.debug", "sender.dkim.verify")


def setup_logging(*, verbose: bool, debug: bool, named: Iterable[str] = ()) -> None:
    """Root at WARNING, INFO (-v) or DEBUG (--debug); content loggers quiet unless named.

    ``named`` (``--log-debug NAME``) and ``SENDER_LOG_DEBUG=NAME,NAME`` set those
    loggers to DEBUG, whatever the root level.
    """
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from_env = os.environ.get("SENDER_LOG_DEBUG", "").split(",")
    for name in CONTENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in {n.strip() for n in (*named, *from_env) if n.strip()}:
        logging.getLogger(name).setLevel(logging.DEBUG)


EXIT_CODES_HELP = """\b
Exit codes:
  0    everything was sent
  3    finished with failed or deferred rows (send: refused or deferred)
  4    paused: bounce budget, relay not answering (see `sender status`)
  130  interrupted (`sender resume RUN_ID` continues)
  1    refused input (a bad CSV, every row skipped, ...)
  2    configuration or usage mistake

With --json, run, resume, retry, send, invite and status print one JSON object on
stdout and nothing else."""


class CommandModules(click.Group):
    """The ``sender`` group: a command's module is imported when the command is asked for.

    ``modules`` names the module that registers each command (``sender.cli`` fills it in),
    so ``sender run`` imports what a run uses and not the inbound server, the webhooks or
    the doctor; ``sender --help`` lists them all, and so imports them all.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modules: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.modules})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = self.modules.get(cmd_name)
        if cmd_name not in self.commands and module is not None:
            importlib.import_module(module)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=CommandModules,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES_HELP,
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Settings file (default: ./sender.toml when present).",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where state lives: outbox, suppression list, key, Maildir "
    "(default: SENDER_HOME, home in sender.toml, or ./.sender).",
)
@click.option(
    "--store",
    metavar="URL",
    help="The outbox: sqlite:///path/to/outbox.sqlite3 or postgresql://user@host:port/db "
    "(default: SENDER_STORE, store in sender.toml, or outbox.sqlite3 in the home).",
)
@click.option(
    "--limits",
    metavar="WHERE",
    help="Where the rate limits every sending process shares live: store (the outbox's; "
    "the default) or redis://host:port/db (default: SENDER_LIMITS, limits in sender.toml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log each delivery to stderr.")
@click.option("--debug", is_flag=True, help="Log at DEBUG; show tracebacks for unexpected errors.")
@click.option(
    "--log-debug",
    "log_debug",
    multiple=True,
    metavar="NAME",
    help="Also log NAME at DEBUG, e.g. mail.log (aiosmtpd; it logs whole messages, "
    "tokens included). Also SENDER_LOG_DEBUG=NAME,NAME. Otherwise mail.log, mail.debug "
    "and sender.dkim.verify stay at WARNING, even with --debug.",
)
@click.version_option(package_name="sender")
@click.pass_context
def main(
    ctx: click.Context,
    config_file: Path | None,
    home: Path | None,
    store: str | None,
    limits: str | None,
    verbose: bool,
    debug: bool,
    log_debug: tuple[str, ...],
) -> None:
    """Reach LMS participants by e-mail, with personal login links."""
    setup_logging(verbose=verbose, debug=debug, named=log_debug)
    ctx.obj = Context(config_file=config_file, debug=debug, home=home, store=store, limits=limits)


# --- send and run ----------------------------------------------------------------------

dns_option = click.option(
    "--dns-server", help="HOST:PORT of the nameserver for address checks (default: the system's)."
)

smtp_option = click.option(
    "--transport",
    "--smtp",
    "smtp_url",
    help="smtp://, smtp+starttls://, smtps:// or ses://REGION URL (default: embedded).",
)
maildir_option = click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the embedded capture server stores mail (default .sender/maildir).",
)


def json_mode() -> bool:
    """True inside a command given ``--json``: stdout then carries one JSON object only."""
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.params.get("as_json"))


class ProgressDisplay:
    """A rich progress bar on a terminal; plain lines every few seconds otherwise."""

    def __init__(self, *, enabled: bool | None) -> None:
        """``None``: a bar on a terminal, plain lines otherwise; ``False`` (or --json): silent."""
        self._silent = enabled is False or json_mode()
        self._tty = not self._silent and (err.is_terminal if enabled is None else enabled)
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self._last_line = 0.0

    def __enter__(self) -> ProgressDisplay:
        if self._tty:
            self._bar = RichProgress(
                TextColumn("[bold]{task.fields[run]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[states]}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("ETA {task.fields[eta]}"),
                console=err,
                transient=False,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def update(self, progress: Progress) -> None:
        if self._silent:
            return
        counts = progress.counts
        states = " ".join(
            f"{state.value} {counts.get(state, 0)}"
            for state in (
                MessageState.SENT,
                MessageState.DEFERRED,
                MessageState.FAILED,
                MessageState.SKIPPED,
                MessageState.SUPPRESSED,
            )
            if counts.get(state, 0) or state is MessageState.SENT
        )
        eta = "-" if progress.eta is None else duration_text(progress.eta)
        if progress.slowest is not None and (progress.eta or 0) >= 60:
            eta += f" ({progress.slowest}'s own limit decides; see --domain-rate)"
        rate = f"{progress.rate:.0f}/s"
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(
                    "send",
                    total=progress.total,
                    run=progress.run_id,
                    states="",
                    rate="",
                    eta="",
                )
            self._bar.update(
                self._task,
                completed=progress.done,
                total=progress.total,
                states=states,
                rate=rate,
                eta=eta,
            )
            return
        moment = time.monotonic()
        if moment - self._last_line >= 2.0 or progress.done == progress.total:
            self._last_line = moment
            err.print(
                f"{progress.run_id}: {progress.done}/{progress.total} {states} {rate} ETA {eta}"
            )


@contextmanager
def count_bar(label: str, total: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A bar counting up to ``total`` on a terminal; nothing when output is redirected."""
    if not enabled or not err.is_terminal:
        yield lambda _done: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn())
    with RichProgress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def duration_text(seconds: float) -> str:
    """``45s``, ``12m 5s``, ``2h 50m``, ``3d 4h``: how long, as people say it."""
    total = max(round(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def home_line(config: CliConfig) -> str:
    """``home: /abs/path/.sender``: every summary says where its state lives."""
    return f"home: {config.state_dir}"


def print_home(config: CliConfig) -> None:
    """Print :func:`home_line` with the other summary lines (stdout), and ``store: URL``
    when the outbox is not the home's own."""
    lines = [home_line(config)]
    if not _home_outbox(config):
        lines.append(f"store: {redacted_store_url(config.store)}")
    for line in lines:
        out.print(line, markup=False, highlight=False, overflow="ignore", crop=False)


def store_name(config: CliConfig) -> str:
    """Where the outbox is, as a message says it: the home when the outbox is the home's
    own, else the store URL without its password."""
    return str(config.state_dir) if _home_outbox(config) else redacted_store_url(config.store)


def _home_outbox(config: CliConfig) -> bool:
    return config.store == sqlite_store_url(config.state_dir / "outbox.sqlite3")


def store_for(config: CliConfig) -> Store:
    """The outbox the ``store`` setting names (the home's SQLite file unless set);
    commands see only the :class:`~sender.store.Store` roles."""
    return open_store(config.store)


sending = open_sending
"""The outbox, a paced sender and its scheduler (:func:`sender.configured.open_sending`)."""


async def with_store(config: CliConfig, action: Callable[[Store], Awaitable[T]]) -> T:
    store = store_for(config)
    try:
        return await action(store)
    finally:
        await store.aclose()


def write_csv_rows(path: Path, fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """A CSV with a header row; a path that cannot be written is one clear error."""
    try:
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}", field="csv") from exc
