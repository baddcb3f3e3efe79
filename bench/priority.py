"""Priority-lane latency: single sends while a bulk run saturates the same Sender.

    python bench/priority.py [--bulk 50000] [--singles 200] [--domains 200]

One process, the library API, Postfix's ``smtp-sink`` on 127.0.0.1:

1. **baseline**: ``--singles`` calls of ``await sender.send_get_link(participant)``, one
   after another with 20-50 ms gaps, and no bulk run going;
2. **under bulk**: a :class:`~sender.BulkRunner` (``RunSettings(concurrency=8)``, no rate
   limits, a pool of 8 connections) sends ``--bulk`` invitations; once the store shows
   ``--warm`` of them sent, the same single sends again, the bulk run's rate measured over
   the same window from the store's counts. Then ``runner.stop()`` ends the bulk run.

A single send is timed from the call to its return, which comes with the sink's 250.
Target: p99 < 1 s under bulk. A few untimed sends open the connections first.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from csvgen import participant
from postfix import SmtpSink, ensure_binaries
from sender_cli import BENCH_SETTINGS as SETTINGS

from sender import (
    BulkRunner,
    DeliveryStatus,
    InputError,
    MessageState,
    Participant,
    RateLimits,
    RunSettings,
    Scheduler,
    Sender,
    SmtpSettings,
    SqliteStore,
    open_sender,
)
from sender.loop import fast_loop

TARGET_P99_MS = 1000.0
POOL_SIZE = 8
CONCURRENCY = 8
WARMUP_SENDS = 8  # untimed, before the baseline: the pool's connections get opened
GAP_SECONDS = (0.020, 0.050)
SINGLE_TIMEOUT = 30.0  # seconds for any one single send
WARM_TIMEOUT = 300.0  # seconds for the bulk run to reach --warm sent
WARM_POLL = 0.1  # seconds between looks at the store's counts
STOP_TIMEOUT = 60.0  # seconds for the bulk run to end after stop()
RUN_ID = "bench-priority"
LOCALES = ("en", "nb", "sv", "ja")


def bulk_participants(count: int, domains: int) -> list[Participant]:
    return [participant(i, domains=domains) for i in range(count)]


def single(phase: str, i: int) -> Participant:
    """A participant outside the bulk run (its own id and address)."""
    return Participant(
        f"{phase}{i}@priority{i % 10}.example",
        f"Single {i}",
        f"{phase}-{i}",
        "PY101",
        LOCALES[i % len(LOCALES)],
    )


@dataclass(frozen=True, slots=True)
class Latencies:
    label: str
    ms: list[float]

    def pct(self, q: float) -> float:
        """Nearest-rank percentile: the smallest value with at least q of the samples <= it."""
        ordered = sorted(self.ms)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def timed_singles(
    sender: Sender, phase: str, count: int, rng: random.Random, deadline: float
) -> list[float]:
    """``count`` single sends, one after another with a 20-50 ms gap; ms per send."""
    out: list[float] = []
    for i in range(count):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{phase}: {i} of {count} single sends before the deadline")
        participant = single(phase, i)
        start = time.perf_counter()
        result = await asyncio.wait_for(sender.send_get_link(participant), SINGLE_TIMEOUT)
        out.append((time.perf_counter() - start) * 1000)
        if result.status is not DeliveryStatus.ACCEPTED:
            raise RuntimeError(f"{phase} send {i} not accepted: {result.describe()}")
        await asyncio.sleep(rng.uniform(*GAP_SECONDS))
    return out


@dataclass(frozen=True, slots=True)
class Result:
    baseline: Latencies
    under_bulk: Latencies
    window_s: float
    bulk_sent_in_window: int
    bulk_running_throughout: bool
    bulk_sent_total: int
    singles_sent: int
    stop_s: float


async def measure(args: argparse.Namespace, port: int, workdir: Path) -> Result:
    rng = random.Random(20261122)
    deadline = time.monotonic() + args.timeout
    store = SqliteStore(workdir / "outbox.sqlite3")
    scheduler = Scheduler(RateLimits(global_per_second=None, domain_per_minute=None))
    smtp = SmtpSettings("127.0.0.1", port, pool_size=POOL_SIZE)
    try:
        async with open_sender(SETTINGS, smtp=smtp, scheduler=scheduler) as sender:
            # Open all pool connections: the bulk phase has them open too.
            await asyncio.gather(
                *(sender.send_get_link(single("warm", i)) for i in range(WARMUP_SENDS))
            )
            baseline = await timed_singles(sender, "base", args.singles, rng, deadline)

            runner = BulkRunner(sender, store, RunSettings(concurrency=CONCURRENCY))
            participants = bulk_participants(args.bulk, args.domains)
            bulk = asyncio.create_task(runner.run(RUN_ID, participants))

            async def warm() -> bool:
                if bulk.done():
                    bulk.result()  # raises what the run raised
                    raise RuntimeError("the bulk run ended before the measurement")
                try:
                    counts = await store.counts(RUN_ID)
                except InputError:  # the run is not created yet
                    return False
                return counts[MessageState.SENT] >= args.warm

            try:
                polls = int(min(WARM_TIMEOUT, deadline - time.monotonic()) / WARM_POLL)
                for _ in range(polls):
                    if await warm():
                        break
                    await asyncio.sleep(WARM_POLL)
                else:
                    raise TimeoutError(f"the bulk run did not send {args.warm} in time")
                sent_before = (await store.counts(RUN_ID))[MessageState.SENT]
                start = time.monotonic()
                under = await timed_singles(sender, "prio", args.singles, rng, deadline)
                window = time.monotonic() - start
                sent_after = (await store.counts(RUN_ID))[MessageState.SENT]
                throughout = not bulk.done()
            finally:
                runner.stop()
                stop_start = time.monotonic()
                report = await asyncio.wait_for(bulk, STOP_TIMEOUT)
                stop_s = time.monotonic() - stop_start
    finally:
        await store.aclose()
    return Result(
        baseline=Latencies("no bulk run", baseline),
        under_bulk=Latencies(f"during a {args.bulk:,}-message bulk run", under),
        window_s=window,
        bulk_sent_in_window=sent_after - sent_before,
        bulk_running_throughout=throughout,
        bulk_sent_total=report.counts[MessageState.SENT],
        singles_sent=WARMUP_SENDS + 2 * args.singles,
        stop_s=stop_s,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bulk", type=int, default=50_000, help="bulk run size")
    parser.add_argument("--singles", type=int, default=200, help="timed single sends per phase")
    parser.add_argument("--domains", type=int, default=200, help="domains in the bulk run")
    parser.add_argument("--warm", type=int, default=1000, help="bulk messages sent before timing")
    parser.add_argument("--timeout", type=float, default=600.0, help="overall limit, seconds")
    args = parser.parse_args()
    if args.bulk < args.warm or args.singles < 1:
        parser.error("--bulk must be at least --warm, and --singles at least 1")

    sink_path, _source, env = ensure_binaries()
    with (
        tempfile.TemporaryDirectory(prefix="bench-priority-") as tmp,
        SmtpSink(sink_path, env) as sink,
    ):
        started = time.monotonic()
        with asyncio.Runner(loop_factory=fast_loop()) as runner:  # uvloop when installed
            result = runner.run(measure(args, sink.port, Path(tmp)))
        elapsed = time.monotonic() - started
        time.sleep(0.2)  # the sink writes its counter after each message
        sunk = sink.messages

    expected = result.bulk_sent_total + result.singles_sent
    bulk_rate = result.bulk_sent_in_window / result.window_s
    print(f"priority lane: {args.singles} single sends (send_get_link), 20-50 ms apart")
    print(f"sink {sink.url}, pool_size={POOL_SIZE}, bulk concurrency={CONCURRENCY}, no limits")
    print()
    target = f"target p99 < {TARGET_P99_MS:.0f} ms"
    print(f"| phase | n | p50 ms | p95 ms | p99 ms | max ms | {target} |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for lat, judged in ((result.baseline, False), (result.under_bulk, True)):
        verdict = ("PASS" if lat.pct(0.99) < TARGET_P99_MS else "FAIL") if judged else "—"
        print(
            f"| {lat.label} | {len(lat.ms)} | {lat.pct(0.50):.1f} | {lat.pct(0.95):.1f}"
            f" | {lat.pct(0.99):.1f} | {max(lat.ms):.1f} | {verdict} |"
        )
    print()
    print(
        f"bulk run during the window: {result.bulk_sent_in_window:,} sent in"
        f" {result.window_s:.1f} s = {bulk_rate:,.0f} msgs/s"
        f" (still running at the end: {'yes' if result.bulk_running_throughout else 'NO'})"
    )
    print(
        f"bulk run stopped after {result.bulk_sent_total:,} of {args.bulk:,} sent;"
        f" stop() took {result.stop_s * 1000:.0f} ms; whole benchmark {elapsed:.0f} s"
    )
    check = "ok" if sunk == expected else "MISMATCH"
    print(f"sink counted {sunk:,}, expected {expected:,} (bulk sent + single sends): {check}")
    ok = (
        result.under_bulk.pct(0.99) < TARGET_P99_MS
        and result.bulk_running_throughout
        and sunk == expected
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
