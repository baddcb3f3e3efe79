"""What only the PostgreSQL store promises: safe migrations, concurrent claims, clear errors.

The role-by-role contract is tests/test_store_contract.py, which runs on PostgreSQL too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack

import psycopg
import pytest

from sender.errors import ConfigurationError
from sender.models import Participant
from sender.store import NewRow
from sender.store.postgres import PostgresStore
from sender.store.postgres.schema import SCHEMA_VERSION

RUN = "2026-11-invite"
T0 = 1_700_000_000.0


def rows(count: int, domains: tuple[str, ...]) -> list[NewRow]:
    return [
        NewRow(
            row=n,
            participant=Participant(
                email=f"user{n}@{domains[n % len(domains)]}",
                name=f"User {n}",
                participant_id=f"p{n}",
                course_id="PY101",
            ),
        )
        for n in range(2, count + 2)
    ]


async def test_concurrent_opens_of_a_fresh_database_migrate_it_once(
    postgres_database: Callable[[str], str],
) -> None:
    """Eight stores starting at once on an empty database all work; the schema is made once."""
    url = postgres_database("migrate")
    stores = [PostgresStore(url, min_size=0, max_size=1) for _ in range(8)]
    async with AsyncExitStack() as stack:
        for store in stores:
            stack.push_async_callback(store.aclose)
        await asyncio.gather(*(store.start() for store in stores))
        await stores[0].create_run(RUN, template="invitation", source="x", now=T0)
        assert all([await store.get_run(RUN) is not None for store in stores])
    with psycopg.connect(url) as conn:
        applied = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert applied == [(version,) for version in range(1, SCHEMA_VERSION + 1)]


async def test_a_database_from_a_newer_sender_is_refused(
    postgres_database: Callable[[str], str],
) -> None:
    """A schema version above this sender's is a clear error, and nothing is changed."""
    url = postgres_database("newer")
    async with PostgresStore(url) as store:
        await store.latest_run()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigurationError, match=r"schema version \d+.*Upgrade sender"):
        async with PostgresStore(url) as store:
            await store.latest_run()


async def test_concurrent_claimers_get_every_message_exactly_once(postgres_url: str) -> None:
    """Four stores with three tasks each claiming batches at once never share a message."""
    domains = ("a.example", "b.example", "c.example")
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(PostgresStore(postgres_url, max_size=3))
            for _ in range(4)
        ]
        run = f"{RUN}-claims"
        await stores[0].create_run(run, template="invitation", source="x", now=T0)
        await stores[0].add_rows(run, rows(600, domains))
        claimed: list[int] = []

        async def claimer(store: PostgresStore, owner: str) -> None:
            while True:
                batch = await store.claim_many(run, [*domains, *domains], now=T0, owner=owner)
                got = [message.id for message in batch if message is not None]
                if not got:
                    return
                claimed.extend(got)

        await asyncio.gather(
            *(claimer(store, f"w{i}:{t}") for i, store in enumerate(stores) for t in range(3))
        )
        assert len(claimed) == len(set(claimed)) == 600
        counts = await stores[1].counts(run)
        assert counts["sending"] == 600


async def test_a_claim_never_takes_more_than_asked(postgres_url: str) -> None:
    """claim_many takes at most as many messages of a domain as it names that domain."""
    async with PostgresStore(postgres_url) as store:
        run = f"{RUN}-bounded"
        await store.create_run(run, template="invitation", source="x", now=T0)
        await store.add_rows(run, rows(10, ("a.example",)))
        batch = await store.claim_many(
            run, ["a.example", "b.example", "a.example"], now=T0, owner="w"
        )
        assert [m is not None for m in batch] == [True, False, True]
        assert (await store.counts(run))["sending"] == 2
        assert await store.pending_domains(run, now=T0) == {"a.example": 8}


async def test_an_unreachable_database_is_one_line_naming_the_url_without_password(
    closed_port: int,
) -> None:
    """Connecting to nothing fails fast with the URL (no password) and how it failed."""
    store = PostgresStore(f"postgresql://lms:s3cret@127.0.0.1:{closed_port}/outbox")
    with pytest.raises(ConfigurationError) as caught:
        await store.latest_run()
    message = str(caught.value)
    assert f"postgresql://lms@127.0.0.1:{closed_port}/outbox" in message
    assert "s3cret" not in message
    assert "\n" not in message
    assert caught.value.setting == "store"
    await store.aclose()
