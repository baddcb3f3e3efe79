"""The sender domain's health (``sender doctor``, with the Gmail bulk-sender estimate) and
DKIM keys (``sender dkim keygen``): apart from the address checks, so ``sender run`` does
not import the doctor's HTTPS and DKIM libraries."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import click

from sender.checks.doctor import DoctorReport, Fix
from sender.checks.gmail import (
    DEFAULT_DAYS,
    GmailEstimate,
    estimate_from,
    gmail_bulk_estimate,
    gmail_check,
)
from sender.cli.app import (
    EXIT_FAILED,
    Context,
    dns_option,
    err,
    errors_as_lines,
    main,
    out,
    pass_context,
    with_store,
)
from sender.clock import SystemClock
from sender.compose.dkim import DkimKey, dns_record, generate_key
from sender.config import CliConfig
from sender.configured import diagnose_sender
from sender.errors import InputError
from sender.storeurl import store_file

__all__ = ["dkim", "dkim_keygen", "doctor", "gmail_estimate", "print_fixes"]


@main.command()
@click.argument("domain")
@dns_option
@click.option("--spf-include", default="amazonses.com", show_default=True)
@click.option("--dkim-selector", help="Check the DKIM key published under this selector.")
@click.option(
    "--sending-ip",
    "sending_ips",
    multiple=True,
    metavar="IP",
    help="An IP mail leaves from (IPv4 or IPv6): check its PTR and that it resolves back.",
)
@click.option(
    "--gmail-days",
    type=click.IntRange(1, 366),
    default=DEFAULT_DAYS,
    show_default=True,
    help="Days of outbox history for the Gmail bulk-sender estimate.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@pass_context
def doctor(
    obj: Context,
    domain: str,
    dns_server: str | None,
    spf_include: str,
    dkim_selector: str | None,
    sending_ips: tuple[str, ...],
    gmail_days: int,
    as_json: bool,
) -> None:
    """Check a sender domain: SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT, BIMI, PTR, streams.

    Also estimates from the outbox whether this sender is a Gmail bulk sender (5,000 a
    day) and what that requires. Exits 1 when anything fails (or DNS did not answer);
    "warn" lines are recommendations and do not fail.
    """
    with errors_as_lines(obj.debug):
        config = obj.config(quiet=True, dns_server=dns_server)
        report = obj.run(
            diagnose_sender(
                config,
                domain=domain,
                spf_include=spf_include,
                dkim_selector=dkim_selector,
                sending_ips=sending_ips,
            )
        )
        estimate = obj.run(gmail_estimate(config, days=gmail_days))
    report = DoctorReport(report.domain, (*report.checks, gmail_check(estimate, report)))
    if as_json:
        click.echo(
            json.dumps({**report.to_json(), "gmail": estimate.as_dict()}, ensure_ascii=False)
        )
    else:
        for check in report.checks:
            out.print(
                f"{check.mark:<4} {check.name}: {check.message}", overflow="ignore", crop=False
            )
            print_fixes(check.fixes)
    if not report.ok:
        sys.exit(EXIT_FAILED)


async def gmail_estimate(config: CliConfig, *, days: int) -> GmailEstimate:
    """The Gmail bulk-sender estimate from the configured outbox; none yet is nothing sent."""
    now = SystemClock().now()
    path = store_file(config.store)
    if path is not None and not path.exists():  # no outbox yet: do not create one
        return estimate_from([], {}, now=now, days=days)
    return await with_store(config, lambda store: gmail_bulk_estimate(store, now=now, days=days))


def print_fixes(fixes: Iterable[Fix]) -> None:
    for fix in fixes:
        out.print(f"       BIND:    {fix.bind()}", overflow="ignore", crop=False)
        console = fix.console()
        out.print(
            f"       console: host {console['host']}  type {console['type']}  "
            f"value {console['value']}",
            overflow="ignore",
            crop=False,
        )


@main.group()
def dkim() -> None:
    """DKIM keys for signing outgoing mail."""


@dkim.command("keygen")
@click.option("--domain", required=True, help="The signing domain (d=), e.g. learning.example.com.")
@click.option("--selector", required=True, help="The selector (s=), e.g. s2027.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--bits", type=click.IntRange(1024, 4096), default=2048, show_default=True)
@pass_context
def dkim_keygen(obj: Context, domain: str, selector: str, out_file: Path | None, bits: int) -> None:
    """Write a new private key (mode 0600) and print its DNS record in BIND and console forms."""
    with errors_as_lines(obj.debug):
        path = out_file or Path(f"dkim-{selector}.pem")
        pem = generate_key(bits=bits)
        name, value = dns_record(DkimKey(domain, selector, pem))
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise InputError(f"{path} exists; keys are never overwritten", field="out") from exc
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror}", field="out") from exc
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
    err.print(f"wrote {path} (keep it secret); publish this record, then set in sender.toml:")
    err.print(f'  dkim_domain = "{domain}"  dkim_selector = "{selector}"  dkim_key = "{path}"')
    print_fixes([Fix(name, "TXT", value, origin=domain.rstrip(".").lower() + ".")])
