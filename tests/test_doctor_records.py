"""The doctor's later checks against planted faults on the test DNS server.

TLS-RPT, BIMI, DMARC's np and the tags RFC 9989 removed, PTR with forward confirmation
(IPv4 and IPv6), and the per-stream From and DKIM domains. MTA-STS, which needs HTTPS
too, is in test_mtasts.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa

from sender.checks.doctor import Check, DoctorReport, StreamIdentity, diagnose, stream_checks
from sender.checks.mtasts import FetchedPolicy
from sender.checks.resolve import DnsSettings, Resolver
from sender.cli import main
from sender.errors import ConfigurationError
from tests.dns_server import DnsServer
from tests.test_doctor import dkim_txt, new_key, pem

DOMAIN = "learning.example.com"
SES = 'amazonses.com. TXT "v=spf1 ip4:199.255.192.0/22 -all"'
BASE = f"""
{SES}
{DOMAIN}. TXT "v=spf1 include:amazonses.com ~all"
_dmarc.{DOMAIN}. TXT "v=DMARC1; p=reject"
"""
V4 = "192.0.2.25"
V6 = "2001:db8::25"


async def no_fetch(domain: str, /) -> FetchedPolicy:
    """A fetcher for zones without an MTA-STS record: it must never be called."""
    raise AssertionError(f"fetched the MTA-STS policy of {domain}")


async def report_for(zone: str, **kw: object) -> DoctorReport:
    async with DnsServer(zone) as server, asyncio.timeout(20):
        resolver = Resolver(DnsSettings(nameserver=(server.host, server.port)))
        return await diagnose(DOMAIN, resolver=resolver, fetch_policy=no_fetch, **kw)  # type: ignore[arg-type]


async def check(zone: str, name: str, **kw: object) -> Check:
    return {c.name: c for c in (await report_for(zone, **kw)).checks}[name]


# --- TLS-RPT --------------------------------------------------------------------------


async def test_tls_rpt_names_where_reports_go() -> None:
    """A v=TLSRPTv1 record with a mailto: rua passes and names the address."""
    found = await check(
        BASE + f'_smtp._tls.{DOMAIN}. TXT "v=TLSRPTv1; rua=mailto:tls@{DOMAIN}"', "tls-rpt"
    )
    assert found.mark == "ok"
    assert f"mailto:tls@{DOMAIN}" in found.message


async def test_missing_tls_rpt_warns_with_the_record() -> None:
    """No TLS-RPT record: a warning (the report stays ok) with the record in both forms."""
    report = await report_for(BASE)
    found = {c.name: c for c in report.checks}["tls-rpt"]
    assert found.mark == "warn"
    assert report.ok
    (fix,) = found.fixes
    assert fix.bind() == (
        f'_smtp._tls.{DOMAIN}. IN TXT "v=TLSRPTv1; rua=mailto:tls-reports@{DOMAIN}"'
    )
    assert fix.console() == {
        "host": "_smtp._tls",
        "type": "TXT",
        "value": f"v=TLSRPTv1; rua=mailto:tls-reports@{DOMAIN}",
    }


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ('"v=TLSRPTv2; rua=mailto:tls@example.com"', "must start with v=TLSRPTv1"),
        ('"v=TLSRPTv1; ruf=mailto:tls@example.com"', "has no rua="),
        ('"v=TLSRPTv1; rua=ftp://example.com/x"', "mailto: or https: URIs only"),
    ],
    ids=["wrong-version-tag", "rua-missing", "rua-not-mailto-or-https"],
)
async def test_a_broken_tls_rpt_record_fails(record: str, words: str) -> None:
    """A wrong version tag, no rua= or an unusable rua= fails, and the report fails."""
    report = await report_for(BASE + f"_smtp._tls.{DOMAIN}. TXT {record}")
    found = {c.name: c for c in report.checks}["tls-rpt"]
    assert found.mark == "FAIL"
    assert words in found.message
    assert not report.ok


# --- BIMI -----------------------------------------------------------------------------

BIMI = f"default._bimi.{DOMAIN}. TXT"


async def test_no_bimi_record_is_fine() -> None:
    """BIMI is optional: without a record the check passes and says so."""
    found = await check(BASE, "bimi")
    assert found.mark == "ok"
    assert "No BIMI record" in found.message


async def test_bimi_with_https_logo_and_certificate_passes() -> None:
    """An https SVG logo and an https certificate with DMARC p=reject pass."""
    record = f'"v=BIMI1; l=https://{DOMAIN}/logo.svg; a=https://{DOMAIN}/vmc.pem"'
    found = await check(BASE + f"{BIMI} {record}", "bimi")
    assert found.mark == "ok", found.message
    assert f"logo https://{DOMAIN}/logo.svg" in found.message


async def test_bimi_logo_over_http_fails() -> None:
    """l= over plain http cannot be used: FAIL, with an https example record."""
    found = await check(BASE + f'{BIMI} "v=BIMI1; l=http://{DOMAIN}/logo.svg"', "bimi")
    assert found.mark == "FAIL"
    assert f"the logo l=http://{DOMAIN}/logo.svg must be an https:// URL" in found.message
    assert found.fixes[0].bind().startswith(f'default._bimi.{DOMAIN}. IN TXT "v=BIMI1; l=https://')


async def test_bimi_needs_an_enforcing_dmarc_policy() -> None:
    """With DMARC p=none, BIMI shows no logo: FAIL, saying quarantine or reject is needed."""
    zone = BASE.replace("p=reject", "p=none") + f'{BIMI} "v=BIMI1; l=https://{DOMAIN}/l.svg"'
    found = await check(zone, "bimi")
    assert found.mark == "FAIL"
    assert "BIMI needs DMARC p=quarantine or p=reject" in found.message
    assert "p=none" in found.message


async def test_bimi_without_a_certificate_warns() -> None:
    """A valid record without a= warns that Gmail shows no logo without a VMC or CMC."""
    found = await check(BASE + f'{BIMI} "v=BIMI1; l=https://{DOMAIN}/l.svg"', "bimi")
    assert found.mark == "warn"
    assert "VMC or CMC" in found.message


# --- DMARC: np and the tags RFC 9989 removed -------------------------------------------


async def test_dmarc_without_removed_tags_or_np_gaps_passes() -> None:
    """p=reject without np: non-existent subdomains get reject too; ok."""
    found = await check(BASE, "dmarc-tags")
    assert found.mark == "ok"
    assert "np not set: they get reject" in found.message


async def test_pct_below_100_warns_and_the_fix_uses_t() -> None:
    """pct=50 (and rf, ri) were removed by RFC 9989: a warning; the fix drops them, adds t=y."""
    record = '"v=DMARC1; p=quarantine; pct=50; rf=afrf; ri=3600; rua=mailto:d@example.com"'
    found = await check(BASE.replace('"v=DMARC1; p=reject"', record), "dmarc-tags")
    assert found.mark == "warn"
    assert "pct=50, rf=afrf, ri=3600: RFC 9989 removed pct, rf and ri" in found.message
    assert "use t=y while testing" in found.message
    (fix,) = found.fixes
    assert fix.value == "v=DMARC1; p=quarantine; rua=mailto:d@example.com; t=y"
    assert fix.bind().startswith(f"_dmarc.{DOMAIN}. IN TXT")


async def test_np_none_under_an_enforcing_policy_warns() -> None:
    """p=reject with np=none lets made-up subdomains be forged: a warning; fix: np=reject."""
    found = await check(BASE.replace("p=reject", "p=reject; np=none"), "dmarc-tags")
    assert found.mark == "warn"
    assert "np=none" in found.message
    assert "add np=reject (RFC 9989)" in found.message
    assert [f.value for f in found.fixes] == ["v=DMARC1; p=reject; np=reject"]


async def test_sp_none_without_np_warns_too() -> None:
    """Without np, sp=none is what non-existent subdomains get: the same warning, np added."""
    found = await check(BASE.replace("p=reject", "p=reject; sp=none"), "dmarc-tags")
    assert found.mark == "warn"
    assert "fall under sp=none" in found.message
    assert [f.value for f in found.fixes] == ["v=DMARC1; p=reject; sp=none; np=reject"]


async def test_an_invalid_np_value_warns() -> None:
    """np=block is not a policy: receivers ignore it."""
    found = await check(BASE.replace("p=reject", "p=reject; np=block"), "dmarc-tags")
    assert found.mark == "warn"
    assert "np=block is not none, quarantine or reject" in found.message


# --- PTR and forward-confirmed reverse DNS ---------------------------------------------


def ptr_line(ip: str, host: str) -> str:
    return f"{ipaddress.ip_address(ip).reverse_pointer}. PTR {host}."


@pytest.mark.parametrize(("ip", "rdtype"), [(V4, "A"), (V6, "AAAA")], ids=["ipv4", "ipv6"])
async def test_a_ptr_that_resolves_back_passes(ip: str, rdtype: str) -> None:
    """PTR mail.DOMAIN and mail.DOMAIN's A/AAAA is the IP: forward-confirmed, ok."""
    zone = BASE + f"{ptr_line(ip, 'mail.' + DOMAIN)}\nmail.{DOMAIN}. {rdtype} {ip}"
    found = await check(zone, f"ptr:{ip}", sending_ips=[ip])
    assert found.mark == "ok", found.message
    assert f"resolves back to {ip}" in found.message


