"""The sender-domain doctor against a real DNS server on loopback serving test zones."""

from __future__ import annotations

import asyncio
import base64
import re
import time

import dns.rdata
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sender.checks.doctor import Check, DoctorReport, Fix, diagnose
from sender.checks.resolve import DnsSettings, Resolver
from sender.errors import ConfigurationError
from tests.dns_server import DnsServer

DOMAIN = "learning.example.com"
SES = 'amazonses.com. TXT "v=spf1 ip4:199.255.192.0/22 ip4:54.240.0.0/18 -all"'


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    """The RSA key the good domain publishes and signs with."""
    return new_key()


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def dkim_txt(key: rsa.RSAPrivateKey) -> str:
    """The DKIM record for ``key`` as zone rdata, split into 255-character strings."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    value = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))


def good_zone(key: rsa.RSAPrivateKey) -> str:
    return f"""
{SES}
{DOMAIN}.                   TXT "v=spf1 include:amazonses.com ~all"
{DOMAIN}.                   TXT "google-site-verification=abc"
s1._domainkey.{DOMAIN}.     TXT {dkim_txt(key)}
_dmarc.{DOMAIN}.            TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@{DOMAIN}"
bounce.{DOMAIN}.            MX  10 feedback-smtp.us-east-1.amazonses.com.
bounce.{DOMAIN}.            TXT "v=spf1 include:amazonses.com ~all"
example.com.                MX  10 mx.example.com.
"""


async def run(zone: str, domain: str = DOMAIN, **kw: object) -> DoctorReport:
    async with DnsServer(zone) as server:
        resolver = Resolver(DnsSettings(nameserver=(server.host, server.port)))
        return await diagnose(domain, resolver=resolver, **kw)  # type: ignore[arg-type]


def checks(report: DoctorReport) -> dict[str, Check]:
    return {check.name: check for check in report.checks}


async def test_good_domain_passes_every_check(key: rsa.RSAPrivateKey) -> None:
    """SPF with the provider and ~all, a real DKIM key, DMARC quarantine and MX all pass."""
    report = await run(
        good_zone(key),
        dkim_selector="s1",
        dkim_private_key=pem(key),
        bounce_domain=f"bounce.{DOMAIN}",
        reply_domain="example.com",
    )
    assert [c.name for c in report.checks] == [
        "spf",
        "spf-lookups",
        "spf-void",
        "spf-all",
        "dkim",
        "dmarc",
        "dmarc-alignment",
        "dmarc-tags",
        "mx-bounce",
        "mx-reply",
        "mta-sts",
        "tls-rpt",
        "bimi",
    ]
    assert report.ok, [c.message for c in report.checks if not c.ok]
    found = checks(report)
    assert "directly" in found["spf"].message
    assert "p=quarantine" in found["dmarc"].message
    assert "matches the signing key" in found["dkim"].message
    assert "SPF aligns" in found["dmarc-alignment"].message
    # the optional records are missing here: they warn, with the record to add, and pass
    assert [c.name for c in report.checks if c.advisory] == ["mta-sts", "tls-rpt"]
    assert all(not c.fixes for c in report.checks if not c.advisory)


async def test_missing_spf_gives_the_exact_record() -> None:
    """No SPF record: the fix is one BIND line ending the name in a dot, host @ in consoles."""
    report = await run(f'{SES}\n{DOMAIN}. TXT "something-else"')
    spf = checks(report)["spf"]
    assert not spf.ok
    assert not report.ok
    assert [f.bind() for f in spf.fixes] == [
        'learning.example.com. IN TXT "v=spf1 include:amazonses.com ~all"'
    ]
    assert spf.fixes[0].console() == {
        "host": "@",
        "type": "TXT",
        "value": "v=spf1 include:amazonses.com ~all",
    }


async def test_two_spf_records_are_explained_and_merged() -> None:
    """Two SPF records are a PermError; the fix merges them into one."""
    zone = f"""
{SES}
{DOMAIN}. TXT "v=spf1 include:amazonses.com ~all"
{DOMAIN}. TXT "v=spf1 ip4:192.0.2.1 -all"
"""
    spf = checks(await run(zone))["spf"]
    assert not spf.ok
    assert "2 SPF records" in spf.message
    assert "RFC 7208 3.2" in spf.message
    assert [f.value for f in spf.fixes] == ["v=spf1 include:amazonses.com ip4:192.0.2.1 -all"]


async def test_spf_over_ten_lookups_counts_nested_includes() -> None:
    """Lookups are counted through nested includes; more than 10 fails."""
    chain = "\n".join(
        f'i{n}.example. TXT "v=spf1 include:i{n + 1}.example a mx ~all"' for n in range(4)
    )
    zone = f"""
{SES}
{DOMAIN}. TXT "v=spf1 include:amazonses.com include:i0.example ~all"
{chain}
i4.example. TXT "v=spf1 ip4:192.0.2.4 ~all"
i0.example. A 192.0.2.1
i1.example. A 192.0.2.1
i2.example. A 192.0.2.1
i3.example. A 192.0.2.1
i0.example. MX 10 i0.example.
i1.example. MX 10 i1.example.
i2.example. MX 10 i2.example.
i3.example. MX 10 i3.example.
"""
    lookups = checks(await run(zone))["spf-lookups"]
    assert not lookups.ok
    assert "needs 14 DNS lookups" in lookups.message
    assert "RFC 7208 4.6.4" in lookups.message


async def test_include_loop_is_caught() -> None:
    """Includes that point back are a PermError, found without looping."""
    zone = f"""
{SES}
{DOMAIN}. TXT "v=spf1 include:amazonses.com include:loop-a.example ~all"
loop-a.example. TXT "v=spf1 include:loop-b.example ~all"
loop-b.example. TXT "v=spf1 include:loop-a.example ~all"
"""
    async with asyncio.timeout(5):
        lookups = checks(await run(zone))["spf-lookups"]
    assert not lookups.ok
    assert "loop-a.example → loop-b.example → loop-a.example" in lookups.message


async def test_three_void_lookups_fail() -> None:
    """Three terms that find nothing exceed the void-lookup limit of 2; the fix drops them."""
    zone = f"""
{SES}
{DOMAIN}. TXT "v=spf1 include:amazonses.com a:gone1.example mx:gone2.example a:gone3.example ~all"
gone3.example. MX 10 mx.example.
"""
    found = checks(await run(zone))
    void = found["spf-void"]
    assert not void.ok
    assert "3 terms" in void.message
    assert "a:gone1.example" in void.message
    assert [f.value for f in void.fixes] == ["v=spf1 include:amazonses.com ~all"]
    assert found["spf-lookups"].ok


@pytest.mark.parametrize(
    ("ending", "words"),
    [("+all", "every server"), ("?all", "says nothing"), ("", "no all term")],
)
async def test_spf_must_end_in_softfail_or_fail(ending: str, words: str) -> None:
    """+all, ?all or no all at all fail, explained, with the record ending in ~all."""
    zone = f'{SES}\n{DOMAIN}. TXT "v=spf1 include:amazonses.com {ending}"'
    spf_all = checks(await run(zone))["spf-all"]
    assert not spf_all.ok
    assert words in spf_all.message
    assert [f.value for f in spf_all.fixes] == ["v=spf1 include:amazonses.com ~all"]


async def test_spf_without_the_provider_fails_with_fix() -> None:
    """A record that does not include the provider fails; the fix adds include:provider."""
    zone = f'{SES}\n{DOMAIN}. TXT "v=spf1 ip4:192.0.2.1 -all"'
    spf = checks(await run(zone))["spf"]
    assert not spf.ok
    assert "does not include amazonses.com" in spf.message
    assert [f.value for f in spf.fixes] == ["v=spf1 ip4:192.0.2.1 include:amazonses.com -all"]


async def test_provider_through_a_nested_include_counts() -> None:
    """The provider included by an included record is authorized, and the message says how."""
    zone = f"""
{SES}
{DOMAIN}. TXT "v=spf1 include:_spf.example.com -all"
_spf.example.com. TXT "v=spf1 include:amazonses.com ~all"
"""
    spf = checks(await run(zone))["spf"]
    assert spf.ok
    assert "through include:_spf.example.com → include:amazonses.com" in spf.message


async def test_dkim_missing_offers_the_signing_key(key: rsa.RSAPrivateKey) -> None:
    """No key at the selector fails; with the private key the fix is its public record."""
    dkim = checks(await run(SES, dkim_selector="s1", dkim_private_key=pem(key)))["dkim"]
    assert not dkim.ok
    assert "No DKIM key is published at s1._domainkey.learning.example.com" in dkim.message
    (fix,) = dkim.fixes
    assert fix.console()["host"] == "s1._domainkey"
    assert fix.value.startswith("v=DKIM1; k=rsa; p=MIIB")


async def test_dkim_revoked_key_fails() -> None:
    """An empty p= is a revoked key."""
    zone = f'{SES}\ns1._domainkey.{DOMAIN}. TXT "v=DKIM1; k=rsa; p="'
    dkim = checks(await run(zone, dkim_selector="s1"))["dkim"]
    assert not dkim.ok
    assert "revoked" in dkim.message


@pytest.mark.parametrize("p", ["not*base64", "AAAA", base64.b64encode(b"0" * 64).decode()])
async def test_dkim_garbage_key_fails(p: str) -> None:
    """A p= that is not a parseable RSA public key fails."""
    zone = f'{SES}\ns1._domainkey.{DOMAIN}. TXT "v=DKIM1; p={p}"'
    dkim = checks(await run(zone, dkim_selector="s1"))["dkim"]
    assert not dkim.ok
    assert "cannot be used" in dkim.message


async def test_dkim_key_that_sender_does_not_sign_with_fails(key: rsa.RSAPrivateKey) -> None:
    """A valid DNS key that is not the signing key's public half fails."""
    other = new_key()
    zone = f"{SES}\ns1._domainkey.{DOMAIN}. TXT {dkim_txt(other)}"
    dkim = checks(await run(zone, dkim_selector="s1", dkim_private_key=pem(key)))["dkim"]
    assert not dkim.ok
    assert "The DNS key at s1._domainkey.learning.example.com is not the key" in dkim.message
    assert len(dkim.fixes) == 1


