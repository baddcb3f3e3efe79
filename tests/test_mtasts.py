"""MTA-STS: the policy fetched over real HTTPS on loopback, read, and checked by the doctor.

The policy server is an HTTPS server on 127.0.0.1 with a certificate the test CA issued for
``mta-sts.learning.example.com``. The fetcher connects to it through ``connect_to`` while
SNI, the Host header and the certificate check use the real name, as in production.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import trustme

from sender.checks.doctor import Check, diagnose
from sender.checks.mtasts import (
    POLICY_LIMIT,
    HttpsPolicyFetcher,
    mx_matches,
    parse_policy,
)
from sender.checks.resolve import DnsSettings, Resolver
from tests.dns_server import DnsServer

DOMAIN = "learning.example.com"
HOST = f"mta-sts.{DOMAIN}"
GOOD = (
    "version: STSv1\r\nmode: enforce\r\n"
    "mx: mx1.learning.example.com\r\nmx: *.mail.example.net\r\nmax_age: 604800\r\n"
)
ZONE = f"""
{DOMAIN}.               MX  10 mx1.learning.example.com.
{DOMAIN}.               MX  20 in2.mail.example.net.
_mta-sts.{DOMAIN}.      TXT "v=STSv1; id=20261203T1200"
"""


@dataclass
class PolicyServer:
    """Answers every request with ``status`` and ``body``; records the Host headers it got."""

    status: str = "200 OK"
    body: bytes = GOOD.encode()
    extra: str = ""
    hosts: list[str] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            for line in head.decode("latin-1").split("\r\n"):
                if line.lower().startswith("host:"):
                    self.hosts.append(line.split(":", 1)[1].strip())
            writer.write(
                f"HTTP/1.1 {self.status}\r\nContent-Type: text/plain\r\n{self.extra}"
                f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n".encode()
                + self.body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def policy_server(tls_ca: trustme.CA) -> AsyncIterator[PolicyServer]:
    """An HTTPS server with a certificate for mta-sts.learning.example.com from the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert(HOST).configure_cert(context)
    state = PolicyServer()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=context)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


@pytest.fixture
def fetcher(policy_server: PolicyServer, tls_ca: trustme.CA) -> HttpsPolicyFetcher:
    """Fetches from the policy server, trusting the test CA."""
    trust = ssl.create_default_context()
    tls_ca.configure_trust(trust)
    return HttpsPolicyFetcher(verify=trust, connect_to={HOST: ("127.0.0.1", policy_server.port)})


async def mta_sts(zone: str, fetcher: HttpsPolicyFetcher) -> Check:
    async with DnsServer(zone) as server, asyncio.timeout(20):
        resolver = Resolver(DnsSettings(nameserver=(server.host, server.port)))
        report = await diagnose(DOMAIN, resolver=resolver, fetch_policy=fetcher)
    return {check.name: check for check in report.checks}["mta-sts"]


async def test_the_policy_is_fetched_over_https_under_its_real_host_name(
    fetcher: HttpsPolicyFetcher, policy_server: PolicyServer
) -> None:
    """The fetch verifies the certificate for mta-sts.DOMAIN and sends that name as Host."""
    fetched = await fetcher(DOMAIN)
    assert fetched.error is None
    assert fetched.text == GOOD
    assert fetched.url == f"https://{HOST}/.well-known/mta-sts.txt"
    assert policy_server.hosts == [HOST]


async def test_a_certificate_for_another_name_or_from_an_unknown_ca_is_refused(
    policy_server: PolicyServer, tls_ca: trustme.CA
) -> None:
    """A certificate not valid for mta-sts.DOMAIN, or not trusted, gives no policy."""
    trust = ssl.create_default_context()
    tls_ca.configure_trust(trust)
    other = "mta-sts.other.example"
    wrong_name = HttpsPolicyFetcher(
        verify=trust, connect_to={other: ("127.0.0.1", policy_server.port)}
    )
    fetched = await wrong_name("other.example")
    assert fetched.text is None
    assert fetched.error == f"has no valid HTTPS certificate for {other}"
    untrusted = HttpsPolicyFetcher(connect_to={HOST: ("127.0.0.1", policy_server.port)})
    assert (await untrusted(DOMAIN)).error == f"has no valid HTTPS certificate for {HOST}"


async def test_redirects_are_not_followed_and_errors_are_named(
    fetcher: HttpsPolicyFetcher, policy_server: PolicyServer
) -> None:
    """A 301 is reported as a forbidden redirect, a 404 by its status, a huge body by size."""
    policy_server.status = "301 Moved Permanently"
    policy_server.extra = "Location: https://evil.example/policy\r\n"
    moved = await fetcher(DOMAIN)
    assert moved.text is None
    assert "HTTP 301" in (moved.error or "")
    assert "forbids following it" in (moved.error or "")
    policy_server.status, policy_server.extra = "404 Not Found", ""
    assert (await fetcher(DOMAIN)).error == "answered HTTP 404"
    policy_server.status, policy_server.body = "200 OK", b"x" * (POLICY_LIMIT + 1)
    assert (await fetcher(DOMAIN)).error == f"is larger than {POLICY_LIMIT} bytes"


