"""Address checks against a real DNS server on loopback serving test zones, and a real store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sender.checks.resolve import DnsSettings, Resolver
from sender.checks.validate import (
    AddressCheck,
    ValidationSummary,
    Validator,
    Verdict,
    _SyntaxChecker,
    suggest_domain,
)
from sender.participants import CsvRow
from sender.store import SqliteStore
from tests.dns_server import DnsServer
from tests.helpers import hard_bounce

ZONE = """
mail.example.          MX    10 mx.mail.example.
mx.mail.example.       A     192.0.2.10
nullmx.example.        MX    0 .
aonly.example.         A     192.0.2.20
aaaaonly.example.      AAAA  2001:db8::25
txtonly.example.       TXT   "v=spf1 -all"
xn--bcher-kva.example. MX    10 mx.mail.example.
school.example.        MX    10 mx.mail.example.
shcool.example.        MX    10 mx.mail.example.
gmai.com.              MX    10 mx.mail.example.
gmail.com.             MX    10 mx.mail.example.
"""


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    """The test zones, with one SERVFAIL name and one silent name."""
    async with DnsServer(ZONE, servfail=("broken.example",), silent=("slow.example",)) as dns:
        yield dns


def validator(server: DnsServer, **kw: object) -> Validator:
    dns_settings = DnsSettings(nameserver=(server.host, server.port), timeout=0.5, lifetime=1.5)
    resolver = Resolver(dns_settings)
    return Validator(resolver, **kw)  # type: ignore[arg-type]


async def test_a_domain_with_mx_is_ok(server: DnsServer) -> None:
    """An address at a domain with an MX record is ok, normalized by email-validator."""
    check = await validator(server).check("Kari.Nordmann@MAIL.example")
    assert check.verdict is Verdict.OK
    assert check.normalized == "Kari.Nordmann@mail.example"
    assert check.email == "Kari.Nordmann@MAIL.example"
    assert check.suggestion is None


async def test_null_mx_is_invalid(server: DnsServer) -> None:
    """A null MX (RFC 7505) means the domain accepts no mail."""
    check = await validator(server).check("kari@nullmx.example")
    assert check.verdict is Verdict.INVALID
    assert "accepts no mail" in check.reason
    assert "null MX" in check.reason


@pytest.mark.parametrize("domain", ["aonly.example", "aaaaonly.example"])
async def test_an_address_record_without_mx_is_ok(server: DnsServer, domain: str) -> None:
    """No MX but an A or an AAAA record: mail goes to the host itself (RFC 5321)."""
    check = await validator(server).check(f"kari@{domain}")
    assert check.verdict is Verdict.OK


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        pytest.param(
            "kari@txtonly.example",
            "the domain txtonly.example has no mail server (no MX, A or AAAA record)",
            id="no-mx-a-or-aaaa",
        ),
        pytest.param(
            "kari@nowhere.example",
            "the domain nowhere.example does not exist",
            id="nxdomain",
        ),
    ],
)
async def test_a_domain_without_a_mail_server_is_invalid_and_named(
    server: DnsServer, email: str, reason: str
) -> None:
    """No MX, A or AAAA record, or no domain at all (NXDOMAIN): invalid, naming the domain."""
    check = await validator(server).check(email)
    assert (check.verdict, check.reason) == (Verdict.INVALID, reason)


async def test_servfail_is_unknown_never_invalid(server: DnsServer) -> None:
    """A nameserver failure leaves the address unknown."""
    check = await validator(server).check("kari@broken.example")
    assert check.verdict is Verdict.UNKNOWN
    assert "did not answer" in check.reason


async def test_a_silent_server_is_unknown_and_bounded(server: DnsServer) -> None:
    """Timeouts make the address unknown, promptly."""
    started = time.monotonic()
    async with asyncio.timeout(5):
        check = await validator(server).check("kari@slow.example")
    assert check.verdict is Verdict.UNKNOWN
    assert check.reason == "DNS did not answer for domain slow.example (timeout)"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("email", "words"),
    [
        ("kari.example.com", "@-sign"),
        ("kari nordmann@mail.example", "invalid characters"),
        ("kari@-mail.example", "hyphen"),
        ("kari@@mail.example", "@"),
        ("", "@-sign"),
    ],
)
async def test_syntax_errors_are_invalid_and_named(
    server: DnsServer, email: str, words: str
) -> None:
    """Bad syntax is invalid with email-validator's message, on one line, without DNS."""
    check = await validator(server).check(email)
    assert check.verdict is Verdict.INVALID
    assert check.normalized is None
    assert check.reason.startswith("syntax: ")
    assert words in check.reason
    assert "\n" not in check.reason
    assert server.queries == 0


