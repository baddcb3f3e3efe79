"""dmarc-alignment says "SPF aligns" only when SPF itself passes: real DNS on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from sender.checks.doctor import Check, DoctorReport, diagnose
from sender.checks.resolve import DnsSettings, Resolver
from sender.cli import main
from tests.dns_server import DnsServer
from tests.test_doctor import dkim_txt, new_key, pem

DOMAIN = "learning.example.com"
BOUNCE = f"bounce.{DOMAIN}"
SES = 'amazonses.com. TXT "v=spf1 ip4:199.255.192.0/22 -all"'
DMARC = f'_dmarc.{DOMAIN}. TXT "v=DMARC1; p=reject"'
PASSING = f'{DOMAIN}. TXT "v=spf1 include:amazonses.com ~all"'


async def alignment(
    zone: str,
    *,
    servfail: tuple[str, ...] = (),
    silent: tuple[str, ...] = (),
    **kw: object,
) -> Check:
    # Short waits only where a silent name must time out; a loaded machine answers slowly.
    timeout, lifetime = (0.2, 0.5) if silent else (2.0, 5.0)
    async with DnsServer(zone, servfail=servfail, silent=silent) as server:
        resolver = Resolver(
            DnsSettings(nameserver=(server.host, server.port), timeout=timeout, lifetime=lifetime)
        )
        async with asyncio.timeout(10):
            report: DoctorReport = await diagnose(DOMAIN, resolver=resolver, **kw)  # type: ignore[arg-type]
    return {check.name: check for check in report.checks}["dmarc-alignment"]


async def test_passing_spf_on_the_from_domain_aligns() -> None:
    """SPF that authorizes the provider on the From domain itself is alignment ok via SPF."""
    check = await alignment(f"{SES}\n{PASSING}\n{DMARC}")
    assert check.ok
    assert not check.unknown
    assert "SPF aligns" in check.message


async def test_missing_spf_does_not_align() -> None:
    """No SPF record at all: alignment fails and says SPF fails, never "SPF aligns"."""
    check = await alignment(f'{SES}\n{DMARC}\n{DOMAIN}. TXT "something-else"')
    assert not check.ok
    assert not check.unknown
    assert "SPF aligns" not in check.message
    assert f"SPF for {DOMAIN} does not pass" in check.message


async def test_spf_without_the_provider_does_not_align() -> None:
    """An SPF record that does not authorize the provider fails SPF, so it cannot align."""
    check = await alignment(f'{SES}\n{DMARC}\n{DOMAIN}. TXT "v=spf1 ip4:192.0.2.1 -all"')
    assert not check.ok
    assert "SPF aligns" not in check.message
    assert "does not pass" in check.message


async def test_spf_over_the_lookup_limit_does_not_align() -> None:
    """An SPF record receivers give a PermError (11 lookups) does not align either."""
    many = " ".join(f"a:h{i}.{DOMAIN}" for i in range(11))
    hosts = "\n".join(f"h{i}.{DOMAIN}. A 192.0.2.{i + 1}" for i in range(11))
    zone = f'{SES}\n{DMARC}\n{hosts}\n{DOMAIN}. TXT "v=spf1 include:amazonses.com {many} ~all"'
    check = await alignment(zone)
    assert not check.ok
    assert "SPF aligns" not in check.message


@pytest.mark.parametrize("how", ["servfail", "silent"])
async def test_spf_that_could_not_be_checked_is_unknown(how: str) -> None:
    """SERVFAIL or no answer for the SPF record: alignment is unknown, not "SPF aligns"."""
    zone = f"{SES}\n{DMARC}\n{PASSING}"
    check = await alignment(zone, **{how: (DOMAIN,)})  # type: ignore[arg-type]
    assert not check.ok
    assert check.unknown
    assert "SPF aligns" not in check.message
    assert "could not be checked" in check.message


async def test_failed_spf_with_aligned_dkim_is_ok_via_dkim() -> None:
    """SPF fails but a working DKIM key with d= the From domain aligns: ok, and says why."""
    key = new_key()
    zone = (
        f'{SES}\n{DMARC}\n{DOMAIN}. TXT "v=spf1 -all"\ns1._domainkey.{DOMAIN}. TXT {dkim_txt(key)}'
    )
    check = await alignment(zone, dkim_selector="s1", dkim_private_key=pem(key))
    assert check.ok
    assert "DKIM aligns" in check.message
    assert "SPF aligns" not in check.message
    assert "does not pass" in check.message


async def test_bounce_domain_spf_is_what_aligns() -> None:
    """With a bounce domain, SPF is checked there: no SPF at the bounce domain, no alignment."""
    zone = f"{SES}\n{DMARC}\n{PASSING}\n{BOUNCE}. MX 10 mx.example.com."
    without = await alignment(zone, bounce_domain=BOUNCE)
    assert not without.ok
    assert "SPF aligns" not in without.message
    assert f"SPF for {BOUNCE} does not pass" in without.message
    assert [fix.bind() for fix in without.fixes] == [
        f'{BOUNCE}. IN TXT "v=spf1 include:amazonses.com ~all"'
    ]
    with_spf = await alignment(
        zone + f'\n{BOUNCE}. TXT "v=spf1 include:amazonses.com ~all"', bounce_domain=BOUNCE
    )
    assert with_spf.ok
    assert f"SPF aligns ({BOUNCE}, relaxed)" in with_spf.message


async def test_cli_doctor_does_not_print_ok_alignment_when_spf_fails(workdir: Path) -> None:
    """`sender doctor` prints FAIL for alignment when SPF fails, and ?? when it timed out."""

    def doctor(address: str) -> str:
        result = CliRunner().invoke(
            main, ["doctor", DOMAIN, "--dns-server", address], catch_exceptions=False
        )
        assert result.exit_code == 1, result.output
        return next(line for line in result.stdout.splitlines() if "dmarc-alignment" in line)

    async with DnsServer(f'{SES}\n{DMARC}\n{DOMAIN}. TXT "v=spf1 -all"') as dns:
        failed = await asyncio.to_thread(doctor, dns.address)
    assert failed.startswith("FAIL dmarc-alignment:"), failed
    async with DnsServer(f"{SES}\n{DMARC}", servfail=(DOMAIN,)) as dns:
        unknown = await asyncio.to_thread(doctor, dns.address)
    assert unknown.startswith("??   dmarc-alignment:"), unknown
    assert "could not be checked" in unknown