@pytest.mark.parametrize(("ip", "rdtype"), [(V4, "A"), (V6, "AAAA")], ids=["ipv4", "ipv6"])
async def test_a_missing_ptr_fails_with_both_records(ip: str, rdtype: str) -> None:
    """No PTR: FAIL, naming who sets it, with the PTR and the forward record to add."""
    found = await check(BASE, f"ptr:{ip}", sending_ips=[ip])
    assert found.mark == "FAIL"
    assert "has no PTR record" in found.message
    assert "hosting or cloud provider" in found.message
    reverse = ipaddress.ip_address(ip).reverse_pointer
    assert [f.bind() for f in found.fixes] == [
        f"{reverse}. IN PTR mail.{DOMAIN}.",
        f"mail.{DOMAIN}. IN {rdtype} {ip}",
    ]
    assert found.fixes[0].console()["host"] == reverse
    assert found.fixes[1].console()["host"] == "mail"


async def test_a_ptr_that_does_not_resolve_back_fails() -> None:
    """PTR to a name whose A is another IP is not forward-confirmed: FAIL, the A to add."""
    zone = BASE + f"{ptr_line(V4, 'out.' + DOMAIN)}\nout.{DOMAIN}. A 192.0.2.99"
    found = await check(zone, f"ptr:{V4}", sending_ips=[V4])
    assert found.mark == "FAIL"
    assert f"{V4} has PTR out.{DOMAIN}, but out.{DOMAIN} does not resolve back" in found.message
    assert [f.bind() for f in found.fixes] == [f"out.{DOMAIN}. IN A {V4}"]


