"""Failure prose: the recipients a mail server names in sentences, and its reply to each.

Many servers return no delivery-status part, only text (DragonFly, sendmail V5,
OpenSMTPD, Zoho, IMail, Exchange 2003, Notes, m-FILTER, GMX and others). The
vendors differ; the shape does not: a failure phrase, then the recipients, either
on the phrase's own line ("There was an error delivering your mail to <a@b>.",
"Unknown user: a@b") or on the lines below it, one per line, each followed by the
reply (or, in an SMTP transcript, preceded by the remote's ``<<<`` lines), up to the
next phrase or the returned message. One phrase table and one reader cover them;
nothing here knows a vendor. What a reply means is not decided here: the caller
classifies :attr:`Failed.diagnostic`.

This module reads text only, so it sits below ``bounces``, which decides whether a
message is a report at all before it asks.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

__all__ = ["Failed", "cut_returned_message", "failed_recipients"]

# Lines per report, characters per line and per diagnostic we read: a real report
# is a few dozen short lines; hostile input must cost no more than that.
_MAX_LINES = 2_000
_MAX_LINE = 2_000
_MAX_DIAGNOSTIC = 2_000
_MAX_REPLY_LINES = 40
_MAX_RECIPIENTS = 500

# Where a server starts quoting the returned message; nothing after it is report.
_RETURNED_MESSAGE = re.compile(
    r"[ \t|]*(?:-+ ?)?(?:Below this line is a copy of the message|Original message follows|"
    r"This is a copy of (?:the|your) message|Original message headers:|"
    r"Possibly truncated original message follows|-+ ?Original Message -+|"
    r"Message headers follow|Below is a copy of the original message|"
    r"Unsent message follows|The header of the original message is following|"
    r"Included is a copy of the message header|-+ ?Returned Message|"
    r"-+ ?original (?:message|mail info)\b|Message text follows|"
    r"The attachment contains the original)",
    re.IGNORECASE,
)
# Every marker above holds one of these words: lines without one are not looked at.
_RETURNED_WORDS = re.compile(r"original|message|copy|returned|attachment", re.IGNORECASE)
# Unindented header fields: a returned message quoted without a marker.
_RETURNED_HEADERS = re.compile(r"^(?:Received|Return-Path|Message-I[dD]|DKIM-Signature): ")

# Bounded parts, so a search over a long run of word characters stays linear.
_LOCAL = r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}"
_DOMAIN = r"[\w-]{1,63}(?:\.[\w-]{1,63}){1,10}"
_ADDRESS = re.compile(rf"(?<![\w.!#$%&'*+/=?^`{{|}}~-]){_LOCAL}@{_DOMAIN}(?![\w-])")

# The phrases that introduce the recipients a report is about. Generic wording first
# ("the following recipients"), then the few servers' own sentences.
_INTRO = re.compile(
    r"(?:the )?following (?:e-?mail )?(?:address|recipient|destination)(?:es|s|\(e?s\))?\b|"
    r"following list of recipients|"
    r"for the following\s*$|"
    r"there was an error delivering your mail to|"
    r"(?:was|could) not (?:be )?delivered to\b|"
    r"unable to deliver (?:the |this |your )?(?:message |mail )?to\b|"
    r"undeliverable to\b|"
    r"rejected (?:the )?recipient\b|"
    r"transcript of session follows|"
    r"failure reasons|"
    r"failed addresses follow|"
    r"以下のメールアドレスへの送信に失敗しました|"
    r"以下の宛先へ送信できませんでした",
    re.IGNORECASE,
)
# Every phrase above holds one of these words, and every label an @.
_PHRASE_WORDS = re.compile(r"following|deliver|unable|recipient|transcript|fail|以下|@", re.I)
# "Unknown user: a@b", "User's mailbox is full: <a@b>": a label that says something
# failed, then one address and nothing else.
_LABEL = re.compile(
    rf"^\s*(?P<label>[^\W\d][\w' .()/-]{{1,60}}?)\s*:\s*[\"<]?(?P<addr>{_LOCAL}@{_DOMAIN})[\">]?"
    r"[\s.,;]*$"
)
_LABEL_WORDS = re.compile(
    r"unknown|invalid|fail|full|exceed|deliver|reject|error|not found|no such|disabled|"
    r"recipient|quota|unable",
    re.IGNORECASE,
)
_HEADER_NAMES = re.compile(
    r"^(?:to|from|cc|bcc|reply-to|sender|return-path|delivered-to|envelope-to|apparently-to|"
    r"x-[\w-]+|resent-[\w-]+|original[- ][\w-]+|final-recipient|errors-to)$",
    re.IGNORECASE,
)
# A line that starts with a recipient: bullets, quote marks, a sendmail reply code or
# a "Recipient:" label may come before the address.
_LIST_LINE = re.compile(
    r"^[ \t]*(?:(?:[*>-]+|[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3}[ \t]+)?|Recipient:|Address:)"
    rf"[ \t]*)?[\"'<]?(?P<addr>{_LOCAL}@{_DOMAIN})[\"'>]?(?P<rest>(?:[\s:,.;(\[].*)?)$",
    re.IGNORECASE,
)
_TRANSCRIPT = re.compile(r"^\s*(?:<<<|>>>)")
_RCPT_TO = re.compile(rf"RCPT TO:\s*<(?P<addr>{_LOCAL}@{_DOMAIN})>", re.IGNORECASE)
_REPLY = re.compile(r"(?<![\w.])(?:[245]\d\d(?=[ -]|$)|[245]\.\d{1,3}\.\d{1,3}(?![\d.]))")
_REFUSAL = re.compile(r"(?<![\w.])[45]\d\d(?=[ -]|$)")
_SAYS_SOMETHING = re.compile(r"[^\W\d_]{2,}")
# A warning, not a failure: the server is still trying (lower-cased, whitespace squeezed).
_DELAYED = (
    "this is a warning",
    "has been delayed",
    "is delayed for",
    "has not yet been delivered",
    "will be retried",
    "delivery delayed",
    "delivery is delayed",
)


@dataclass(frozen=True, slots=True)
class Failed:
    """One recipient the prose names, the server's words about it, and whether the report
    is only a warning (the server is still trying)."""

    address: str
    diagnostic: str
    delayed: bool = False


def failed_recipients(text: str, /) -> list[Failed]:
    """The recipients a report's text says failed, in order, each once (lower-cased).

    Tried in turn, first that finds someone wins: addresses at the start of the lines
    under a failure phrase, or on the phrase's own line; then the first address under
    a phrase however the line starts; last, the ``RCPT TO`` of an SMTP transcript.
    ``[]`` when the text names nobody.
    """
    lines = _report_lines(text)
    blocks = _blocks(lines)
    context = _squeeze(" ".join(lines))
    lowered = context.lower()
    delayed = any(phrase in lowered for phrase in _DELAYED)
    for found in (_listed(lines, blocks), _first_in_block(lines, blocks), _rcpt_to(lines)):
        if found:
            return _merge(found, context, delayed=delayed)
    return []


def cut_returned_message(text: str, /) -> str:
    """``text`` up to the line where a server starts quoting the returned message."""
    for start in _line_starts_with(_RETURNED_WORDS, text):
        if _RETURNED_MESSAGE.match(text, start):
            return text[:start]
    return text


def _line_starts_with(words: re.Pattern[str], text: str) -> Iterator[int]:
    """The start of each line where ``words`` occurs, in order: one scan of the text."""
    position = 0
    while (found := words.search(text, position)) is not None:
        start = text.rfind("\n", 0, found.start()) + 1
        yield start
        end = text.find("\n", found.end())
        if end == -1:
            return
        position = end + 1


def _report_lines(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = cut_returned_message(text[: _MAX_LINES * _MAX_LINE])
    lines = [line[:_MAX_LINE] for line in text.split("\n")[:_MAX_LINES]]
    lines = _unquote(lines)
    # Header fields before the first phrase are the report's own (a forward, the "Your
    # message To: ..." summary); after it they start the returned message.
    first = next(iter(_phrase_lines(lines)), None)
    if first is not None:
        for index in range(first + 1, len(lines)):
            if _RETURNED_HEADERS.match(lines[index]):
                return lines[:index]
    return lines


def _unquote(lines: list[str]) -> list[str]:
    """A report forwarded as ``> ``-quoted text reads as the report itself."""
    written = [line for line in lines if line.strip()]
    quoted = [line for line in written if line.startswith(">") and not line.startswith(">>>")]
    if not written or len(quoted) * 2 < len(written):
        return lines
    return [line[1:].removeprefix(" ") if line.startswith(">") else line for line in lines]


def _phrase_lines(lines: list[str]) -> list[int]:
    """The indexes of the lines with a failure phrase or label."""
    text = "\n".join(lines)
    offsets = list(accumulate((len(line) + 1 for line in lines), initial=0))
    found = []
    for start in _line_starts_with(_PHRASE_WORDS, text):
        index = bisect_left(offsets, start)
        if _is_phrase(lines[index]):
            found.append(index)
    return found


def _blocks(lines: list[str]) -> list[tuple[int, int]]:
    """``(first, end)`` line ranges: from each line with a failure phrase to the next one."""
    starts = _phrase_lines(lines)
    return list(zip(starts, [*starts[1:], len(lines)], strict=True)) if starts else []


def _is_phrase(line: str) -> bool:
    return _intro(line) is not None or _label(line) is not None


def _intro(line: str) -> re.Match[str] | None:
    return _INTRO.search(line)


def _label(line: str) -> str | None:
    if "@" not in line or ":" not in line:
        return None
    found = _LABEL.match(line)
    if found is None:
        return None
    label = found["label"].strip()
    if _HEADER_NAMES.match(label) or not _LABEL_WORDS.search(label):
        return None
    return found["addr"]


def _listed(lines: list[str], blocks: list[tuple[int, int]]) -> list[tuple[str, list[str]]]:
    """Addresses on a phrase's line, or at the start of the lines under it, with their text."""
    found: list[tuple[str, list[str]]] = []
    for first, end in blocks:
        line = lines[first]
        labelled = _label(line)
        intro = _intro(line)
        rest = line[intro.end() :] if intro else ""
        same_line = [labelled] if labelled else _ADDRESS.findall(_leading_addresses(rest))
        if same_line:
            # The phrase's line names them; the lines below are the reply.
            reply = lines[first + 1 : min(end, first + 1 + _MAX_REPLY_LINES)]
            for address in same_line:
                found.append((address, [line, *reply]))
            continue
        found.extend(_list_block(lines[first + 1 : end]))
        if len(found) >= _MAX_RECIPIENTS:
            break
    return found


