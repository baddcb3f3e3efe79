"""Throughput of the SQLite outbox: ingest, and claim + record.

Run from the repository root (or anywhere)::

    python bench/store_ingest.py [--rows 200000] [--batch 1000] [--messages 20000]

Ingest: ``add_rows`` of ``--rows`` participants in batches of ``--batch``, as the
engine calls it, into a fresh file; once with participant ids in row order
(an LMS export sorted by id) and once with random ids (sorted by name, or
UUIDs), which scatter writes over the participant-key index. Rows are built
before timing starts. Sending: ``claim`` then ``record`` (SENT) for
``--messages`` messages spread over 50 domains, one at a time and then through
``claim_many``/``record_many`` in batches of 50, as the engine does. Prints
plain numbers; the file lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sender.models import Participant, SmtpReply
from sender.store import MessageState, NewRow, Outcome, SqliteStore

RUN = "bench"
DOMAINS = [f"d{n}.example.com" for n in range(50)]
SENT = Outcome(state=MessageState.SENT, at=1.0, reply=SmtpReply(250, "2.0.0", "ok"))


def make_rows(count: int, *, shuffled_ids: bool) -> list[NewRow]:
    ids = [f"{n:09d}" for n in range(count)]
    if shuffled_ids:
        random.Random(1).shuffle(ids)
    return [
        NewRow(
            row=n + 2,
            participant=Participant(
                email=f"user{n}@{DOMAINS[n % len(DOMAINS)]}",
                name=f"Participant Number {n}",
                participant_id=ids[n],
                course_id="PY101",
                vars={"group": "A", "room": "B2"},
            ),
        )
        for n in range(count)
    ]


async def ingest(path: Path, rows: list[NewRow], batch: int) -> float:
    async with SqliteStore(path) as store:
        await store.create_run(RUN, template="invitation", source="bench", now=0.0)
        start = time.perf_counter()
        for first in range(0, len(rows), batch):
            await store.add_rows(RUN, rows[first : first + batch])
        elapsed = time.perf_counter() - start
        counts = await store.counts(RUN)
        assert counts[MessageState.QUEUED] == len(rows)
    return len(rows) / elapsed


async def send_one_by_one(path: Path, messages: int) -> float:
    async with SqliteStore(path) as store:
        start = time.perf_counter()
        for n in range(messages):
            message = await store.claim(RUN, DOMAINS[n % len(DOMAINS)], now=1.0, owner="bench")
            assert message is not None
            await store.record(message.id, SENT)
        return messages / (time.perf_counter() - start)


async def send_batched(path: Path, messages: int, batch: int = 50) -> float:
    async with SqliteStore(path) as store:
        start = time.perf_counter()
        for _ in range(messages // batch):
            claimed = await store.claim_many(RUN, DOMAINS[:batch], now=1.0, owner="bench")
            await store.record_many([(m.id, SENT) for m in claimed if m is not None])
        return messages / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for label, shuffled in (("ids in row order", False), ("random ids", True)):
            rows = make_rows(args.rows, shuffled_ids=shuffled)
            path = Path(tmp) / f"{shuffled}.sqlite3"
            rate = await ingest(path, rows, args.batch)
            print(f"add_rows, {label:16} {rate:10,.0f} rows/s")
        rate = await send_one_by_one(path, args.messages)
        print(f"claim + record, one by one   {rate:10,.0f} messages/s")
        rate = await send_batched(path, args.messages)
        print(f"claim_many + record_many x50 {rate:10,.0f} messages/s")


if __name__ == "__main__":
    asyncio.run(main())