async def test_each_sending_ip_gets_its_own_check() -> None:
    """Two --sending-ip values give two ptr checks, in the order given."""
    report = await report_for(BASE, sending_ips=[V4, V6])
    assert [c.name for c in report.checks if c.name.startswith("ptr:")] == [
        f"ptr:{V4}",
        f"ptr:{V6}",
    ]


async def test_a_sending_ip_that_is_not_an_ip_is_a_configuration_error() -> None:
    """A host name given as --sending-ip is refused before any lookup, naming the setting."""
    with pytest.raises(ConfigurationError, match="is not an IP address") as caught:
        await report_for(BASE, sending_ips=["mail.example.com"])
    assert caught.value.setting == "sending_ip"


# --- the per-stream From and DKIM domains ----------------------------------------------


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    """The key the streams' selectors publish."""
    return new_key()


def stream_zone(key: rsa.RSAPrivateKey) -> str:
    return (
        BASE
        + f"s1._domainkey.{DOMAIN}. TXT {dkim_txt(key)}\n"
        + f"r1._domainkey.news.{DOMAIN}. TXT {dkim_txt(key)}\n"
        + f'_dmarc.news.{DOMAIN}. TXT "v=DMARC1; p=quarantine; adkim=s"\n'
    )


async def streams(zone: str, identities: list[StreamIdentity]) -> dict[str, Check]:
    async with DnsServer(zone) as server, asyncio.timeout(20):
        resolver = Resolver(DnsSettings(nameserver=(server.host, server.port)))
        found = await stream_checks(resolver, identities, domain=DOMAIN)
    return {c.name: c for c in found}


async def test_streams_with_aligned_published_keys_pass(key: rsa.RSAPrivateKey) -> None:
    """Each stream whose DKIM domain aligns and whose key is published is ok, one check each."""
    found = await streams(
        stream_zone(key),
        [
            StreamIdentity("main", DOMAIN, DOMAIN, "s1", pem(key)),
            StreamIdentity("reminders", f"news.{DOMAIN}", f"news.{DOMAIN}", "r1"),
        ],
    )
    assert list(found) == ["stream:main", "stream:reminders"]
    assert all(c.mark == "ok" for c in found.values()), [c.message for c in found.values()]
    assert "DKIM d=news.learning.example.com s=r1" in found["stream:reminders"].message


async def test_a_stream_signing_for_another_domain_does_not_align(key: rsa.RSAPrivateKey) -> None:
    """DKIM d= another organization's domain: FAIL, DKIM does not count for DMARC."""
    zone = stream_zone(key) + f"s1._domainkey.esp.example.net. TXT {dkim_txt(key)}\n"
    found = await streams(zone, [StreamIdentity("main", DOMAIN, "esp.example.net", "s1")])
    assert found["stream:main"].mark == "FAIL"
    assert (
        "d=esp.example.net does not align with learning.example.com" in found["stream:main"].message
    )


