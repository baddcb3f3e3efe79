"""Mail that comes back to sender: reading it from disk, and finding the calendars in it.

Replies reach an LMS as files: a saved ``.eml``, an mbox export, a Maildir the
MTA (or :class:`~sender.servers.capture.CaptureServer`) delivers into.
:func:`read_mail` turns any of those into raw messages without loading a whole
mailbox at once; bounces will reuse it. :func:`calendar_parts` digs the
iCalendar objects out of one message wherever real clients put them, and
hands back UTF-8 text for :mod:`sender.compose.ical` to parse.

Only the standard library is used: the input is hostile (anyone can mail the
reply address), and the stdlib parser records defects instead of raising.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from email.message import Message
from mailbox import mbox
from pathlib import Path

from sender.addresses import bare_domain, domain_of
from sender.errors import InputError
from sender.feedback.mailparse import (
    FOLD,
    charset,
    decode_text,
    decode_words,
    decoded_subject,
    header_addresses,
    parse_message,
    undo_surrogates,
    walk_parts,
)

__all__ = ["CalendarPart", "MailItem", "calendar_parts", "dmarc_passed", "read_mail"]

# Types that are a calendar whatever the part is called. Anything else counts
# when its file name ends in .ics (octet-stream, application/x-download, ...).
_CALENDAR_TYPES = frozenset({"text/calendar", "application/ics"})


@dataclass(frozen=True, slots=True)
class MailItem:
    """One raw message and where it came from.

    ``source`` is for people: ``box.mbox#3`` (0-based), or the file's path
    (inside a Maildir, the file under ``new/`` or ``cur/``).
    """

    source: str
    data: bytes


@dataclass(frozen=True, slots=True)
class CalendarPart:
    """One iCalendar object found in a message, decoded to UTF-8.

    ``method`` is the Content-Type's ``method`` parameter, upper-cased; the
    METHOD inside the object is for :mod:`sender.compose.ical` to read. ``subject``
    and ``sender`` describe the message that arrived, also for calendars in a
    forwarded message: its From is the one a DMARC check can vouch for, while
    a From inside a forward is only a claim. ``sender`` is the addr-spec,
    lower-cased, or ``""`` when From is missing, unparseable or names more
    than one mailbox, so an invitation check refuses it.
    """

    method: str | None
    data: bytes
    filename: str | None
    subject: str
    sender: str


def read_mail(paths: Iterable[Path], /) -> Iterator[MailItem]:
    """Yield every message in ``paths``, in order, one at a time.

    Each path is a message file, an mbox (its first line starts with
    ``From ``), a Maildir (has ``cur/`` and ``new/``; ``tmp/`` holds mail
    still being written and is skipped), or a directory whose ``.eml`` files
    are read, and those of its subdirectories (Maildirs among them read as
    such). Names are taken in sorted order.

    Raises :class:`~sender.errors.InputError` (``field="path"``) at once for a
    path that does not exist, and while iterating for one that cannot be read.
    """
    checked = [Path(path) for path in paths]
    for path in checked:
        if not path.exists():
            raise InputError(f"{path}: no such file or directory", field="path")
    return _read_all(checked)


def calendar_parts(data: bytes, /) -> list[CalendarPart]:
    """Every calendar object in a raw message, each once, in message order.

    Looks in text/calendar and application/ics parts, in any part whose file
    name ends in ``.ics``, at any depth, including forwarded messages. Parts
    that do not hold ``BEGIN:VCALENDAR`` once decoded are skipped. The same
    calendar sent twice (inline and as an attachment, as Outlook and Google
    do) is returned once, with the method and file name of either copy.

    Never raises on a malformed message; a message without a calendar gives [].
    """
    message = parse_message(data)
    subject = decoded_subject(message)
    sender = _sender(message)
    found: dict[str, CalendarPart] = {}
    for part in walk_parts(message, into_messages=True):
        if part.is_multipart():
            continue
        calendar = _calendar(part, subject=subject, sender=sender)
        if calendar is None:
            continue
        key = _same_calendar_key(calendar.data)
        seen = found.get(key)
        if seen is None:
            found[key] = calendar
        else:
            found[key] = replace(
                seen,
                method=seen.method or calendar.method,
                filename=seen.filename or calendar.filename,
            )
    return list(found.values())


def dmarc_passed(data: bytes, /, *, trusted_authserv_ids: Collection[str]) -> frozenset[str]:
    """The From domains a trusted relay's ``Authentication-Results`` say passed DMARC.

    Only the topmost headers count (RFC 8601 section 5): reading down from the first
    ``Authentication-Results``, each one whose authserv-id is in
    ``trusted_authserv_ids`` (case-insensitive) is read, until a ``Received`` header
    (an earlier hop) or a header from any other authserv-id; anything below was
    written before the trusted relay saw the message, possibly by the sender. The
    relay must add its own results, as OpenDMARC, rspamd and the large providers do.
    A ``dmarc=pass`` names its domain in ``header.from``; one without it counts for
    no domain. The topmost DMARC result for a domain decides: a ``pass`` below the
    relay's own ``fail`` (or ``none``) is one the sender wrote. Never raises.
    """
    trusted = {i.strip().lower() for i in trusted_authserv_ids if i.strip()}
    if not trusted:
        return frozenset()
    message = parse_message(data)
    verdicts: dict[str, str] = {}  # domain -> its topmost dmarc result
    reading = False
    for key, value in message.raw_items():
        name = key.strip().lower()
        if name == "received" and reading:
            break
        if name != "authentication-results" or not isinstance(value, str):
            continue
        reading = True
        authserv_id, results = _authentication_results(undo_surrogates(value))
        if authserv_id not in trusted:
            break
        for method, result, domain in results:
            if method == "dmarc" and domain:
                verdicts.setdefault(domain, result)
    return frozenset(domain for domain, result in verdicts.items() if result == "pass")


# -- reading files ----------------------------------------------------------------------


def _read_all(paths: list[Path]) -> Iterator[MailItem]:
    for path in paths:
        yield from _read_path(path, nested=False)


def _read_path(path: Path, *, nested: bool) -> Iterator[MailItem]:
    if path.is_dir():
        if _is_maildir(path):
            yield from _read_maildir(path)
        else:
            yield from _read_directory(path, nested=nested)
    else:
        yield from _read_file(path)


def _read_file(path: Path) -> Iterator[MailItem]:
    try:
        with path.open("rb") as file:
            data = file.read(5)
            if data != b"From ":
                data += file.read()
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if data == b"From ":
        yield from _read_mbox(path)
    else:
        yield MailItem(str(path), data)


def _read_mbox(path: Path) -> Iterator[MailItem]:
    # mailbox.mbox indexes the file in one pass and then reads one message per
    # get_bytes(), so a large export never sits in memory whole.
    try:
        box = mbox(path, factory=None, create=False)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    try:
        try:
            keys = sorted(box.iterkeys())
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        for key in keys:
            try:
                data = box.get_bytes(key)
            except OSError as exc:
                raise _unreadable(path, exc) from exc
            yield MailItem(f"{path}#{key}", data)
    finally:
        box.close()


def _is_maildir(path: Path) -> bool:
    # tmp/ is not required: git and many archivers drop empty directories.
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _read_maildir(path: Path) -> Iterator[MailItem]:
    # Read the files directly rather than through mailbox.Maildir, so that a
    # source names the real file (flags included) and a reader marking mail
    # as seen (new/ -> cur/) cannot make us fail halfway.
    files = sorted(
        (name, sub)
        for sub in ("new", "cur")
        for name in _listdir(path / sub)
        if not name.startswith(".")
    )
    for name, sub in files:
        file = path / sub / name
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            continue  # moved or deleted by another reader since we listed it
        except OSError as exc:
            raise _unreadable(file, exc) from exc
        yield MailItem(str(file), data)


def _read_directory(path: Path, *, nested: bool) -> Iterator[MailItem]:
    for name in sorted(_listdir(path)):
        if name.startswith("."):
            continue
        entry = path / name
        if entry.is_dir():
            if not nested:
                yield from _read_path(entry, nested=True)
        elif entry.suffix.lower() == ".eml":
            yield from _read_file(entry)


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: OSError) -> InputError:
    reason = exc.strerror or type(exc).__name__
    return InputError(f"{path}: cannot read: {reason}", field="path")


# -- finding calendars ------------------------------------------------------------------


def _calendar(part: Message, *, subject: str, sender: str) -> CalendarPart | None:
    filename = _filename(part)
    is_calendar = part.get_content_type() in _CALENDAR_TYPES
    if not is_calendar and not (filename and filename.lower().endswith(".ics")):
        return None
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    text = decode_text(payload, charset(part)).removeprefix("\ufeff")
    if "BEGIN:VCALENDAR" not in text.upper():
        return None
    return CalendarPart(
        method=_method(part),
        data=text.encode("utf-8"),
        filename=filename,
        subject=subject,
        sender=sender,
    )


def _method(part: Message) -> str | None:
    value = part.get_param("method")
    if isinstance(value, tuple):  # RFC 2231 form: (charset, language, value)
        value = value[2]
    if not isinstance(value, str):
        return None
    method = value.strip().strip('"').strip().upper()
    return method or None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except (LookupError, ValueError):  # an RFC 2231 charset that names a bad codec
        return None
    if name is None:
        return None
    # Outlook and some webmails put RFC 2047 words in the name parameter.
    return decode_words(name).strip() or None


def _same_calendar_key(data: bytes) -> str:
    """Equal for copies of one calendar that differ only in line ends or trailing blanks."""
    text = data.decode("utf-8")
    return "\n".join(line.rstrip() for line in text.splitlines()).strip()


# -- Authentication-Results (RFC 8601) --------------------------------------------------

_AR_EQUALS = re.compile(r"\s*=\s*")


def _authentication_results(value: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(authserv-id, [(method, result, header.from domain)]) of one header, lower-case."""
    pieces = _split_outside_quotes(_without_comments(FOLD.sub(" ", value)), ";")
    head = pieces[0].split()
    authserv_id = bare_domain(head[0].strip('"')) if head else ""
    results = []
    for piece in pieces[1:]:
        tokens = _AR_EQUALS.sub("=", piece).split()
        if not tokens:
            continue
        method, _, result = tokens[0].partition("=")
        properties = dict(token.partition("=")[::2] for token in tokens[1:])
        author = domain_of(properties.get("header.from", "").strip('"'))
        results.append((method.partition("/")[0].lower(), result.lower(), bare_domain(author)))
    return authserv_id, results


def _without_comments(text: str) -> str:
    """``text`` with its RFC 5322 comments (nested parentheses) removed; quotes kept."""
    out: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
        elif quoted:
            quoted = char != '"'
            out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            quoted = char == '"'
            out.append(char)
    return "".join(out)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    pieces = [""]
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            pieces.append("")
        else:
            pieces[-1] += char
    return pieces


# -- headers ------------------------------------------------------------------------------


def _sender(message: Message) -> str:
    mailboxes = header_addresses(message, "from")
    if len(mailboxes) != 1 or "@" not in mailboxes[0]:
        return ""
    return mailboxes[0].lower()