async def test_dkim_without_selector_is_not_checked() -> None:
    """Without a selector DKIM is reported as not checked, not as a failure."""
    dkim = checks(await run(SES))["dkim"]
    assert dkim.ok
    assert dkim.message == "DKIM not checked: give --dkim-selector."


async def test_dmarc_missing_suggests_monitoring_first() -> None:
    """No DMARC record: the fix is p=none with a report address, explained as monitoring."""
    dmarc = checks(await run(SES))["dmarc"]
    assert not dmarc.ok
    assert "monitoring" in dmarc.message
    assert [f.bind() for f in dmarc.fixes] == [
        '_dmarc.learning.example.com. IN TXT "v=DMARC1; p=none; '
        'rua=mailto:dmarc@learning.example.com"'
    ]
    assert dmarc.fixes[0].console()["host"] == "_dmarc"


@pytest.mark.parametrize(
    ("record", "words"),
    [
        # the policy, sp= and pct= are named in the message
        (
            f'_dmarc.{DOMAIN}. TXT "v=DMARC1; p=reject; sp=quarantine; pct=50"',
            ["p=reject sp=quarantine pct=50", "refuse", "50%"],
        ),
        # without its own record a subdomain falls under the organizational domain's, sp= first
        (
            '_dmarc.example.com. TXT "v=DMARC1; p=reject; sp=none"',
            ["_dmarc.example.com", "monitoring only"],
        ),
    ],
    ids=["own-policy-is-reported", "subdomain-inherits-the-organizational-dmarc"],
)
async def test_a_dmarc_policy_is_reported(record: str, words: list[str]) -> None:
    """A DMARC record, the domain's own or its organizational domain's, is named and explained."""
    dmarc = checks(await run(f"{SES}\n{record}"))["dmarc"]
    assert dmarc.ok
    for word in words:
        assert word in dmarc.message


