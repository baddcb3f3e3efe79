"""Checks before sending: a list's addresses (``sender validate``) and the pre-flight checks
``run``, ``enqueue`` and ``validate`` share. The sender domain and DKIM keys are in
:mod:`sender.cli.doctor`."""

from __future__ import annotations

import json
import sys
from collections.abc import (
    Iterable,
)
from pathlib import Path
from typing import Any

import click

from sender.bulk.ingest import DryRun, address_problem, check_rows, undeliverable
from sender.checks.validate import Validator
from sender.cli.app import (
    EXIT_FAILED,
    Context,
    count_bar,
    dns_option,
    errors_as_lines,
    main,
    out,
    pass_context,
    store_for,
    write_csv_rows,
)
from sender.client import Sender
from sender.config import CliConfig
from sender.configured import resolver_for
from sender.errors import InputError
from sender.participants import CsvRow, read_csv

__all__ = [
    "address_problems",
    "preflight",
    "row_checks",
    "validate",
    "validate_rows",
    "validator_for",
]

# --- checks before sending: addresses -------------------------------------------------------


def preflight(config: CliConfig) -> bool:
    """Check addresses before queueing: on when mail really leaves (an SMTP URL), unless told.

    The embedded capture server delivers nothing, so there are no bounces to avoid.
    """
    return config.validate if config.validate is not None else config.smtp is not None


def validator_for(config: CliConfig) -> Validator:
    """Pre-flight checks for a run: syntax and DNS; suppression stays the engine's."""
    return Validator(resolver_for(config.dns_server))


@main.command()
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@dns_option
@click.option(
    "--template",
    default="invitation",
    show_default=True,
    help="The template `run` would use: its rendering is checked for every row.",
)
@click.option("--json", "as_json", is_flag=True, help="{summary, rows} as JSON.")
@click.option(
    "--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), help="Write a CSV."
)
@pass_context
def validate(
    obj: Context,
    csv_file: Path,
    dns_server: str | None,
    template: str,
    as_json: bool,
    csv_out: Path | None,
) -> None:
    """A verdict per row: ok, invalid, risky or unknown, with the reason and a suggestion.

    Also what `run` will skip, and why: the same row checks run applies (empty fields,
    short rows, bad locales, duplicate participant ids, template problems) plus the
    invalid addresses a run through --smtp skips. Exits 1 when any row is invalid or
    would be skipped. Addresses on the suppression list, or with hard bounces on
    record, are flagged too.
    """
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True, dns_server=dns_server)
        if not csv_file.is_file():
            raise InputError(f"{csv_file} does not exist", field="csv")
        rows = list(read_csv(csv_file))
        dry = row_checks(config, rows, template=template)
    summary = obj.run(validate_rows(config, rows, progress=not as_json))
    skips = {row: reason for row, _email, reason in dry.skipped}
    listed = [
        {
            "row": row,
            "email": check.email,
            "verdict": check.verdict.value,
            "reason": check.reason,
            "suggestion": check.suggestion,
            "skip": skips.get(row) or address_problem(check),
        }
        for row, check in summary.checks
    ]
    unreadable = [
        {
            "row": r.row,
            "email": "",
            "verdict": "invalid",
            "reason": str(r.error),
            "suggestion": None,
            "skip": str(r.error),
        }
        for r in rows
        if r.email is None
    ]
    listed = sorted(listed + unreadable, key=lambda item: int(str(item["row"])))
    counts: dict[str, int] = {verdict.value: n for verdict, n in summary.counts.items()}
    counts["invalid"] = counts.get("invalid", 0) + len(unreadable)
    counts["skipped"] = sum(1 for item in listed if item["skip"])
    if csv_out is not None:
        fields = ["row", "email", "verdict", "reason", "suggestion", "skip"]
        with errors_as_lines(obj.debug):
            write_csv_rows(csv_out, fields, listed)
    if as_json:
        click.echo(json.dumps({"summary": counts, "rows": listed}, ensure_ascii=False))
    else:
        for item in listed:
            where = f"row {item['row']} ({item['email'] or 'no address'})"
            if item["verdict"] != "ok":
                hint = f" — did you mean {item['suggestion']}?" if item["suggestion"] else ""
                out.print(
                    f"{where}: {item['verdict']}: {item['reason']}{hint}",
                    overflow="ignore",
                    crop=False,
                    markup=False,
                )
            if item["row"] in skips and item["skip"] != item["reason"]:
                out.print(
                    f"{where}: run will skip it: {item['skip']}",
                    overflow="ignore",
                    crop=False,
                    markup=False,
                )
        skipped = counts.pop("skipped")
        out.print(
            ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
            + f"; run will skip {skipped} row(s)"
        )
    if counts.get("invalid") or any(item["skip"] for item in listed):
        sys.exit(EXIT_FAILED)


def row_checks(config: CliConfig, rows: Iterable[CsvRow], *, template: str) -> DryRun:
    """What `run` would skip and why (:func:`sender.bulk.ingest.check_rows`), for this template."""
    sender = Sender(config.sender)
    if template not in sender.renderer.names():
        raise InputError(f"no template named {template!r}", field="template")
    return check_rows(sender, rows, template=template)


async def address_problems(config: CliConfig, rows: Iterable[CsvRow]) -> dict[str, str]:
    """Addresses a run through --smtp would skip before queueing, with the reasons."""
    emails = [row.participant.email for row in rows if row.participant is not None]
    return await undeliverable(validator_for(config), emails)


async def validate_rows(config: CliConfig, rows: list[CsvRow], *, progress: bool) -> Any:
    store = store_for(config)
    try:
        validator = Validator(resolver_for(config.dns_server), store=store)
        total = sum(1 for row in rows if row.email is not None)
        with count_bar("checking addresses", total, enabled=progress) as advance:
            return await validator.check_rows(rows, on_progress=advance)
    finally:
        await store.aclose()
