"""sender validate applies the canonical key and the 64-octet local-part limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sender.checks.resolve import DnsSettings, Resolver
from sender.checks.validate import Validator, Verdict
from sender.store import SqliteStore
from tests.dns_server import DnsServer

ZONE = """
x.example.             MX    10 mx.x.example.
mx.x.example.          A     192.0.2.10
xn--bcher-kva.example. MX    10 mx.x.example.
"""
T0 = 1_800_000_000.0


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    """A test DNS server with mail domains x.example and bücher.example."""
    async with DnsServer(ZONE) as server:
        yield server


def validator(dns: DnsServer, store: SqliteStore | None = None) -> Validator:
    settings = DnsSettings(nameserver=(dns.host, dns.port), timeout=0.5, lifetime=1.0)
    return Validator(Resolver(settings), store=store)


async def test_a_65_octet_local_part_is_invalid_even_at_a_known_domain(dns: DnsServer) -> None:
    """After a good address at x.example, a 65-octet local part there is still invalid."""
    checks = await validator(dns).check_many(
        ["kari@x.example", "a" * 64 + "@x.example", "b" * 65 + "@x.example"]
    )
    assert [c.verdict for c in checks] == [Verdict.OK, Verdict.OK, Verdict.INVALID]
    assert "syntax" in checks[2].reason


async def test_validate_finds_a_suppression_in_another_spelling(
    dns: DnsServer, tmp_path: Path
) -> None:
    """Suppressed as idn@xn--bcher-kva.example: idn@BÜCHER.example is reported as suppressed."""
    async with SqliteStore(tmp_path / "outbox.sqlite3") as store:
        await store.suppress("idn@xn--bcher-kva.example", kind="manual", reason="left", now=T0)
        await store.suppress("åse@x.example", kind="manual", reason="left", now=T0)
        checks = await validator(dns, store).check_many(["idn@BÜCHER.example", "Åse@x.example"])
    assert [c.verdict for c in checks] == [Verdict.INVALID, Verdict.INVALID]
    assert all("suppression list" in c.reason for c in checks)