async def test_nothing_listens_is_an_error_not_an_exception(tls_ca: trustme.CA) -> None:
    """A closed port comes back as 'could not be reached', within the timeout."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    fetcher = HttpsPolicyFetcher(connect_to={HOST: ("127.0.0.1", port)}, timeout=2)
    async with asyncio.timeout(10):
        fetched = await fetcher(DOMAIN)
    assert fetched.error == "could not be reached"


def test_policy_lines_are_read_and_problems_named() -> None:
    """mode, mx patterns and max_age are read; a bad version, mode or max_age is a problem."""
    policy = parse_policy(GOOD)
    assert policy.valid
    assert (policy.mode, policy.mx, policy.max_age) == (
        "enforce",
        ("mx1.learning.example.com", "*.mail.example.net"),
        604800,
    )
    bad = parse_policy("version: STSv2\nmode: strict\nmax_age: forever\n")
    assert bad.problems == (
        "version is 'STSv2', not STSv1",
        "mode 'strict' is not enforce, testing or none",
        "max_age 'forever' is not a number of seconds up to 31557600",
    )
    assert parse_policy("version: STSv1\nmode: enforce\nmax_age: 86400").problems == (
        "there is no mx: line",
    )


@pytest.mark.parametrize(
    ("host", "pattern", "matches"),
    [
        ("mx1.example.com", "mx1.example.com", True),
        ("MX1.example.com.", "mx1.example.com", True),
        ("in2.mail.example.net", "*.mail.example.net", True),
        ("a.in2.mail.example.net", "*.mail.example.net", False),  # one label only
        ("mail.example.net", "*.mail.example.net", False),
        ("mx2.example.com", "mx1.example.com", False),
    ],
)
def test_mx_patterns_match_as_rfc_8461_says(host: str, pattern: str, matches: bool) -> None:
    """An mx: pattern matches exactly, or with *. standing for one left-most label."""
    assert mx_matches(host, pattern) is matches


async def test_an_enforced_policy_that_names_every_mx_passes(fetcher: HttpsPolicyFetcher) -> None:
    """The record, an enforce policy and MX hosts that match its patterns: ok, summarized."""
    check = await mta_sts(ZONE, fetcher)
    assert check.ok, check.message
    assert "mode enforce" in check.message
    assert "max_age 604800" in check.message
    assert "id=20261203T1200" in check.message


async def test_mode_testing_warns_to_move_to_enforce(
    fetcher: HttpsPolicyFetcher, policy_server: PolicyServer
) -> None:
    """A testing policy is valid but protects nothing yet: a warning, not a failure."""
    policy_server.body = GOOD.replace("enforce", "testing").encode()
    check = await mta_sts(ZONE, fetcher)
    assert not check.ok
    assert check.advisory
    assert check.mark == "warn"
    assert "Mode testing does not protect mail yet" in check.message
    assert "mode: enforce" in check.message


async def test_a_max_age_under_a_day_warns(
    fetcher: HttpsPolicyFetcher, policy_server: PolicyServer
) -> None:
    """An enforced policy senders keep for an hour only: a warning suggesting weeks."""
    policy_server.body = GOOD.replace("604800", "3600").encode()
    check = await mta_sts(ZONE, fetcher)
    assert check.mark == "warn"
    assert "max_age 3600 is under a day" in check.message
    assert "max_age: 1209600" in check.message


async def test_an_mx_the_policy_does_not_name_fails(
    fetcher: HttpsPolicyFetcher, policy_server: PolicyServer
) -> None:
    """With enforce, an MX outside the mx: patterns means senders refuse to deliver: FAIL."""
    policy_server.body = GOOD.replace("mx: *.mail.example.net\r\n", "").encode()
    check = await mta_sts(ZONE, fetcher)
    assert not check.ok
    assert not check.advisory
    assert "does not name the MX in2.mail.example.net" in check.message
    assert "refuse to deliver" in check.message


async def test_a_missing_record_warns_with_the_record_to_add(fetcher: HttpsPolicyFetcher) -> None:
    """No _mta-sts record: a warning whose fix is the TXT record, in BIND and console form."""
    zone = "\n".join(line for line in ZONE.splitlines() if "_mta-sts" not in line)
    check = await mta_sts(zone, fetcher)
    assert check.mark == "warn"
    (fix,) = check.fixes
    assert fix.bind().startswith(f'_mta-sts.{DOMAIN}. IN TXT "v=STSv1; id=')
    assert fix.console()["host"] == "_mta-sts"


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ('"v=STSv2; id=1"', "must start with v=STSv1"),
        ('"v=STSv1; id=not-alnum!"', "needs id= of 1 to 32 letters and digits"),
    ],
    ids=["wrong-version-tag", "bad-id"],
)
async def test_a_broken_record_fails(fetcher: HttpsPolicyFetcher, record: str, words: str) -> None:
    """A record with another version tag, or a bad id, is ignored by senders: FAIL."""
    zone = ZONE.replace('"v=STSv1; id=20261203T1200"', record)
    check = await mta_sts(zone, fetcher)
    assert check.mark == "FAIL"
    assert words in check.message


async def test_a_record_without_a_policy_fails(
    fetcher: HttpsPolicyFetcher, policy_server: PolicyServer
) -> None:
    """The record announces a policy the server does not serve (404): FAIL, with the URL."""
    policy_server.status = "404 Not Found"
    check = await mta_sts(ZONE, fetcher)
    assert check.mark == "FAIL"
    assert f"https://{HOST}/.well-known/mta-sts.txt answered HTTP 404" in check.message
