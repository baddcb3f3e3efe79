"""Per-recipient cost of building an invitation: sender.compose.mime against stdlib EmailMessage.

Run from the repository root (or anywhere)::

    python bench/mime_build.py [--builds N] [--repeats R]

Both sides get the same pre-rendered content per recipient (subject, ~1 KB text and
~3 KB HTML carrying the recipient's name and personal login URL), so only message
assembly is timed. Each repeat builds one message for each of N different
recipients; the figure is the median over the repeats, in microseconds per message.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sender.compose.mime import MessageBuilder
from sender.models import Address

SENDER = Address("kurs@learning.example.com", "Learning Platform")
REPLY_TO = Address("teacher@learning.example.com", "Course Teacher")

TEMPLATES = {
    "en": {
        "subject": "Invitation to the Python course, {name}",
        "greeting": "Hello {name},",
        "sentence": "You are invited to take part in the introductory Python course. ",
        "button": "Open the course",
        "names": ["Anna Smith", "Pat O'Brien", "Maria Garcia", "John Miller"],
    },
    "nb": {
        "subject": "Invitasjon til «Python-kurs» – påmelding, {name}",
        "greeting": "Hei {name},",
        "sentence": "Du er invitert til å delta på innføringskurset i Python. Påmelding åpner nå. ",
        "button": "Åpne kurset",
        "names": ["Bjørn Ødegård", "Åse Næss", "Kari Nordmann", "Håkon Sæther"],
    },
    "ja": {
        "subject": "「Pythonコースへのご招待」{name}様",
        "greeting": "{name}様",
        "sentence": (
            "Python入門コースへの参加をご案内いたします。ご不明な点はお問い合わせください。"
        ),
        "button": "コースを開く",
        "names": ["山田太郎", "佐藤花子", "鈴木一郎", "高橋美咲"],
    },
}


@dataclass(frozen=True, slots=True)
class Invitation:
    to: Address
    subject: str
    text: str
    html: str


def fill(sentence: str, size: int) -> str:
    """Repeat a sentence until its UTF-8 form is about ``size`` octets."""
    per = len(sentence.encode())
    return sentence * max(1, size // per)


def invitations(locale: str, count: int) -> list[Invitation]:
    """One personalised invitation per recipient, rendered before any timing starts."""
    t = TEMPLATES[locale]
    body = fill(str(t["sentence"]), 800)
    result = []
    for i in range(count):
        name = f"{t['names'][i % len(t['names'])]} {i}"
        url = f"https://learning.example.com/l/{i:08d}.eyJwIjoiZ3Vlc3QifQ.Zk9sR3vT1cQ"
        greeting = str(t["greeting"]).format(name=name)
        text = f"{greeting}\n\n{body}\n\n{t['button']}: {url}\n\n-- \nLearning Platform\n"
        paragraphs = "".join(f"<p>{body}</p>\n" for _ in range(3))
        html = (
            "<!doctype html>\n<html><head><meta charset='utf-8'><title>Invitation</title>"
            "</head>\n<body style='font-family: sans-serif'>\n"
            f"<p>{greeting}</p>\n{paragraphs}"
            f"<p><a href='{url}' style='padding: 8px 16px; background: #0057b8; "
            f"color: #fff'>{t['button']}</a></p>\n</body></html>\n"
        )
        result.append(
            Invitation(
                to=Address(f"student{i}@example.org", name),
                subject=str(t["subject"]).format(name=name),
                text=text,
                html=html,
            )
        )
    return result


def with_sender(items: list[Invitation]) -> Callable[[], None]:
    builder = MessageBuilder(from_address=SENDER, reply_to=REPLY_TO)

    def run() -> None:
        for item in items:
            builder.build(to=item.to, subject=item.subject, text=item.text, html=item.html)

    return run


def with_stdlib(items: list[Invitation]) -> Callable[[], None]:
    def run() -> None:
        for item in items:
            message = EmailMessage(policy=email.policy.SMTP)
            message["From"] = str(SENDER)
            message["To"] = str(item.to)
            message["Reply-To"] = str(REPLY_TO)
            message["Subject"] = item.subject
            message["Date"] = formatdate(time.time(), usegmt=True)
            message["Message-ID"] = make_msgid(domain="learning.example.com")
            message.set_content(item.text)
            message.add_alternative(item.html, subtype="html")
            message.as_bytes()

    return run


def per_message_us(run: Callable[[], None], builds: int, repeats: int) -> float:
    """Median over ``repeats`` of the time for ``builds`` messages, per message."""
    run()  # warm caches (IDNA, Date, regexes) as a long bulk run would
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) / builds * 1e6)
    return statistics.median(samples)


def check(items: list[Invitation]) -> None:
    """Make sure the bytes being timed are a correct message before trusting the figure."""
    item = items[0]
    built = MessageBuilder(from_address=SENDER).build(
        to=item.to, subject=item.subject, text=item.text, html=item.html
    )
    parsed = email.message_from_bytes(built.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == item.subject
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    assert html_part.get_content().replace("\r\n", "\n") == item.html


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builds", type=int, default=1000, help="sender builds per repeat")
    parser.add_argument("--stdlib-builds", type=int, default=200, help="stdlib builds per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    print(f"Python {sys.version.split()[0]}; median of {args.repeats} repeats")
    print(f"{'locale':<7}{'text B':>8}{'html B':>8}{'sender µs':>12}{'stdlib µs':>12}{'ratio':>8}")
    for locale in TEMPLATES:
        ours = invitations(locale, args.builds)
        theirs = invitations(locale, args.stdlib_builds)
        check(ours)
        fast = per_message_us(with_sender(ours), args.builds, args.repeats)
        slow = per_message_us(with_stdlib(theirs), args.stdlib_builds, args.repeats)
        text_size = len(ours[0].text.encode())
        html_size = len(ours[0].html.encode())
        print(
            f"{locale:<7}{text_size:>8}{html_size:>8}{fast:>12.1f}{slow:>12.1f}{slow / fast:>7.0f}x"
        )


if __name__ == "__main__":
    main()