async def test_strict_spf_alignment_fails_for_another_bounce_domain() -> None:
    """With aspf=s a bounce domain other than the From domain does not align."""
    zone = f"""
{SES}
_dmarc.{DOMAIN}. TXT "v=DMARC1; p=reject; aspf=s"
bounce.{DOMAIN}. MX 10 mx.example.com.
bounce.{DOMAIN}. TXT "v=spf1 include:amazonses.com ~all"
"""
    found = checks(await run(zone, bounce_domain=f"bounce.{DOMAIN}"))
    alignment = found["dmarc-alignment"]
    assert not alignment.ok
    assert "SPF does not align" in alignment.message
    assert "strict" in alignment.message
    relaxed = await run(zone.replace("aspf=s", "aspf=r"), bounce_domain=f"bounce.{DOMAIN}")
    assert checks(relaxed)["dmarc-alignment"].ok


async def test_bounce_domain_without_mx_or_with_null_mx_fails() -> None:
    """A bounce domain with no MX, or a null MX, cannot receive bounces; an MX is suggested."""
    zone = f"{SES}\nnull.{DOMAIN}. MX 0 .\nbare.{DOMAIN}. A 192.0.2.1"
    null = checks(await run(zone, bounce_domain=f"null.{DOMAIN}"))["mx-bounce"]
    assert not null.ok
    assert "null MX" in null.message
    assert null.fixes[0].bind() == "null.learning.example.com. IN MX 10 mail.learning.example.com."
    assert null.fixes[0].console()["host"] == "null"
    bare = checks(await run(zone, bounce_domain=f"bare.{DOMAIN}"))["mx-bounce"]
    assert not bare.ok
    assert "has no MX record" in bare.message
    reply = checks(await run(zone, reply_domain="gone.example"))["mx-reply"]
    assert "does not exist" in reply.message


