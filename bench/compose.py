"""Per-recipient cost of the whole compose step: link + template + message bytes.

    python bench/compose.py [--recipients 2000] [--repeats 5]

Side by side in one run, for the built-in ``invitation`` template in each locale:

- **sender**: ``Sender.compose(participant)``: sign the link, render subject/text/HTML
  (with the single-link check), assemble the bytes with ``sender.compose.mime``.
- **+code**: the same with the login code a bulk run's mail carries (``code=True``: 40
  random bits, their keyed hash, the code in both bodies), and what it adds.
- **stdlib**: the same link and the same rendering, then a fresh ``EmailMessage`` with
  ``set_content`` + ``add_alternative`` and ``as_bytes()``, as a naive sender does.

The figure is the median over the repeats of µs per recipient.
"""

from __future__ import annotations

import argparse
import statistics
import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from sender import Address, LinkSettings, Participant, Sender, SenderSettings

SETTINGS = SenderSettings(
    from_address=Address("noreply@learning.example.com", "Example Academy"),
    links=LinkSettings(
        secret_keys=("bench-key-" + "x" * 30,), base_url="https://lms.example.com/login"
    ),
)
NAMES = {"en": "Alice Johnson", "nb": "Åse Bjørnstad", "sv": "Märta Öberg", "ja": "山田 太郎"}
COURSES = {
    "en": "Introduction to Python",
    "nb": "Introduksjon til Python",
    "sv": "Introduktion till Python",
    "ja": "Python入門",
}


def people(locale: str, count: int) -> list[Participant]:
    return [
        Participant(
            f"user{i}@example{i % 50}.com",
            f"{NAMES[locale]} {i}",
            f"p-{i}",
            "PY101",
            locale,
            {"course_name": COURSES[locale]},
        )
        for i in range(count)
    ]


def with_sender(sender: Sender, batch: list[Participant]) -> None:
    for participant in batch:
        sender.compose(participant)


def with_code(sender: Sender, batch: list[Participant]) -> None:
    for participant in batch:
        sender.compose(participant, code=True)


def with_stdlib(sender: Sender, batch: list[Participant]) -> None:
    for participant in batch:
        link = sender.get_link(participant)
        locale = sender.renderer.resolve_locale("invitation", participant.locale)
        rendered = sender.renderer.render(
            "invitation",
            locale=locale,
            context=sender.context(participant, link, locale),
            link=link.url,
        )
        message = EmailMessage(policy=SMTP)
        message["From"] = str(SETTINGS.from_address)
        message["To"] = f"{participant.name} <{participant.email}>"
        message["Subject"] = rendered.subject
        message["Date"] = formatdate()
        message["Message-ID"] = make_msgid(domain="learning.example.com")
        message.set_content(rendered.text)
        message.add_alternative(rendered.html or "", subtype="html")
        message.as_bytes()


def measure(function: object, sender: Sender, batch: list[Participant], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(sender, batch)  # type: ignore[operator]
        timings.append((time.perf_counter() - started) / len(batch) * 1e6)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sender = Sender(SETTINGS)
    print(
        f"{'locale':6} {'sender µs':>10} {'+code µs':>10} {'code adds':>10} {'stdlib µs':>10}"
        f" {'ratio':>7}"
    )
    for locale in NAMES:
        batch = people(locale, args.recipients)
        with_sender(sender, batch[:50])  # warm the template cache
        with_code(sender, batch[:50])
        ours = measure(with_sender, sender, batch, args.repeats)
        coded = measure(with_code, sender, batch, args.repeats)
        theirs = measure(with_stdlib, sender, batch[: max(args.recipients // 4, 50)], args.repeats)
        print(
            f"{locale:6} {ours:10.1f} {coded:10.1f} {coded - ours:10.1f} {theirs:10.1f}"
            f" {theirs / coded:6.1f}x"
        )


if __name__ == "__main__":
    main()
