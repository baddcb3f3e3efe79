"""Per-domain limit: no 60 s window over the limit, and the limit used to >= 90 %.

    python bench/domains.py [--limit 300] [--sizes 400,150,60,20,5] [--window 60]

One bulk run through the library API against Postfix's ``smtp-sink`` on 127.0.0.1,
over five domains of uneven size, with ``RateLimits(global_per_second=None,
domain_per_minute=--limit)`` and ``RunSettings(concurrency=8)``. Before sending, the
rows are ingested and the scheduler is given the pending counts, so its
``eta()`` is the prediction the run is compared with.

Afterwards every message's acceptance time is read back from the store: the ``at`` of
its SENT attempt (``store.lookup`` then ``store.attempts``), the wall-clock time the
engine recorded right after the sink's 250. Per domain:

- **window max**: a window ``[t, t + 60 s)`` starts at every acceptance time; the most
  messages any window holds, and how many windows hold more than the limit
  (target: 0 for every domain);
- **utilisation**: the rate over the domain's busy period, ``(n - 1) / (last - first)``
  per minute, divided by the limit; judged for domains of >= 20 messages (target >= 90 %).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from postfix import SmtpSink, ensure_binaries
from sender_cli import BENCH_SETTINGS as SETTINGS

from sender import (
    BulkRunner,
    MessageState,
    Participant,
    RateLimits,
    RunSettings,
    Scheduler,
    SmtpSettings,
    SqliteStore,
    open_sender,
)
from sender.loop import fast_loop

TARGET_UTILISATION = 0.90
MIN_JUDGED = 20  # utilisation is judged for domains with at least this many messages
POOL_SIZE = 8
CONCURRENCY = 8
RUN_ID = "bench-domains"
LOCALES = ("en", "nb", "sv", "ja")


def participants(sizes: list[int]) -> list[tuple[str, Participant]]:
    """(domain, participant), the domains interleaved in input order as a CSV might be."""
    out: list[tuple[str, Participant]] = []
    left = list(sizes)
    i = 0
    while any(left):  # ends: every pass takes one from each non-empty domain
        for d, n in enumerate(left):
            if not n:
                continue
            left[d] -= 1
            domain = f"domain{d}.example"
            out.append(
                (
                    domain,
                    Participant(
                        f"user{i}@{domain}",
                        f"User {i}",
                        f"p-{i}",
                        "PY101",
                        LOCALES[i % len(LOCALES)],
                        {"course_name": "Introduction to Python"},
                    ),
                )
            )
            i += 1
    return out


@dataclass(frozen=True, slots=True)
class DomainResult:
    domain: str
    times: list[float]  # acceptance times, sorted

    def window_counts(self, window: float) -> list[int]:
        """Messages in [t, t + window) for every acceptance time t."""
        ts = self.times
        return [bisect.bisect_left(ts, t + window) - i for i, t in enumerate(ts)]

    def per_minute(self) -> float | None:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return None
        return (len(self.times) - 1) / (self.times[-1] - self.times[0]) * 60


@dataclass(frozen=True, slots=True)
class Result:
    domains: list[DomainResult]
    eta: float | None
    elapsed: float  # runner.run(), from the first claim to its return
    counts: dict[MessageState, int]


async def measure(args: argparse.Namespace, port: int, workdir: Path) -> Result:
    people = participants(args.sizes)
    store = SqliteStore(workdir / "outbox.sqlite3")
    limits = RateLimits(global_per_second=None, domain_per_minute=args.limit)
    scheduler = Scheduler(limits)
    smtp = SmtpSettings("127.0.0.1", port, pool_size=POOL_SIZE)
    try:
        async with open_sender(SETTINGS, smtp=smtp, scheduler=scheduler) as sender:
            settings = RunSettings(concurrency=CONCURRENCY)
            runner = BulkRunner(sender, store, settings)
            run, _ = await store.create_run(
                RUN_ID, template=settings.template, source="library", now=time.time()
            )
            await runner.ingest(run, [p for _, p in people])
            # What run() does first; it finds the same counts and changes nothing.
            scheduler.set_pending(await store.pending_domains(RUN_ID, now=time.time()))
            eta = scheduler.eta()
            start = time.monotonic()
            report = await asyncio.wait_for(runner.run(RUN_ID), args.timeout)
            elapsed = time.monotonic() - start
            by_domain: dict[str, list[float]] = {}
            for domain, person in people:
                record = await store.lookup(RUN_ID, person.participant_id)
                if record is None:
                    raise RuntimeError(f"{person.participant_id} is not in the outbox")
                sent = [
                    a.at for a in await store.attempts(record.id) if a.state is MessageState.SENT
                ]
                if len(sent) != 1:
                    raise RuntimeError(f"{person.participant_id}: {len(sent)} SENT attempts")
                by_domain.setdefault(domain, []).append(sent[0])
    finally:
        await store.aclose()
    return Result(
        domains=[DomainResult(d, sorted(ts)) for d, ts in by_domain.items()],
        eta=eta,
        elapsed=elapsed,
        counts=dict(report.counts),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=float, default=300.0, help="per domain, per minute")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[400, 150, 60, 20, 5],
        help="messages per domain, comma-separated",
    )
    parser.add_argument("--window", type=float, default=60.0, help="sliding window, seconds")
    parser.add_argument("--timeout", type=float, default=0.0, help="run limit, s (0: 2x ETA)")
    args = parser.parse_args()
    if args.limit <= 0 or not args.sizes or min(args.sizes) < 1:
        parser.error("--limit must be positive and every size at least 1")
    # The limit per window is L * window / 60 messages.
    allowed = args.limit * args.window / 60
    expected = (max(args.sizes) - 1) * 60 / args.limit
    if not args.timeout:
        args.timeout = 2 * expected + 60

    sink_path, _source, env = ensure_binaries()
    with (
        tempfile.TemporaryDirectory(prefix="bench-domains-") as tmp,
        SmtpSink(sink_path, env) as sink,
    ):
        with asyncio.Runner(loop_factory=fast_loop()) as runner:  # uvloop when installed
            result = runner.run(measure(args, sink.port, Path(tmp)))
        time.sleep(0.2)  # the sink writes its counter after each message
        sunk = sink.messages

    total = sum(args.sizes)
    print(
        f"per-domain limit {args.limit:g}/min ({allowed:g} per {args.window:g} s window),"
        f" no global limit, concurrency {CONCURRENCY}, {total} messages"
    )
    print()
    print(
        "| domain | messages | busy s | max in any window | windows over | msgs/min"
        " | utilisation | no overshoot | utilisation ≥ 90 % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    ok = True
    for dom in sorted(result.domains, key=lambda d: -len(d.times)):
        counts = dom.window_counts(args.window)
        over = sum(1 for c in counts if c > allowed)
        rate = dom.per_minute()
        use = None if rate is None else rate / args.limit
        busy = dom.times[-1] - dom.times[0]
        window_ok = over == 0
        judged = len(dom.times) >= MIN_JUDGED and use is not None
        use_ok = not judged or (use is not None and use >= TARGET_UTILISATION)
        ok = ok and window_ok and use_ok
        print(
            f"| {dom.domain} | {len(dom.times)} | {busy:.1f} | {max(counts)} | {over}"
            f" | {'—' if rate is None else f'{rate:.1f}'}"
            f" | {'—' if use is None else f'{use:.1%}'}"
            f" | {'PASS' if window_ok else 'FAIL'}"
            f" | {('PASS' if use_ok else 'FAIL') if judged else 'n/a (< 20)'} |"
        )
    print()
    margin = RateLimits().spacing_margin
    eta = "—" if result.eta is None else f"{result.eta:.1f} s"
    print(
        f"run took {result.elapsed:.1f} s; scheduler.eta() after ingest said {eta};"
        f" (largest - 1) x 60 / limit = {expected:.1f} s,"
        f" x (1 + {margin:g} spacing margin) = {expected * (1 + margin):.1f} s"
    )
    sent = result.counts.get(MessageState.SENT, 0)
    check = "ok" if sunk == sent == total else "MISMATCH"
    print(f"sent {sent} of {total}; sink counted {sunk}: {check}")
    ok = ok and sunk == sent == total
    print("overall:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