async def test_strict_dkim_alignment_needs_the_same_name(key: rsa.RSAPrivateKey) -> None:
    """Under adkim=s the reminders' From news.DOMAIN does not align with d=DOMAIN."""
    found = await streams(
        stream_zone(key), [StreamIdentity("reminders", f"news.{DOMAIN}", DOMAIN, "s1")]
    )
    assert found["stream:reminders"].mark == "FAIL"
    assert "strict (adkim=s)" in found["stream:reminders"].message


async def test_a_stream_whose_key_is_not_published_fails(key: rsa.RSAPrivateKey) -> None:
    """A selector with no key in DNS: FAIL, with the record for the stream's own key."""
    found = await streams(
        stream_zone(key), [StreamIdentity("reminders", DOMAIN, DOMAIN, "r9", pem(key))]
    )
    stream = found["stream:reminders"]
    assert stream.mark == "FAIL"
    assert f"No DKIM key is published at r9._domainkey.{DOMAIN}" in stream.message
    assert stream.fixes[0].bind().startswith(f'r9._domainkey.{DOMAIN}. IN TXT "v=DKIM1; k=rsa;')


async def test_an_unsigned_stream_warns_and_another_organization_is_only_named() -> None:
    """No DKIM settings: a warning; a From under another domain: named, not checked."""
    found = await streams(
        BASE,
        [
            StreamIdentity("main", DOMAIN),
            StreamIdentity("partner", "partner.example.org", "partner.example.org", "p1"),
        ],
    )
    assert found["stream:main"].mark == "warn"
    assert "is not DKIM-signed" in found["stream:main"].message
    assert found["stream:partner"].mark == "ok"
    assert "run `sender doctor partner.example.org`" in found["stream:partner"].message


# --- the command line -----------------------------------------------------------------


async def test_cli_doctor_prints_warn_lines_ptr_and_the_gmail_estimate(workdir: Path) -> None:
    """`sender doctor --sending-ip` prints warn and FAIL lines with fixes; --json has gmail."""

    def doctor(address: str, *extra: str) -> tuple[int, str]:
        result = CliRunner().invoke(
            main,
            ["doctor", DOMAIN, "--dns-server", address, "--sending-ip", V4, *extra],
            catch_exceptions=False,
        )
        return result.exit_code, result.stdout

    async with DnsServer(BASE) as dns:
        code, text = await asyncio.to_thread(doctor, dns.address)
        json_code, data = await asyncio.to_thread(doctor, dns.address, "--json")
    assert code == 1  # the PTR is missing
    lines = text.splitlines()
    assert any(line.startswith("warn tls-rpt: ") for line in lines), text
    assert any(line.startswith(f"FAIL ptr:{V4}: ") for line in lines), text
    reverse = ipaddress.ip_address(V4).reverse_pointer
    assert f"BIND:    {reverse}. IN PTR mail.{DOMAIN}." in text
    assert any(line.startswith("ok   gmail-bulk: Gmail: nothing sent") for line in lines), text
    assert not (workdir / ".sender" / "outbox.sqlite3").exists()  # doctor made no outbox
    assert json_code == 1
    report = json.loads(data)
    assert report["gmail"]["status"] == "below"
    assert report["gmail"]["domains"] == ["gmail.com", "googlemail.com"]
    marks = {c["name"]: c["mark"] for c in report["checks"]}
    assert (marks["tls-rpt"], marks[f"ptr:{V4}"], marks["gmail-bulk"]) == ("warn", "FAIL", "ok")


async def test_silent_dns_for_the_optional_records_warns_without_failing() -> None:
    """No answer for _mta-sts, _smtp._tls or default._bimi: ?? warnings, the report stays ok."""
    silent = (f"_mta-sts.{DOMAIN}", f"_smtp._tls.{DOMAIN}", f"default._bimi.{DOMAIN}")
    async with DnsServer(BASE, silent=silent) as server, asyncio.timeout(20):
        resolver = Resolver(
            DnsSettings(nameserver=(server.host, server.port), timeout=0.5, lifetime=1.5)
        )
        report = await diagnose(DOMAIN, resolver=resolver, fetch_policy=no_fetch)
    found = {c.name: c for c in report.checks}
    for name in ("mta-sts", "tls-rpt", "bimi"):
        assert found[name].unknown, name
        assert found[name].mark == "warn", name
    assert report.ok
