"""Reading hostile mail: the helpers intake and bounces share, with their limits.

Anyone can mail a bounce domain or a reply address, so every message is input an
attacker may shape. The standard library's parser records defects instead of
raising; what it leaves to us is here, once: how deep and how wide we walk a
message, which charsets we try, how header bytes that are not ASCII are read, how
RFC 2047 words are decoded and how addresses come out of headers. None of these
functions raises on a malformed message.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser, Parser
from email.utils import getaddresses

__all__ = [
    "FOLD",
    "MAX_DEPTH",
    "MAX_PARTS",
    "charset",
    "decode_text",
    "decode_words",
    "decoded_subject",
    "header_addresses",
    "header_values",
    "mailboxes",
    "parse_message",
    "undo_surrogates",
    "walk_parts",
]

# Multipart nesting we follow and children per part we look at. Real clients nest
# three or four deep (a reply forwarded twice is ~8); the limits keep a hostile
# message from costing a stack or a long walk.
MAX_DEPTH = 32
MAX_PARTS = 1_000

# Tried after the declared charset: what most mail is, then what mislabelled
# Western mail usually is, then Latin-1, which decodes any byte.
_FALLBACK_CHARSETS = ("utf-8", "cp1252", "latin-1")

FOLD = re.compile(r"\r?\n(?=[ \t])")
"""A folded header's line break (RFC 5322 2.2.3): removing it unfolds the value."""


def parse_message(data: bytes | str, /) -> Message:
    """The MIME tree, or the headers alone when the nesting is too deep to parse.

    The standard library's parser recurses once per nested part, so a few thousand
    nested ``message/rfc822`` parts (a few hundred kilobytes) raise RecursionError.
    """
    try:
        if isinstance(data, str):
            return Parser().parsestr(data)
        return BytesParser().parsebytes(data)
    except RecursionError:
        if isinstance(data, str):
            return Parser().parsestr(data, headersonly=True)
        return BytesParser().parsebytes(data, headersonly=True)


def walk_parts(message: Message, /, *, into_messages: bool) -> Iterator[Message]:
    """Every part, depth first, the message itself first.

    ``into_messages``: walk into attached messages (message/rfc822, a forward) too;
    otherwise message/* parts are yielded but not entered, as a report's returned
    original is not part of the report.
    """
    yield from _walk(message, 0, into_messages=into_messages)


def _walk(part: Message, depth: int, *, into_messages: bool) -> Iterator[Message]:
    yield part
    if depth >= MAX_DEPTH or not part.is_multipart():
        return
    if not into_messages and part.get_content_maintype() == "message":
        return
    payload = part.get_payload()
    if isinstance(payload, list):
        for child in payload[:MAX_PARTS]:
            if isinstance(child, Message):
                yield from _walk(child, depth + 1, into_messages=into_messages)


def charset(part: Message, /) -> str | None:
    """The part's declared charset, or None when it names none or no codec."""
    try:
        return part.get_content_charset()
    except (LookupError, ValueError):  # an RFC 2231 charset that names a bad codec
        return None


def decode_text(payload: bytes, declared: str | None, /) -> str:
    """A text part's bytes as text: the declared charset, else a BOM's, else the fallbacks."""
    candidates: list[str] = []
    if declared:
        candidates.append(declared)
    elif payload.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates.append("utf-16")
    candidates.extend(_FALLBACK_CHARSETS)
    for name in candidates:
        try:
            text = payload.decode(name)
            text.encode("utf-8")  # a hostile charset (utf-7, ...) can yield lone surrogates
        except (LookupError, ValueError):  # unknown or non-text codec, undecodable bytes
            continue
        return text
    return payload.decode("latin-1")  # pragma: no cover - latin-1 above already succeeded


def undo_surrogates(value: str, /) -> str:
    """Headers with raw 8-bit bytes arrive as surrogate escapes; most such mail is UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "replace")
        return raw.decode("utf-8", "replace")
    return value


def header_values(message: Message, name: str, /) -> list[str]:
    """Every value of header ``name`` (lower-case), as text, in message order."""
    # raw_items(), because the compat32 getters wrap 8-bit values in Header objects.
    return [
        undo_surrogates(value)
        for key, value in message.raw_items()
        if key.lower() == name and isinstance(value, str)
    ]


def decode_words(value: str, /) -> str:
    """Decode RFC 2047 encoded words; an unknown charset leaves the text as it came."""
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, ValueError, MessageError):  # unknown or malformed charset name
        return value


def decoded_subject(message: Message, /) -> str:
    """The first Subject, unfolded, decoded and on one line; ``""`` when there is none."""
    values = header_values(message, "subject")
    if not values:
        return ""
    return " ".join(decode_words(FOLD.sub("", values[0])).split())


def mailboxes(values: list[str], /) -> list[tuple[str, str]]:
    """``(display name, addr-spec)`` for each mailbox in address-list header values."""
    try:
        return getaddresses(values)
    except (ValueError, IndexError, TypeError):  # pragma: no cover - defensive, parser quirks
        return []


def header_addresses(message: Message, name: str, /) -> list[str]:
    """The addr-specs in every header ``name``, stripped, as written; empty ones left out."""
    found = (address.strip() for _name, address in mailboxes(header_values(message, name)))
    return [address for address in found if address]