_LEADING = re.compile(
    rf"[\s:]*(?:[^\W\d][\w ]{{0,40}}:\s*)?((?:[\"<]?{_LOCAL}@{_DOMAIN}[\">]?[\s,;]*)+)"
)


def _leading_addresses(rest: str) -> str:
    """The addresses right after a phrase ("to <a@b>, <c@d>.", "returned errors: a@b"),
    not ones later in the sentence."""
    found = _LEADING.match(rest)
    return found.group(1) if found else ""


def _list_block(block: list[str]) -> list[tuple[str, list[str]]]:
    """Recipients one per line; each takes the lines after it (an indented continuation
    always, loose lines when its own line says nothing), and the ``<<<`` replies of an SMTP
    transcript that came just before it."""
    found: list[tuple[str, list[str]]] = []
    pending: list[str] = []
    complete = False
    indent = 0
    for line in block:
        listed = _LIST_LINE.match(line)
        if listed is not None and found and listed["addr"].lower() == found[-1][0].lower():
            found[-1][1].append(line)  # the reply quotes the address again
        elif listed is not None:
            rest = _ADDRESS.sub("", listed["rest"])
            complete = _SAYS_SOMETHING.search(rest) is not None
            indent = len(line) - len(line.lstrip())
            found.append((listed["addr"], [*pending, line]))
            pending = []
        elif _TRANSCRIPT.match(line):
            if line.lstrip().startswith("<<<"):
                pending.append(line)
        elif found and line.strip():
            deeper = len(line) - len(line.lstrip()) > indent
            if deeper or not complete:
                found[-1][1].append(line)
        if listed is None and not _TRANSCRIPT.match(line) and line.strip():
            pending = []  # "While talking to ...": replies before it were to someone else
    return found


