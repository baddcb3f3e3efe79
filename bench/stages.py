"""CPU microseconds per message, stage by stage, on one core: where a bulk message's time goes.

    python bench/stages.py [--messages 4000] [--repeats 3]

In one process, the stages a bulk worker runs for each message, each timed alone with
``time.process_time`` (CPU time, so the shared host's other load moves the figures less
than it moves wall time), median of ``--repeats``:

- **link**: ``LinkSigner.issue`` (the HMAC signature), and itsdangerous's own ``dumps`` of
  the same payload beside it;
- **render**: the three templates of ``invitation`` in the participant's locale, with and
  without the single-link check, and the check alone;
- **mime**: the message bytes (``MessageBuilder.build`` through ``Sender.compose``,
  the compose total minus link and render);
- **compose, bulk**: ``Sender.compose`` as a bulk worker calls it, with a login code and
  a Message-ID derived from the outbox key;
- **smtp**: ``SmtpTransport.send`` to Postfix's ``smtp-sink`` on loopback, 16 at a time,
  pipelined (the sink's default) and one command at a time (``smtp-sink -p``), in turn.

The SMTP figures are this process's CPU only; the sink's own is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time
from collections.abc import Callable

from csvgen import COURSES, LOCALES, NAMES
from itsdangerous import URLSafeTimedSerializer
from postfix import SmtpSink, ensure_binaries
from sender_cli import BENCH_SETTINGS

from sender import Participant, Sender
from sender.compose.render import find_link_problems
from sender.config import SmtpSettings
from sender.loop import fast_loop
from sender.models import DeliveryStatus, Envelope
from sender.transport import SmtpTransport

SMTP_CONCURRENCY = 16


def participants(count: int) -> list[Participant]:
    people = []
    for i in range(count):
        locale = LOCALES[i % len(LOCALES)]
        course_id, course_name = COURSES[locale]
        name = f"{NAMES[locale][i % 3]} {i}"
        people.append(
            Participant(
                f"user{i}@domain{i % 200}.example",
                name,
                f"p-{i}",
                course_id,
                locale,
                {"course_name": course_name},
            )
        )
    return people


def cpu_us(function: Callable[[], object], count: int, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.process_time()
        function()
        timings.append((time.process_time() - started) / count * 1e6)
    return statistics.median(timings)


def compose_stages(people: list[Participant], repeats: int) -> dict[str, float]:
    sender = Sender(BENCH_SETTINGS)
    composer = sender.composer
    links = composer.links
    renderer = composer.renderer
    n = len(people)
    for person in people[:50]:
        sender.compose(person)  # warm caches: templates, locales, sites
    issued = [links.issue(p.participant_id, p.course_id) for p in people]
    locales = [renderer.resolve_locale("invitation", p.locale) for p in people]
    contexts = [
        composer.context(p, link, loc) for p, link, loc in zip(people, issued, locales, strict=True)
    ]
    rendered = [
        renderer.render("invitation", locale=loc, context=ctx)
        for loc, ctx in zip(locales, contexts, strict=True)
    ]
    reference = URLSafeTimedSerializer(
        list(BENCH_SETTINGS.links.secret_keys),
        salt="sender.link.login",
        signer_kwargs={"digest_method": hashlib.sha256},
    )
    payloads = [[p.participant_id, p.course_id, 14 * 86400] for p in people]
    allowed = renderer.allowed_sites

    def link() -> None:
        for p in people:
            links.issue(p.participant_id, p.course_id)

    def link_itsdangerous() -> None:
        for payload in payloads:
            reference.dumps(payload)

    def render_checked() -> None:
        for loc, ctx, lk in zip(locales, contexts, issued, strict=True):
            renderer.render("invitation", locale=loc, context=ctx, link=lk.url)

    def render_only() -> None:
        for loc, ctx in zip(locales, contexts, strict=True):
            renderer.render("invitation", locale=loc, context=ctx)

    def check_only() -> None:
        for message, lk in zip(rendered, issued, strict=True):
            find_link_problems(message, link=lk.url, allowed_sites=allowed)

    def compose() -> None:
        for p in people:
            sender.compose(p)

    keys = [f"bench\x00{i}\x001.0" for i in range(n)]

    def compose_bulk() -> None:  # as a bulk worker's attempt(): a login code, a derived Message-ID
        for p, key in zip(people, keys, strict=True):
            sender.compose(p, code=True, message_id=sender.message_id_for(key))

    figures = {
        "link (hmac)": cpu_us(link, n, repeats),
        "link (itsdangerous dumps)": cpu_us(link_itsdangerous, n, repeats),
        "render, 3 templates": cpu_us(render_only, n, repeats),
        "single-link check": cpu_us(check_only, n, repeats),
        "render + check": cpu_us(render_checked, n, repeats),
        "compose total": cpu_us(compose, n, repeats),
        "compose, bulk (+ code, Message-ID)": cpu_us(compose_bulk, n, repeats),
    }
    figures["mime + glue (total - link - render+check)"] = (
        figures["compose total"] - figures["link (hmac)"] - figures["render + check"]
    )
    return figures


class _StepwiseSink(SmtpSink):
    """smtp-sink without PIPELINING (``-p``)."""

    def args(self) -> list[str]:
        args = super().args()
        return [args[0], "-p", *args[1:]]


async def _send(port: int, messages: list[tuple[Envelope, bytes]]) -> float:
    settings = SmtpSettings(
        host="127.0.0.1",
        port=port,
        pool_size=SMTP_CONCURRENCY,
        timeout=30.0,
        local_hostname="localhost",
    )
    async with SmtpTransport(settings) as transport:
        slots = asyncio.Semaphore(SMTP_CONCURRENCY)

        async def one(envelope: Envelope, data: bytes) -> None:
            async with slots:
                [result] = await transport.send(envelope, data)
                if result.status is not DeliveryStatus.ACCEPTED:
                    raise RuntimeError(f"the sink refused a message: {result}")

        await asyncio.gather(*(one(e, d) for e, d in messages[:SMTP_CONCURRENCY]))  # connect
        started = time.process_time()
        await asyncio.gather(*(one(e, d) for e, d in messages))
        return (time.process_time() - started) / len(messages) * 1e6


def smtp_stages(people: list[Participant], repeats: int) -> dict[str, float]:
    sender = Sender(BENCH_SETTINGS)
    messages = []
    for person in people:
        composed = sender.compose(person)
        messages.append((composed.envelope, composed.message.data))
    sink_binary, _source, env = ensure_binaries()
    runs: dict[str, list[float]] = {"smtp pipelined": [], "smtp one command at a time": []}
    kinds = (("smtp pipelined", SmtpSink), ("smtp one command at a time", _StepwiseSink))
    for round_number in range(repeats):
        for label, kind in kinds if round_number % 2 == 0 else kinds[::-1]:
            with kind(sink_binary, env) as sink, asyncio.Runner(loop_factory=fast_loop()) as run:
                runs[label].append(run.run(_send(sink.port, messages)))
    return {label: statistics.median(values) for label, values in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    people = participants(args.messages)
    figures = compose_stages(people, args.repeats) | smtp_stages(people, args.repeats)
    print(f"{'stage':<44} {'CPU µs/msg':>10}")
    for label, value in figures.items():
        print(f"{label:<44} {value:>10.1f}")


if __name__ == "__main__":
    main()
