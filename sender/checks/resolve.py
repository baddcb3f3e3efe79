"""DNS lookups for address checks and the sender-domain doctor; the only dnspython user.

Every lookup ends in an :class:`Answer` with a plain status, never an exception:
``ok``, ``nxdomain`` (the name does not exist), ``nodata`` (it exists, without
records of that type), ``servfail`` or ``timeout``. Callers decide what each
means; an address check, say, must call ``servfail`` and ``timeout`` unknown,
never invalid. Answers are cached per (name, type) for the resolver's life, and
concurrent lookups of one name share a single query.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from sender.addresses import bare_domain
from sender.errors import ConfigurationError

__all__ = ["Answer", "DnsSettings", "LookupStatus", "Resolver"]


class LookupStatus(StrEnum):
    OK = "ok"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Answer:
    """What DNS said about one (name, type): a status and the records as text.

    MX records read ``"10 mx.example.com."``; TXT records are their strings joined,
    as SPF and DKIM readers want them.
    """

    name: str
    rdtype: str
    status: LookupStatus
    records: tuple[str, ...] = ()

    @property
    def settled(self) -> bool:
        """Whether DNS gave a definite answer (records, none, or no such name)."""
        return self.status in (LookupStatus.OK, LookupStatus.NODATA, LookupStatus.NXDOMAIN)


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """Which nameserver to ask (default: the system's), and how patiently."""

    nameserver: tuple[str, int] | None = None  # (address, port), e.g. ("127.0.0.1", 5353)
    timeout: float = 2.0  # seconds per attempt
    lifetime: float = 4.0  # seconds per lookup, retries included
    concurrency: int = 64  # lookups in flight at once

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.lifetime <= 0 or self.concurrency < 1:
            raise ConfigurationError(
                "DNS timeouts must be positive and concurrency at least 1", setting="dns"
            )

    @classmethod
    def from_text(cls, text: str, /) -> DnsSettings:
        """``HOST:PORT`` (or ``[v6]:PORT``, or just ``HOST`` for port 53), as ``--dns-server``."""
        host, sep, port = text.strip().rpartition(":")
        if not sep or (host.count(":") and not host.startswith("[")):
            host, port = text.strip(), "53"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"DNS server {text!r} is not HOST:PORT", setting="dns")
        return cls(nameserver=(host, int(port)))


class Resolver:
    """Cached, bounded, exception-free DNS lookups over dnspython's async resolver."""

    def __init__(self, settings: DnsSettings | None = None, /) -> None:
        self.settings = settings or DnsSettings()
        if self.settings.nameserver is None:
            resolver = dns.asyncresolver.Resolver()
        else:
            resolver = dns.asyncresolver.Resolver(configure=False)
            host, port = self.settings.nameserver
            resolver.nameservers = [host]
            resolver.port = port
        resolver.timeout = self.settings.timeout
        resolver.lifetime = self.settings.lifetime
        self._resolver = resolver
        self._limit = asyncio.Semaphore(self.settings.concurrency)
        self._cache: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self.queries = 0  # lookups that went to the nameserver (cache misses)

    async def lookup(self, name: str, rdtype: str, /) -> Answer:
        """One (name, type): from the cache, or asked once however many callers wait."""
        key = (bare_domain(name), rdtype.upper())
        future = self._cache.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._cache[key] = future
            try:
                future.set_result(await self._ask(*key))
            except BaseException as exc:  # cancelled: let the next caller ask again
                del self._cache[key]
                future.cancel()
                raise exc
        return await asyncio.shield(future)

    async def _ask(self, name: str, rdtype: str) -> Answer:
        async with self._limit:
            self.queries += 1
            try:
                answer = await self._resolver.resolve(
                    dns.name.from_text(name), rdtype, raise_on_no_answer=False
                )
            except dns.resolver.NXDOMAIN:
                return Answer(name, rdtype, LookupStatus.NXDOMAIN)
            except (dns.resolver.LifetimeTimeout, dns.exception.Timeout):
                return Answer(name, rdtype, LookupStatus.TIMEOUT)
            except (dns.resolver.NoNameservers, dns.resolver.YXDOMAIN):
                return Answer(name, rdtype, LookupStatus.SERVFAIL)
            except (dns.exception.DNSException, ValueError, OSError):
                return Answer(name, rdtype, LookupStatus.SERVFAIL)
        if answer.rrset is None:
            return Answer(name, rdtype, LookupStatus.NODATA)
        records = tuple(_text(rdata, rdtype) for rdata in answer.rrset)
        return Answer(name, rdtype, LookupStatus.OK, records)


def _text(rdata: object, rdtype: str) -> str:
    if rdtype == "TXT":
        strings = getattr(rdata, "strings", ())
        return b"".join(strings).decode("utf-8", "replace")
    return str(rdata)
