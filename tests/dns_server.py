"""A real DNS server for the tests: UDP and TCP on 127.0.0.1, ephemeral port, test zones.

It answers from a zone written as text, one record per line, in BIND's order::

    example.com.          MX   10 mx.example.com.
    mx.example.com.       A    192.0.2.10
    nullmx.example.       MX   0 .
    "_dmarc.example.com." TXT  "v=DMARC1; p=reject"

Names not in the zone get NXDOMAIN, names in it without records of the asked type
get NOERROR with no answer. ``servfail`` names answer SERVFAIL; ``silent`` names are
never answered, for timeout tests. The server runs in the test's own event loop.
"""

from __future__ import annotations

import asyncio
import shlex
import struct
from collections import defaultdict

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from sender.lifecycle import AsyncResource


def parse_zone(text: str) -> dict[tuple[str, str], list[str]]:
    """``name TYPE rdata`` lines into {(name, TYPE): [rdata, ...]}; # starts a comment."""
    records: dict[tuple[str, str], list[str]] = defaultdict(list)
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        name, rdtype, rdata = line.split(None, 2)
        name = shlex.split(name)[0] if name.startswith('"') else name
        records[(dns.name.from_text(name).to_text().lower(), rdtype.upper())].append(rdata)
    return dict(records)


class DnsServer(AsyncResource):
    """Serves ``zone`` until closed; ``queries`` counts the questions it was asked."""

    def __init__(
        self,
        zone: str,
        *,
        servfail: tuple[str, ...] = (),
        silent: tuple[str, ...] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.records = parse_zone(zone)
        self.names = {name for name, _ in self.records}
        self.servfail = {dns.name.from_text(n).to_text().lower() for n in servfail}
        self.silent = {dns.name.from_text(n).to_text().lower() for n in silent}
        self.host = host
        self.port = 0
        self.queries = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    @property
    def address(self) -> str:
        """``HOST:PORT``, as ``--dns-server`` takes it."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen on one free loopback port, TCP and UDP alike."""
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(self._serve_tcp, self.host, 0)
        self.port = self._tcp.sockets[0].getsockname()[1]
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.host, self.port)
        )

    async def aclose(self) -> None:
        """Stop listening; safe to call twice."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    def answer(self, wire: bytes, *, limit: int | None) -> bytes | None:
        """The response to one query, or None to stay silent."""
        self.queries += 1
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        if name in self.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rdtype) in self.records:
            response.answer.append(
                dns.rrset.from_text(name, 300, "IN", rdtype, *self.records[(name, rdtype)])
            )
        wire_out = response.to_wire()
        if limit is not None and len(wire_out) > limit:
            response.answer.clear()
            response.flags |= dns.flags.TC
            wire_out = response.to_wire()
        return wire_out

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(100):  # a client may send several queries on one connection
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                response = self.answer(await reader.readexactly(size), limit=None)
                if response is None:
                    continue
                writer.write(struct.pack("!H", len(response)) + response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = None
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        limit = query.payload if query.edns >= 0 else 512
        response = self.server.answer(data, limit=max(512, limit))
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)
