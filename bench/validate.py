"""Address checks: ``Validator.check_many`` on 100,000 addresses against email-validator.

    python bench/validate.py [--addresses 100000] [--domains 2000] [--sample 300] [--seed 1]

The tests' DNS server (``tests/dns_server.py``) serves ``--domains`` domains: 80 % with an
MX, 10 % with only an A record, 5 % with a null MX and 5 % that do not exist. It runs in
a child process, so its CPU is not the client's. ``--addresses`` addresses are spread
over the domains at random (fixed seed), about 50 per domain.

Measured, one after the other in the same run, each with a fresh resolver cache:

- **sender**: ``Validator(Resolver(DnsSettings(nameserver=...))).check_many(addresses)``
  on all of them;
- **email-validator, per address**: ``validate_email(addr, check_deliverability=True,
  dns_resolver=caching_resolver(dns_resolver=r))`` with ``r`` pointed at the same server,
  on the first ``--sample`` addresses, extrapolated to all (the brief's baseline);
- **email-validator, whole list**: the same call on all addresses with one caching
  resolver, so each domain is asked once there too (measured, not extrapolated).

Verdicts are compared with what the zone says, so a fast wrong answer cannot pass.
Targets: sender >= 20x faster than the per-address baseline, and < 10 s for 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dns.resolver  # noqa: E402
import email_validator  # noqa: E402

from sender.checks.resolve import DnsSettings, Resolver  # noqa: E402
from sender.checks.validate import Validator, Verdict  # noqa: E402
from tests.dns_server import DnsServer  # noqa: E402

KINDS = (("mx", 0.80), ("a", 0.10), ("nullmx", 0.05), ("nxdomain", 0.05))
EXPECTED = {
    "mx": Verdict.OK,
    "a": Verdict.OK,
    "nullmx": Verdict.INVALID,
    "nxdomain": Verdict.INVALID,
}


def make_domains(count: int) -> tuple[list[tuple[str, str]], str]:
    """(domain, kind) pairs and the zone serving them."""
    domains: list[tuple[str, str]] = []
    for kind, share in KINDS:
        domains += [(f"{kind}{i}.example", kind) for i in range(round(count * share))]
    lines = ["mx.bench.example. A 93.184.215.14"]
    for domain, kind in domains:
        if kind == "mx":
            lines.append(f"{domain}. MX 10 mx.bench.example.")
        elif kind == "a":
            lines.append(f"{domain}. A 93.184.215.{len(lines) % 250 + 1}")  # global: email-
        elif kind == "nullmx":  # validator ignores A records of private/test ranges
            lines.append(f"{domain}. MX 0 .")
    return domains, "\n".join(lines)


def serve(zone: str, conn: Connection) -> None:
    """The child process: serve the zone until the parent says stop."""

    async def main() -> None:
        async with DnsServer(zone) as server:
            conn.send(server.port)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            conn.send(server.queries)

    asyncio.run(main())


def baseline(addresses: list[str], port: int) -> tuple[float, Counter[str]]:
    """email-validator with deliverability, one caching resolver for all ``addresses``."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    cached = email_validator.caching_resolver(timeout=4, dns_resolver=resolver)
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    for address in addresses:
        try:
            info = email_validator.validate_email(
                address, check_deliverability=True, dns_resolver=cached
            )
        except email_validator.EmailNotValidError:
            outcomes["invalid"] += 1
        else:
            outcomes["unknown" if info.mx is None else "ok"] += 1
    return time.perf_counter() - started, outcomes


async def ours(addresses: list[str], port: int) -> tuple[float, list[Verdict], int]:
    resolver = Resolver(DnsSettings(nameserver=("127.0.0.1", port)))
    started = time.perf_counter()
    checks = await Validator(resolver).check_many(addresses)
    elapsed = time.perf_counter() - started
    return elapsed, [check.verdict for check in checks], resolver.queries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--addresses", type=int, default=100_000)
    parser.add_argument("--domains", type=int, default=2000)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-full-baseline", action="store_true")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    domains, zone = make_domains(args.domains)
    picks = [rng.randrange(len(domains)) for _ in range(args.addresses)]
    addresses = [f"user{i}.{rng.randrange(10**6)}@{domains[d][0]}" for i, d in enumerate(picks)]
    expected = [EXPECTED[domains[d][1]] for d in picks]

    parent, child = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(target=serve, args=(zone, child))
    process.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the DNS server did not start")
        port = parent.recv()
        print(f"{len(addresses):,} addresses over {len(domains):,} domains; DNS on :{port}")

        ours_s, verdicts, queries = asyncio.run(ours(addresses, port))
        wrong = sum(v is not e for v, e in zip(verdicts, expected, strict=True))
        print(
            f"sender check_many: {ours_s:.2f} s ({ours_s / len(addresses) * 1e6:.1f} µs/address),"
            f" {queries:,} DNS queries, verdicts {dict(Counter(map(str, verdicts)))},"
            f" {wrong} differ from the zone"
        )

        sample = addresses[: args.sample]
        sample_s, sample_outcomes = baseline(sample, port)
        per_address = sample_s / len(sample)
        extrapolated = per_address * len(addresses)
        print(
            f"email-validator per address: {per_address * 1e3:.2f} ms/address on {len(sample)}"
            f" ({dict(sample_outcomes)}), extrapolated to {len(addresses):,}: {extrapolated:.1f} s"
        )
        ratio = extrapolated / ours_s
        full_s = None
        if not args.skip_full_baseline:
            full_s, full_outcomes = baseline(addresses, port)
            print(
                f"email-validator whole list, one caching resolver: {full_s:.2f} s"
                f" ({dict(full_outcomes)})"
            )
    finally:
        parent.send("stop")
        if parent.poll(10):
            print(f"server answered {parent.recv():,} queries in all")
        process.join(10)
        if process.is_alive():
            process.terminate()

    fast = ratio >= 20
    quick = ours_s < 10 * len(addresses) / 100_000
    print(f"ratio vs per-address extrapolation: {ratio:.1f}x (target >= 20x): ", end="")
    print("PASS" if fast else "FAIL")
    if full_s is not None:
        print(f"ratio vs whole-list caching run: {full_s / ours_s:.1f}x (for information)")
    print(f"sender time {ours_s:.2f} s (target < 10 s per 100,000):", "PASS" if quick else "FAIL")
    print("verdicts match the zone:", "PASS" if wrong == 0 else "FAIL")
    return 0 if fast and quick and wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
