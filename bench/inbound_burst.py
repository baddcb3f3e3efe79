"""A burst of simultaneous SMTP clients against ``sender inbound``, counted by outcome.

    python bench/inbound_burst.py [--clients 1000] [--timeout 10] [-- sender inbound options]

Starts ``sender inbound`` in a subprocess on a free loopback port (a throwaway home
in a temporary directory), then opens ``--clients`` connections at once from this
process; each delivers one bounce-domain message with aiosmtplib. Prints how many
were delivered, heard 421 (the session cap), or timed out. Options after ``--`` go to
``sender inbound``, e.g. ``-- --backlog 100 --max-sessions 100000`` for the old
behaviour (asyncio's default backlog, no cap).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

MESSAGE = b"From: mailer-daemon@mx.example.org\r\nSubject: burst\r\n\r\nburst\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def one(port: int, n: int, client_timeout: float) -> str:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=client_timeout)
    try:
        await client.connect()
        await client.sendmail("", [f"bounces+burst{n}@bounce.example.com"], MESSAGE)
        await client.quit()
    except aiosmtplib.SMTPConnectResponseError as exc:
        return f"refused {exc.code}"
    except (aiosmtplib.SMTPTimeoutError, TimeoutError):
        return "timed out"
    except aiosmtplib.SMTPResponseException as exc:
        return f"refused {exc.code}"
    except (aiosmtplib.SMTPException, OSError) as exc:
        return type(exc).__name__
    finally:
        client.close()
    return "delivered"


async def burst(port: int, clients: int, client_timeout: float) -> collections.Counter[str]:
    results = await asyncio.gather(*(one(port, n, client_timeout) for n in range(clients)))
    return collections.Counter(results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("inbound_args", nargs="*")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "sender.toml"
        toml.write_text(
            f'bounce_domain = "bounce.example.com"\nsecret_keys = ["{"k" * 32}"]\n',
            encoding="utf-8",
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sender",
                "--config",
                str(toml),
                "inbound",
                "--listen",
                f"127.0.0.1:{port}",
                *args.inbound_args,
            ],
            cwd=tmp,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert server.stderr is not None
            line = server.stderr.readline().decode()  # "listening on ..."
            if "listening" not in line:
                raise SystemExit(f"sender inbound did not start: {line}")
            started = time.monotonic()
            counts = asyncio.run(burst(port, args.clients, args.timeout))
            elapsed = time.monotonic() - started
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=10)
    given = " ".join(args.inbound_args) or "(defaults)"
    outcome = dict(sorted(counts.items()))
    print(
        f"{args.clients} clients, timeout {args.timeout:g}s, {given}: {outcome} in {elapsed:.1f}s"
    )


if __name__ == "__main__":
    main()
