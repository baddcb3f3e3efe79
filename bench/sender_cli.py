"""How the benchmarks start ``sender run`` (one command line, easy to adjust), and the
settings the library-level benchmarks send with.

Edit :data:`SENDER_RUN`, or set ``SENDER_BENCH_RUN`` to try another command line
without editing (same ``{placeholders}``), e.g. while the flags are being built::

    SENDER_BENCH_RUN='{python} -m sender run {csv} --smtp {smtp} --concurrency 8' \\
        python bench/bulk.py
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sender import Address, LinkSettings, SenderSettings

# {python}: this interpreter; {csv}: the participants file; {smtp}: the sink's smtp:// URL;
# {run_id}: unique per run. --rate 0 / --domain-rate 0 mean "unlimited". Two worker
# processes use both cores; 32 connections keep them busy (smtp-source uses 20).
# --no-validate: the generated domains exist only in the sink; bench/validate.py
# measures address checks on their own.
SENDER_RUN = (
    "{python} -m sender run {csv} --smtp {smtp} --rate 0 --domain-rate 0"
    " --concurrency 32 --workers 2 --no-validate --run-id {run_id}"
)
BENCH_SECRET = "bench-secret-key-" + "x" * 32
BENCH_SETTINGS = SenderSettings(
    from_address=Address("noreply@lms.example.com", "Example Academy"),
    links=LinkSettings(secret_keys=(BENCH_SECRET,), base_url="https://lms.example.com/login"),
)


def command() -> str:
    return os.environ.get("SENDER_BENCH_RUN") or SENDER_RUN


def sender_run_args(*, csv: Path, smtp: str, run_id: str) -> list[str]:
    """The argument vector (placeholders are filled per argument, so paths may have spaces)."""
    values = {"python": sys.executable, "csv": str(csv), "smtp": smtp, "run_id": run_id}
    return [part.format(**values) for part in shlex.split(command())]


def sender_env() -> dict[str, str]:
    """The environment for sender subprocesses: a fixed secret, no stray SMTP URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENDER_")}
    # As installed: sender's modules compile once to __pycache__, not in every process.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["SENDER_SECRET_KEYS"] = BENCH_SECRET
    # Real identities: sender refuses its example From and base URL on a real SMTP URL.
    env["SENDER_FROM"] = "Bench Academy <noreply@bench-sender.example>"
    env["SENDER_BASE_URL"] = "https://learn.bench-sender.example/login"
    return env


def failure_line(stderr: str) -> str:
    """The line of stderr that says what went wrong (click prints usage first)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith(("error", "fatal")):
            return line
    if lines and lines[0].startswith("Traceback"):
        return lines[-1]  # the exception itself
    return lines[0] if lines else "(no output on stderr)"


@contextmanager
def scratch_dir(name: str, *, keep: bool, kept_note: str = "") -> Iterator[Path]:
    """A temporary directory for one benchmark, deleted afterwards unless ``keep`` (--keep)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"sender-bench-{name}-"))
    try:
        yield workdir
    finally:
        if keep:
            print(f"\nkept {workdir}{kept_note}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
