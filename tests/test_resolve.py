"""DNS lookups against a real DNS server on loopback serving test zones."""

from __future__ import annotations

import asyncio

import pytest

from sender.checks.resolve import DnsSettings, LookupStatus, Resolver
from sender.errors import ConfigurationError
from tests.dns_server import DnsServer

ZONE = """
mail.example.      MX   10 mx.mail.example.
mx.mail.example.   A    192.0.2.10
aonly.example.     A    192.0.2.20
nullmx.example.    MX   0 .
spf.example.       TXT  "v=spf1 include:amazonses.com" " ~all"
long.example.      TXT  "%s"
""" % ("x" * 250)


def resolver_for(server: DnsServer, **kw: float) -> Resolver:
    return Resolver(DnsSettings(nameserver=(server.host, server.port), **kw))  # type: ignore[arg-type]


async def test_records_come_back_as_text() -> None:
    """MX records read 'pref host.'; TXT strings are joined."""
    async with DnsServer(ZONE) as server:
        resolver = resolver_for(server)
        mx = await resolver.lookup("mail.example", "MX")
        assert (mx.status, mx.records) == (LookupStatus.OK, ("10 mx.mail.example.",))
        txt = await resolver.lookup("spf.example", "TXT")
        assert txt.records == ("v=spf1 include:amazonses.com ~all",)
        null = await resolver.lookup("nullmx.example", "MX")
        assert null.records == ("0 .",)


async def test_missing_names_and_types_are_told_apart() -> None:
    """No such name is NXDOMAIN; a name without that type is NODATA."""
    async with DnsServer(ZONE) as server:
        resolver = resolver_for(server)
        assert (await resolver.lookup("nope.example", "MX")).status is LookupStatus.NXDOMAIN
        assert (await resolver.lookup("aonly.example", "MX")).status is LookupStatus.NODATA


async def test_servfail_and_silence_are_not_answers() -> None:
    """SERVFAIL and a server that never answers end as servfail and timeout, promptly."""
    async with DnsServer(ZONE, servfail=("broken.example",), silent=("slow.example",)) as server:
        resolver = resolver_for(server, timeout=0.5, lifetime=1.5)
        broken = await resolver.lookup("broken.example", "MX")
        assert broken.status is LookupStatus.SERVFAIL
        assert not broken.settled
        async with asyncio.timeout(5):
            slow = await resolver.lookup("slow.example", "MX")
        assert slow.status is LookupStatus.TIMEOUT


async def test_one_query_per_name_however_many_ask() -> None:
    """Concurrent and repeated lookups of one (name, type) ask the server once."""
    async with DnsServer(ZONE) as server:
        resolver = resolver_for(server)
        answers = await asyncio.gather(*(resolver.lookup("MAIL.example.", "mx") for _ in range(50)))
        assert {a.status for a in answers} == {LookupStatus.OK}
        assert resolver.queries == 1
        assert server.queries == 1


async def test_long_txt_records_arrive_whole() -> None:
    """A TXT record longer than a small UDP answer is still read in full."""
    async with DnsServer(ZONE) as server:
        answer = await resolver_for(server).lookup("long.example", "TXT")
        assert answer.records == ("x" * 250,)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:53", ("::1", 53)),
        ("10.0.0.1", ("10.0.0.1", 53)),
    ],
)
def test_dns_server_option_parses(text: str, expected: tuple[str, int]) -> None:
    """--dns-server takes HOST:PORT, [v6]:PORT or HOST."""
    assert DnsSettings.from_text(text).nameserver == expected


def test_bad_dns_server_option_is_named() -> None:
    """A port that is not a number is a configuration error naming the setting."""
    with pytest.raises(ConfigurationError, match="DNS server"):
        DnsSettings.from_text("127.0.0.1:http")
