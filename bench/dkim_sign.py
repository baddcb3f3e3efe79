"""Per-message cost of DKIM signing on top of building the message.

    python bench/dkim_sign.py [--builds 1000] [--slow-builds 60] [--repeats 5]

In one run, with the invitation content of ``bench/mime_build.py`` (English, ~1 KB text
and ~3 KB HTML per recipient, already rendered), for a 2048-bit and a 1024-bit key:

- **build**: ``MessageBuilder.build`` alone, the baseline;
- **+ sign (openssl)**: build, then ``DkimSigner.sign`` with the key parsed once and
  RSA in OpenSSL through ``cryptography`` (the default when it is installed);
- **+ sign (python)**: the same signer with dkimpy's pure-Python RSA (the fallback);
- **+ dkim.sign**: build, then dkimpy's own ``dkim.sign`` (relaxed/relaxed, the same
  headers), which parses the PEM again on every call and signs in Python.

Figures are medians over the repeats, in µs per message; ``x build`` is the cost
relative to building alone, and ``msg/s`` what one core could sign per second at that
cost. Both sign the same headers, ``From`` twice at least. Every signed message is
first checked to verify against its own public key.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import dkim

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mime_build import REPLY_TO, SENDER, Invitation, invitations, per_message_us, with_sender

from sender.compose.dkim import SIGNED_HEADERS, DkimKey, DkimSigner, dns_record, generate_key
from sender.compose.mime import MessageBuilder


def build_and_sign(items: list[Invitation], sign: Callable[[bytes], bytes]) -> Callable[[], None]:
    builder = MessageBuilder(from_address=SENDER, reply_to=REPLY_TO)

    def run() -> None:
        for item in items:
            data = builder.build(
                to=item.to, subject=item.subject, text=item.text, html=item.html
            ).data
            sign(data)

    return run


def dkimpy_sign(key: DkimKey) -> Callable[[bytes], bytes]:
    """dkimpy's one-call API, as a naive integration would use it."""
    selector, domain = key.selector.encode(), key.domain.encode()
    include = [h.encode() for h in SIGNED_HEADERS] + [b"from"]  # dkimpy's own oversigning

    def sign(message: bytes) -> bytes:
        header = dkim.sign(
            message,
            selector,
            domain,
            key.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
        return bytes(header) + message

    return sign


def check(key: DkimKey, sign: Callable[[bytes], bytes], item: Invitation) -> None:
    """The bytes being timed must verify before the figure is trusted."""
    _, record = dns_record(key)
    data = MessageBuilder(from_address=SENDER, reply_to=REPLY_TO).build(
        to=item.to, subject=item.subject, text=item.text, html=item.html
    )
    signed = sign(data.data)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        return record.encode()

    assert dkim.verify(signed, dnsfunc=dnsfunc), "signed message does not verify"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builds", type=int, default=1000, help="messages per repeat (fast)")
    parser.add_argument(
        "--slow-builds", type=int, default=60, help="messages per repeat, pure-Python RSA"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    fast_items = invitations("en", args.builds)
    slow_items = fast_items[: args.slow_builds]
    print(f"Python {sys.version.split()[0]}; median of {args.repeats} repeats; µs per message")
    print(f"{'key':>5}  {'path':<18}{'µs':>9}{'sign µs':>10}{'x build':>9}{'msg/s':>9}")
    for bits in (2048, 1024):
        key = DkimKey("learning.example.com", "bench", generate_key(bits=bits))
        signers: list[tuple[str, Callable[[bytes], bytes], bool]] = [
            ("+ sign (openssl)", DkimSigner(key, backend="openssl").sign, False),
            ("+ sign (python)", DkimSigner(key, backend="python").sign, True),
            ("+ dkim.sign", dkimpy_sign(key), True),
        ]
        base = per_message_us(with_sender(fast_items), len(fast_items), args.repeats)
        print(f"{bits:>5}  {'build':<18}{base:>9.1f}{'':>10}{1:>8.1f}x{1e6 / base:>9.0f}")
        for label, sign, slow in signers:
            items = slow_items if slow else fast_items
            check(key, sign, items[0])
            total = per_message_us(build_and_sign(items, sign), len(items), args.repeats)
            signing = total - base
            print(
                f"{bits:>5}  {label:<18}{total:>9.1f}{signing:>10.1f}"
                f"{total / base:>8.1f}x{1e6 / signing:>9.0f}"
            )


if __name__ == "__main__":
    main()
