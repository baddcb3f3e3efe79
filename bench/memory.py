"""Peak resident memory of ``sender run`` as the CSV grows, against Postfix's smtp-sink.

    python bench/memory.py [--rows 100000,300000,1000000] [--min-rate 1000] [--keep]

For each size: write a participant CSV to disk row by row, start ``sender run`` (the
command line in ``bench/sender_cli.py``, limits off) in a fresh working directory,
and measure its memory two ways:

- **peak RSS**: ``ru_maxrss`` from ``wait4()``, the kernel's high-water mark for the
  process (and any children it waited for): exact, nothing to miss between samples;
- **sampled**: the sum of ``VmRSS`` over the process and its live descendants, read
  from ``/proc`` every 100 ms.

Target: peak < 200 MB and flat as the row count grows. Each run is killed after
``60 s + rows / --min-rate``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from csvgen import write_participants
from postfix import SmtpSink, ensure_binaries, print_notes
from sender_cli import failure_line, scratch_dir, sender_env, sender_run_args

TARGET_MB = 200.0
POLL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Measurement:
    rows: int
    csv_mb: float
    seconds: float
    sunk: int
    peak_mb: float | None  # ru_maxrss
    sampled_mb: float  # max over samples of the tree's summed VmRSS
    note: str = ""


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """``pid`` and its live descendants (via /proc/PID/task/TID/children)."""
    found, todo = [], [pid]
    while todo and len(found) < 1000:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in children.read_text().split())
            except (OSError, ValueError):
                continue
    return found


def tree_rss_kb(pid: int) -> int:
    return sum(_status_kb(p, "VmRSS") for p in _descendants(pid))


def measure(args: list[str], *, cwd: Path, timeout: float) -> tuple[int, float, int, int, str]:
    """Run ``args``; return (exit code, seconds, ru_maxrss kB, sampled peak kB, stderr)."""
    with (cwd / "stdout.txt").open("wb") as out, (cwd / "stderr.txt").open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, env=sender_env(), stdout=out, stderr=err)
    sampled, killed = 0, False
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            killed = True
            break
        sampled = max(sampled, tree_rss_kb(proc.pid))
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    stderr = (cwd / "stderr.txt").read_text(errors="replace")
    if killed:
        stderr = f"error: killed after {timeout:.0f}s\n" + stderr
    return code, seconds, usage.ru_maxrss, sampled, stderr


def run_one(
    sink_binary: Path, env: dict[str, str], workdir: Path, rows: int, *, min_rate: float
) -> Measurement:
    rundir = workdir / f"rows-{rows}"
    rundir.mkdir()
    csv = rundir / "participants.csv"
    print(f"{rows:,} rows: writing {csv} ...", end=" ", flush=True)
    csv_mb = write_participants(csv, rows) / 1e6
    timeout = 60 + rows / min_rate
    with SmtpSink(sink_binary, env) as sink:
        args = sender_run_args(csv=csv, smtp=sink.url, run_id=f"mem-{rows}-{time.time_ns()}")
        print(f"sending (timeout {timeout:.0f}s) ...", end=" ", flush=True)
        code, seconds, maxrss_kb, sampled_kb, stderr = measure(args, cwd=rundir, timeout=timeout)
    print(f"{seconds:.1f}s", flush=True)
    csv.unlink()
    if code != 0 and sink.messages == 0:
        note = f"unavailable: {failure_line(stderr)}"
        return Measurement(rows, csv_mb, seconds, 0, None, sampled_kb / 1024, note)
    note = "" if code == 0 else f"exit {code}: {failure_line(stderr)}"
    return Measurement(
        rows, csv_mb, seconds, sink.messages, maxrss_kb / 1024, sampled_kb / 1024, note
    )


def report(results: list[Measurement]) -> None:
    print()
    header = ("rows", 9), ("CSV MB", 7), ("seconds", 8), ("sink count", 10), ("peak MB", 8)
    print(" ".join(f"{name:>{width}}" for name, width in header), f"{'sampled MB':>10}")
    for m in results:
        peak = "—" if m.peak_mb is None else f"{m.peak_mb:.1f}"
        print(
            f"{m.rows:>9,} {m.csv_mb:>7.1f} {m.seconds:>8.1f} {m.sunk:>10,} {peak:>8}"
            f" {m.sampled_mb:>10.1f}"
        )
        print_notes(m.note, sunk=m.sunk, sent=m.rows)
    peaks = [m.peak_mb for m in results if m.peak_mb is not None]
    if not peaks:
        print(f"\npeak < {TARGET_MB:.0f} MB: not measured")
        return
    worst = max(peaks)
    mark = "PASS" if worst < TARGET_MB else "FAIL"
    print(f"\npeak < {TARGET_MB:.0f} MB: {worst:.1f} MB  {mark}")
    if len(peaks) > 1:
        print(f"growth, smallest to largest run: {peaks[-1] - peaks[0]:+.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        default="100000,300000,1000000",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        help="comma-separated row counts, run in this order",
    )
    parser.add_argument(
        "--min-rate",
        type=float,
        default=1000.0,
        help="kill a run after 60 s + rows / MIN_RATE seconds",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    sink_binary, _, env = ensure_binaries()
    note = " (the CSVs are deleted after each run)"
    with scratch_dir("memory", keep=args.keep, kept_note=note) as workdir:
        results = []
        for rows in args.rows:
            results.append(run_one(sink_binary, env, workdir, rows, min_rate=args.min_rate))
            if results[-1].peak_mb is None:
                break  # the CLI is not ready; larger runs would say the same
        report(results)


if __name__ == "__main__":
    main()