async def test_silent_dns_is_unknown_and_bounded() -> None:
    """A name DNS never answers makes its checks unknown, not failed, within bounded time."""
    async with DnsServer(SES, silent=(DOMAIN, f"_dmarc.{DOMAIN}")) as server:
        resolver = Resolver(
            DnsSettings(nameserver=(server.host, server.port), timeout=0.5, lifetime=1.0)
        )
        started = time.monotonic()
        async with asyncio.timeout(10):
            report = await diagnose(DOMAIN, resolver=resolver)
        assert time.monotonic() - started < 5
    found = checks(report)
    assert found["spf"].unknown
    assert found["dmarc"].unknown
    assert found["spf"].message == f"DNS did not answer for the TXT records of {DOMAIN}; try again."
    assert not report.ok


def test_long_txt_values_are_split_for_bind() -> None:
    """TXT values longer than 255 bytes become several quoted strings of at most 255."""
    value = "v=DKIM1; k=rsa; p=" + "A" * 600 + '"\\'
    line = Fix("s1._domainkey.example.com.", "TXT", value).bind()
    prefix = "s1._domainkey.example.com. IN TXT "
    assert line.startswith(prefix)
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', line.removeprefix(prefix))
    unescaped = [re.sub(r"\\(.)", r"\1", s) for s in strings]
    assert [len(s) for s in unescaped] == [255, 255, 110]
    assert "".join(unescaped) == value
    rdata = dns.rdata.from_text("IN", "TXT", line.removeprefix(prefix))
    assert b"".join(rdata.strings).decode() == value  # type: ignore[attr-defined]


def test_fix_names_always_end_in_a_dot() -> None:
    """A name given without the final dot still gets one in BIND."""
    fix = Fix("example.com", "MX", "10 mail.example.com.", "example.com.")
    assert fix.bind() == "example.com. IN MX 10 mail.example.com."
    assert fix.console()["host"] == "@"


async def test_report_json_carries_fixes_in_both_forms() -> None:
    """to_json lists every check with its fixes as BIND lines and console fields."""
    data = (await run(SES)).to_json()
    assert data["domain"] == DOMAIN
    assert data["ok"] is False
    spf = next(c for c in data["checks"] if c["name"] == "spf")  # type: ignore[attr-defined]
    assert spf["fixes"][0]["console"]["host"] == "@"
    assert spf["fixes"][0]["bind"].endswith('"v=spf1 include:amazonses.com ~all"')


async def test_a_bad_domain_is_a_configuration_error() -> None:
    """A domain with spaces or an @ is refused before any lookup."""
    resolver = Resolver(DnsSettings(nameserver=("127.0.0.1", 9)))
    with pytest.raises(ConfigurationError, match="not a domain name"):
        await diagnose("user@example.com", resolver=resolver)