@pytest.mark.parametrize(
    "email",
    [
        # asked as xn--bcher-kva.example; it keeps its Unicode form
        pytest.param("kari@bücher.example", id="internationalized-domain-by-its-a-label"),
        pytest.param("øyvind@mail.example", id="smtputf8-local-part"),
    ],
)
async def test_non_ascii_addresses_are_ok_and_keep_their_form(
    server: DnsServer, email: str
) -> None:
    """An IDN (asked by its A-label) and an SMTPUTF8 local part are ok and keep their form."""
    check = await validator(server).check(email)
    assert check.verdict is Verdict.OK
    assert check.normalized == email


@pytest.mark.parametrize(
    ("email", "suggestion"),
    [("kari@gmial.com", "kari@gmail.com"), ("kari@outlok.com", "kari@outlook.com")],
)
async def test_a_missing_provider_typo_is_invalid_with_a_suggestion(
    server: DnsServer, email: str, suggestion: str
) -> None:
    """A non-existent near miss of a big provider stays invalid but suggests the fix."""
    check = await validator(server).check(email)
    assert check.verdict is Verdict.INVALID
    assert check.suggestion == suggestion
    assert "does not exist" in check.reason
    assert "did you mean" in check.reason


async def test_an_existing_domain_one_edit_from_a_provider_is_risky(server: DnsServer) -> None:
    """gmai.com exists, yet is one edit from gmail.com: risky, with the suggestion."""
    check = await validator(server).check("kari@gmai.com")
    assert check.verdict is Verdict.RISKY
    assert check.suggestion == "kari@gmail.com"
    good = await validator(server).check("kari@gmail.com")
    assert (good.verdict, good.suggestion) == (Verdict.OK, None)


async def test_a_typo_of_the_lists_own_frequent_domain_is_suggested(server: DnsServer) -> None:
    """30 addresses at school.example make the one at shcool.example risky."""
    emails = [f"p{i}@school.example" for i in range(30)] + ["kari@shcool.example"]
    checks = await validator(server).check_many(emails)
    assert {c.verdict for c in checks[:30]} == {Verdict.OK}
    assert checks[30].verdict is Verdict.RISKY
    assert checks[30].suggestion == "kari@school.example"
    alone = await validator(server).check("kari@shcool.example")
    assert alone.verdict is Verdict.OK


async def test_known_domains_are_typo_targets(server: DnsServer) -> None:
    """Domains the caller names (the LMS's own) are typo targets too."""
    check = await validator(server, known_domains=["school.example"]).check("kari@shcool.example")
    assert (check.verdict, check.suggestion) == (Verdict.RISKY, "kari@school.example")


def test_suggest_domain_catches_common_typos_and_leaves_real_domains() -> None:
    """Typos of big providers are corrected; providers and unrelated domains are not."""
    assert suggest_domain("gmial.com") == "gmail.com"
    assert suggest_domain("hotmial.com") == "hotmail.com"
    assert suggest_domain("yaho.com") == "yahoo.com"
    assert suggest_domain("yahoo.co.jo") == "yahoo.co.jp"
    assert suggest_domain("icloud.con") == "icloud.com"
    assert suggest_domain("onlin.no") == "online.no"
    assert suggest_domain("Gmial.COM.") == "gmail.com"
    for real in ("gmail.com", "gmx.at", "web.de", "live.no", "uio.no", "example.org"):
        assert suggest_domain(real) is None
    assert suggest_domain("mc.com") is None  # as near me.com as mac.com: no guess
    assert suggest_domain("shcool.example", known=["school.example"]) == "school.example"


async def test_a_suppressed_address_is_invalid(server: DnsServer, store: SqliteStore) -> None:
    """An address on the suppression list is invalid, with the list's reason."""
    await store.suppress("kari@mail.example", kind="hard", reason="hard bounce 5.1.1", now=1.0)
    check = await validator(server, store=store).check("Kari@Mail.example")
    assert check.verdict is Verdict.INVALID
    assert check.reason == "on the suppression list: hard bounce 5.1.1"