def _first_in_block(lines: list[str], blocks: list[tuple[int, int]]) -> list[tuple[str, list[str]]]:
    """The first address in the first line under a heading ("... errors:", "--- ... ---"),
    when no line starts with one."""
    for first, end in blocks:
        if not lines[first].rstrip().endswith((":", "-")):
            continue
        for offset, line in enumerate(lines[first + 1 : end]):
            if not line.strip():
                continue
            if line.lstrip().startswith((">>>", "<<<")):
                break
            address = _ADDRESS.search(line)
            if address is not None:
                return [(address.group(), lines[first + 1 + offset : end])]
            break
    return []


def _rcpt_to(lines: list[str]) -> list[tuple[str, list[str]]]:
    """An SMTP transcript's ``RCPT TO:<a@b>``, with the refusals (4xx, 5xx) that follow it."""
    found: list[tuple[str, list[str]]] = []
    for line in lines:
        command = _RCPT_TO.search(line) if "@" in line else None
        if command is not None:
            found.append((command["addr"], [line]))
        elif found and _REFUSAL.search(line):
            found[-1][1].append(line)
    return found


def _merge(found: list[tuple[str, list[str]]], context: str, *, delayed: bool) -> list[Failed]:
    """Each address once; a recipient whose own lines say nothing gets the report's text, and
    so does the only recipient of a report whose lines carry no reply code."""
    texts: dict[str, list[str]] = {}
    for address, text in found[:_MAX_RECIPIENTS]:
        texts.setdefault(address.lower(), []).extend(text)
    recipients = []
    for address, text in texts.items():
        own = _squeeze(" ".join(text[:_MAX_REPLY_LINES]))
        if not _SAYS_SOMETHING.search(_ADDRESS.sub("", own)):
            diagnostic = context
        elif len(texts) == 1 and not _REPLY.search(own):
            diagnostic = f"{own} {context}"
        else:
            diagnostic = own
        recipients.append(Failed(address, diagnostic[:_MAX_DIAGNOSTIC], delayed))
    return recipients


def _squeeze(text: str) -> str:
    return " ".join(text.split())