async def test_a_hard_bounced_address_not_suppressed_is_risky(
    server: DnsServer, store: SqliteStore
) -> None:
    """Recorded hard bounces without suppression make the address risky; forged ones don't."""
    await store.add_bounce(hard_bounce(1.0, address="ola@mail.example", fingerprint="f1"))
    forged = hard_bounce(1.0, address="per@mail.example", fingerprint="f2")
    await store.add_bounce(replace(forged, forged=True))
    checks = await validator(server, store=store).check_many(
        ["ola@mail.example", "per@mail.example"]
    )
    assert checks[0].verdict is Verdict.RISKY
    assert "5.1.1" in checks[0].reason
    assert checks[1].verdict is Verdict.OK


async def test_check_many_keeps_order_and_asks_once_per_domain(server: DnsServer) -> None:
    """Results follow the input; each distinct domain's MX is asked once."""
    emails = [f"p{i}@{d}" for i in range(20) for d in ("mail.example", "school.example")]
    emails += ["x@nowhere.example", "bad", "y@aonly.example", "x@nowhere.example"]
    seen: list[int] = []
    checks = await validator(server).check_many(emails, on_progress=seen.append)
    assert [c.email for c in checks] == emails
    assert checks[-4].verdict is Verdict.INVALID
    assert checks[-3].reason.startswith("syntax: ")
    assert checks[-2].verdict is Verdict.OK
    # mail, school, nowhere: one MX each; aonly: MX then A
    assert server.queries == 5
    assert seen == sorted(seen)
    assert seen[-1] == len(emails)


async def test_check_rows_summarizes_by_row(server: DnsServer) -> None:
    """CSV rows become (row, check) pairs with counts per verdict; rows without email skip."""
    rows = [
        CsvRow(2, None, None, "kari@mail.example"),
        CsvRow(3, None, None, "kari@nowhere.example"),
        CsvRow(4, None, None, None),
        CsvRow(5, None, None, "kari@broken.example"),
    ]
    summary = await validator(server).check_rows(rows)
    assert summary.total == 3
    assert summary.counts == {
        Verdict.OK: 1,
        Verdict.INVALID: 1,
        Verdict.RISKY: 0,
        Verdict.UNKNOWN: 1,
    }
    assert [row for row, _ in summary.problems] == [3, 5]


def test_summary_of_nothing_counts_zero() -> None:
    """An empty summary has every verdict at zero."""
    summary = ValidationSummary.of([])
    assert summary.total == 0
    assert set(summary.counts.values()) == {0}
    assert summary.problems == []


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(), st.text().map(lambda s: s + "@mail.example"), st.emails()))
async def test_arbitrary_text_never_raises(server: DnsServer, text: str) -> None:
    """Whatever the text, check returns a verdict with a one-line reason."""
    check = await validator(server).check(text)
    assert isinstance(check, AddressCheck)
    assert check.verdict in set(Verdict)
    assert "\n" not in check.reason


DOMAINS = [
    "mail.example",
    "Mail.EXAMPLE",
    "bücher.example",
    "XN--BCHER-KVA.example",
    "x" * 60 + ".example",
]
LOCALS = st.one_of(
    st.from_regex(r"[A-Za-z0-9_+-]{1,70}(\.[A-Za-z0-9_+-]{1,20}){0,12}", fullmatch=True),
    st.sampled_from(["Postmaster", "ABUSE", "info", "kari", '"kari"', "øyvind", "a..b", ".a"]),
    st.text(max_size=80),
)


@pytest.mark.slow
@settings(max_examples=400)
@given(local=LOCALS, domain=st.sampled_from(DOMAINS))
def test_the_per_domain_syntax_shortcut_agrees_with_email_validator(
    local: str, domain: str
) -> None:
    """After a first address at a domain, the answer is email-validator's, plus RFC 5321."""
    checker = _SyntaxChecker()
    assert not isinstance(checker(f"first@{domain}"), str)
    email = f"{local}@{domain}"
    ours = checker(email)
    try:
        theirs = validate_email(email.strip(), check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        assert isinstance(ours, str)
        return
    if len(email.strip().rpartition("@")[0].encode("utf-8", "surrogatepass")) > 64:
        assert isinstance(ours, str)  # RFC 5321's 64 octets, which email-validator lets pass
        return
    assert not isinstance(ours, str)
    assert (ours.normalized, ours.local, ours.domain, ours.ascii_domain) == (
        theirs.normalized,
        theirs.local_part,
        theirs.domain,
        theirs.ascii_domain,
    )
