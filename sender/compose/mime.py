"""Message bytes, assembled by hand because the bulk path builds one per recipient.

``email.message.EmailMessage`` costs 1-2 ms per message; a :class:`MessageBuilder`
prepares everything that does not change per recipient once, so ``build`` only
encodes the recipient, subject and bodies and joins bytes (tens of microseconds).

Layout (``alternatives`` are leaves such as a ``text/calendar`` invite)::

    multipart/mixed                    only when there are attachments
      multipart/alternative            only when there is more than the text
        text/plain
        text/html
        *alternatives
      *attachments                     base64, Content-Disposition: attachment

Boundaries are constants per nesting level that contain ``=_``: quoted-printable
and base64 output can never contain that sequence, and a 7bit body containing it
is sent as quoted-printable instead, so no body can ever collide with a boundary.

Header injection is impossible by construction: every value is checked for CR,
LF and NUL, raising :class:`~sender.errors.HeaderError` that names the header.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import struct
import time
from binascii import b2a_base64, b2a_qp
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from sender.addresses import addr_spec, ascii_domain
from sender.clock import Clock, SystemClock
from sender.errors import HeaderError, InputError
from sender.models import Address

__all__ = [
    "Attachment",
    "BuiltMessage",
    "MessageBuilder",
    "Part",
    "envelope_address",
    "make_message_id",
]

_MAX_LINE = 78  # RFC 5322 2.1.1: SHOULD
_HARD_LINE = 998  # RFC 5322 2.1.1: MUST
_MAX_NAME = 76  # so that "Name: " and a first word fit on one line

_BOUNDARY_MIXED = "=_sender-mixed"
_BOUNDARY_ALT = "=_sender-alt"

# Headers sender writes itself, and ones whose meaning would lie: the envelope names only
# the participant, so a Cc or Bcc would not be delivered (and a Bcc would be shown).
_STRUCTURAL = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "reply-to",
        "cc",
        "bcc",
        "return-path",
    }
)
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII except ':' (RFC 5322 ftext)
_FORBIDDEN = re.compile(r"[\r\n\x00]")
_PRINTABLE = re.compile(r"[ -~]*")
_PRINTABLE_TAB = re.compile(r"[\t -~]*")
# A subject sent as-is: printable ASCII words separated by single spaces, each short
# enough to fold onto its own line. Anything else becomes encoded-words, which keeps
# leading, trailing and repeated whitespace and look-alike "=?" text exact.
_PLAIN_SUBJECT = re.compile(r"(?:[!-~]{1,69}(?: [!-~]{1,76})*)?")
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_ATOM_PHRASE = re.compile(rf"[{_ATEXT}]+(?: [{_ATEXT}]+)*")
_LONG_RUN = re.compile(r"[^ ]{61}")
_MSGID = re.compile(r"<?([!-;=?-~]+@[!-;=?-~]+)>?")  # printable ASCII except '<' and '>'
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 2045 token
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]*)", re.IGNORECASE)
_WORDS = re.compile(r"[ \t]*[^ \t]+|[ \t]+")
_HIGH_BYTES = bytes(range(0x80, 0x100))

_EW_PREFIX = "=?utf-8?b?"
_EW_OVERHEAD = len(_EW_PREFIX) + 2  # "=?utf-8?b?" ... "?="
_EW_MAX = 75  # RFC 2047 2: an encoded-word is at most 75 characters
_EW_REST_BYTES = (_EW_MAX - _EW_OVERHEAD) // 4 * 3  # 45 octets per continuation word

_CT_TEXT = "Content-Type: text/plain; charset=UTF-8\r\n"
_CT_HTML = "Content-Type: text/html; charset=UTF-8\r\n"
_CTE_7BIT = "Content-Transfer-Encoding: 7bit\r\n"
_CTE_QP = "Content-Transfer-Encoding: quoted-printable\r\n"
_CTE_BASE64 = "Content-Transfer-Encoding: base64\r\n"
_MIME_VERSION = "MIME-Version: 1.0\r\n"
_CT_ALTERNATIVE = f'Content-Type: multipart/alternative; boundary="{_BOUNDARY_ALT}"\r\n'
_CT_MIXED = f'Content-Type: multipart/mixed; boundary="{_BOUNDARY_MIXED}"\r\n'

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class Part:
    """An extra leaf inside ``multipart/alternative``, such as a ``text/calendar`` invite.

    ``text/*`` content is sent as UTF-8 (``charset=UTF-8`` is added); bytes given for
    a ``text/*`` type must therefore be UTF-8.
    """

    content_type: str
    content: str | bytes


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent base64-encoded with ``Content-Disposition: attachment``."""

    content_type: str
    filename: str
    content: bytes


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    """The bytes to hand to a transport, and what the transport must know about them."""

    message_id: str  # with angle brackets
    data: bytes  # complete RFC 5322 message, CRLF line endings
    smtputf8: bool  # an address has a non-ASCII local part: needs SMTPUTF8 (RFC 6531)


def make_message_id(domain: str) -> str:
    """Return ``<random@domain>``; 128 random bits make it unique and unguessable."""
    return f"<{secrets.token_hex(16)}@{_msgid_domain(domain)}>"


def envelope_address(email: str, /, *, field: str = "address") -> tuple[str, bool]:
    """The address as SMTP and headers carry it (IDN domain as A-label), and whether it
    needs SMTPUTF8. Raises :class:`~sender.errors.AddressError` or
    :class:`~sender.errors.HeaderError` naming ``field``, exactly as ``build`` would."""
    _check(field, email)
    return addr_spec(email, field=field)


class MessageBuilder:
    """Builds messages from one sender; everything sender-wide is validated and encoded once.

    Not safe to share between threads (it caches the formatted ``Date``); sharing between
    asyncio tasks is fine.
    """

    __slots__ = (
        "_clock",
        "_ct_cache",
        "_date",
        "_extra",
        "_from_line",
        "_msgid_domain",
        "_reply_to_line",
        "_reply_to_smtputf8",
        "_smtputf8",
    )

    def __init__(
        self,
        *,
        from_address: Address,
        reply_to: Address | None = None,
        message_id_domain: str | None = None,
        headers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        from_line, from_utf8 = _address_line("From", from_address)
        self._from_line = from_line
        self._smtputf8 = from_utf8
        self._reply_to_line = ""
        self._reply_to_smtputf8 = False
        if reply_to is not None:
            self._reply_to_line, self._reply_to_smtputf8 = _address_line("Reply-To", reply_to)
        domain = message_id_domain if message_id_domain is not None else from_address.domain
        self._msgid_domain = _msgid_domain(domain)
        self._extra: dict[str, str] = _extra_lines(headers) if headers else {}
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._date: tuple[int, str] = (-1, "")
        self._ct_cache: dict[str, tuple[str, bool]] = {}

    def build(
        self,
        *,
        to: Address,
        subject: str,
        text: str,
        html: str | None = None,
        reply_to: Address | None = None,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
        alternatives: Sequence[Part] = (),
        attachments: Sequence[Attachment] = (),
    ) -> BuiltMessage:
        """Return the complete message for one recipient.

        Raises :class:`~sender.errors.HeaderError` or :class:`~sender.errors.AddressError`
        (both ``ValueError``) naming the offending header, and
        :class:`~sender.errors.InputError` for a body that is not encodable text.
        """
        to_line, smtputf8 = _address_line("To", to)
        if reply_to is not None:
            reply_line, reply_utf8 = _address_line("Reply-To", reply_to)
            smtputf8 = smtputf8 or reply_utf8
        else:
            reply_line = self._reply_to_line
            smtputf8 = smtputf8 or self._reply_to_smtputf8
        if message_id is None:
            message_id = f"<{secrets.token_hex(16)}@{self._msgid_domain}>"
        else:
            message_id = _check_message_id(message_id)

        head = [
            self._from_line,
            to_line,
            _subject_line(subject),
            self._date_line(),
            f"Message-ID: {message_id}\r\n",
            _MIME_VERSION,
            reply_line,
        ]
        if headers:
            extra = dict(self._extra)
            extra.update(_extra_lines(headers))
            head.extend(extra.values())
        elif self._extra:
            head.extend(self._extra.values())

        # Leaves: (Content-Type and Content-Transfer-Encoding lines, body ending in CRLF).
        cte, body = _encode_text(text, field="text")
        leaves = [(_CT_TEXT + cte, body)]
        if html is not None:
            cte, body = _encode_text(html, field="html")
            leaves.append((_CT_HTML + cte, body))
        for part in alternatives:
            leaves.append(self._encode_part(part))

        if len(leaves) == 1:
            entity_head, entity = leaves[0][0], [leaves[0][1]]
        else:
            entity_head = _CT_ALTERNATIVE
            entity = _multipart(_BOUNDARY_ALT, leaves)
        if attachments:
            mixed = [(entity_head, b"".join(entity))]
            mixed.extend(_encode_attachment(attachment) for attachment in attachments)
            entity_head = _CT_MIXED
            entity = _multipart(_BOUNDARY_MIXED, mixed)
        head.append(entity_head)
        head.append("\r\n")
        entity.insert(0, "".join(head).encode())
        return BuiltMessage(
            message_id=message_id,
            data=b"".join(entity),
            smtputf8=smtputf8 or self._smtputf8,
        )

    def message_id_for(self, key: str, /) -> str:
        """``<hash@domain>`` derived from ``key``: the same key, the same Message-ID.

        For a message that may go out twice (an outbox message re-sent after a
        crash), so a receiver that got both copies can tell they are one message.
        ``key`` must be unique to that message.
        """
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"<{digest}@{self._msgid_domain}>"

    def _date_line(self) -> str:
        """Format ``Date`` once per second: gmtime and formatting dominate otherwise."""
        second = int(self._clock.now())
        cached = self._date
        if cached[0] == second:
            return cached[1]
        t = time.gmtime(second)
        line = (
            f"Date: {_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000\r\n"
        )
        self._date = (second, line)
        return line

    def _encode_part(self, part: Part) -> tuple[str, bytes]:
        cached = self._ct_cache.get(part.content_type)
        if cached is None:
            cached = _part_content_type(part.content_type)
            if len(self._ct_cache) < 64:  # a handful of types recur; never grow unbounded
                self._ct_cache[part.content_type] = cached
        ct_line, is_text = cached
        content = part.content
        if is_text:
            if isinstance(content, bytes):
                try:
                    content = content.decode()
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"{part.content_type} content is not UTF-8", field="alternatives"
                    ) from exc
            cte, body = _encode_text(content, field="alternatives")
            return ct_line + cte, body
        if isinstance(content, str):
            content = _utf8(content, field="alternatives")
        return ct_line + _CTE_BASE64, _base64(content)


# -- headers ---------------------------------------------------------------------------


def _check(field: str, value: str) -> None:
    if _FORBIDDEN.search(value) is not None:
        raise HeaderError(f"{field} must not contain CR, LF or NUL", field=field)


def _fold(name: str, tokens: Sequence[str]) -> str:
    """Join ``Name: token token...`` with CRLF before a token where a line would pass 78.

    Tokens after the first start with whitespace; a fold only ever inserts CRLF in
    front of that whitespace, so unfolding restores the value exactly.
    """
    out = [name, ":"]
    if tokens:
        out.append(" ")
    line = len(name) + 2
    for token in tokens:
        if line + len(token) > _MAX_LINE and token[0] in " \t" and token[-1] not in " \t":
            out.append("\r\n")
            line = 0
        out.append(token)
        line += len(token)
        if line > _HARD_LINE:
            raise HeaderError(f"{name} has a word too long to fold", field=name)
    out.append("\r\n")
    return "".join(out)


def _utf8_chunks(data: bytes, first: int, rest: int) -> list[bytes]:
    """Cut UTF-8 into pieces of at most first/rest octets, never inside a character."""
    chunks = []
    start, size, end = 0, first, len(data)
    while end - start > size:
        cut = start + size
        while data[cut] & 0xC0 == 0x80:  # a continuation octet: back off to the lead
            cut -= 1
        chunks.append(data[start:cut])
        start, size = cut, rest
    chunks.append(data[start:])
    return chunks


def _encoded_words(value: str, *, prefix: int, field: str) -> list[str]:
    """RFC 2047 ``b`` encoded-words, the first fitting after a ``prefix``-long line start.

    Words are cut on character boundaries; a decoder drops the whitespace between them.
    """
    data = _utf8(value, field=field, error=HeaderError)
    first = max((_MAX_LINE - prefix - _EW_OVERHEAD) // 4 * 3, 6)  # >= 4: always progresses
    words = [
        f" {_EW_PREFIX}{b2a_base64(chunk, newline=False).decode('ascii')}?="
        for chunk in _utf8_chunks(data, first, _EW_REST_BYTES)
    ]
    words[0] = words[0][1:]
    return words


def _subject_line(subject: str) -> str:
    if subject.isascii() and _PLAIN_SUBJECT.fullmatch(subject) is not None and "=?" not in subject:
        if len(subject) <= _MAX_LINE - 9:
            return f"Subject: {subject}\r\n" if subject else "Subject:\r\n"
        words = subject.split(" ")
        return _fold("Subject", [words[0], *(" " + word for word in words[1:])])
    _check("Subject", subject)
    return _fold("Subject", _encoded_words(subject, prefix=9, field="Subject"))


def _phrase_tokens(name: str, *, prefix: int, field: str) -> list[str]:
    """A display name as atoms, one quoted-string, or encoded-words (RFC 5322 phrase)."""
    if name.isascii() and "=?" not in name and _LONG_RUN.search(name) is None:
        if _ATOM_PHRASE.fullmatch(name) is not None:
            words = name.split(" ")
            return [words[0], *(" " + w for w in words[1:])]
        if _PRINTABLE.fullmatch(name) is not None:
            quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return _WORDS.findall(quoted)
    return _encoded_words(name, prefix=prefix, field=field)


def _address_line(field: str, address: Address) -> tuple[str, bool]:
    """``Field: name <addr>`` folded, and whether the address needs SMTPUTF8."""
    _check(field, address.email)
    _check(field, address.name)
    spec, smtputf8 = addr_spec(address.email, field=field)
    if not address.name:
        return _fold(field, [spec]), smtputf8
    tokens = _phrase_tokens(address.name, prefix=len(field) + 2, field=field)
    tokens.append(f" <{spec}>")
    return _fold(field, tokens), smtputf8


def _msgid_domain(domain: str) -> str:
    _check("Message-ID", domain)
    encoded = ascii_domain(domain)
    if encoded is None:
        raise HeaderError(f"{domain!r} is not a domain for Message-ID", field="Message-ID")
    return encoded


def _check_message_id(message_id: str) -> str:
    _check("Message-ID", message_id)
    match = _MSGID.fullmatch(message_id)
    if match is None or message_id.startswith("<") != message_id.endswith(">"):
        raise HeaderError(f"{message_id!r} is not <id@domain>", field="Message-ID")
    return f"<{match.group(1)}>"


def _extra_lines(headers: Mapping[str, str]) -> dict[str, str]:
    """Validate extra headers; return folded lines keyed by lower-case name."""
    lines: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if (
            _HEADER_NAME.fullmatch(name) is None
            or len(name) > _MAX_NAME
            or lower in _STRUCTURAL
            or lower.startswith("content-")
            or lower in lines
        ):
            raise HeaderError(f"{name!r} is not a header name sender lets callers set", field=name)
        _check(name, value)
        if _PRINTABLE_TAB.fullmatch(value) is not None:
            tokens = _WORDS.findall(value)
        else:
            tokens = _encoded_words(value, prefix=len(name) + 2, field=name)
        lines[lower] = _fold(name, tokens)
    return lines


def _params(name: str, value: str) -> list[str]:
    """``name=value`` as a token, a quoted-string, or RFC 2231 ``name*=utf-8''...`` pieces."""
    if _TOKEN.fullmatch(value) is not None and len(value) <= 60:
        return [f"{name}={value}"]
    if _PRINTABLE.fullmatch(value) is not None and len(value) <= 60:
        return [name + '="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"']
    # RFC 2231 with continuations; segments end on character boundaries because
    # decoders (the stdlib among them) decode every segment on its own.
    segments: list[str] = []
    current = ""
    for char in value:
        encoded = quote(char.encode(), safe="!#$&+-.^_`|~")
        if current and len(current) + len(encoded) > 50:
            segments.append(current)
            current = ""
        current += encoded
    segments.append(current)
    if len(segments) == 1:
        return [f"{name}*=utf-8''{segments[0]}"]
    return [f"{name}*0*=utf-8''{segments[0]}"] + [
        f"{name}*{index}*={segment}" for index, segment in enumerate(segments[1:], start=1)
    ]


def _with_params(tokens: list[str], params: list[str]) -> list[str]:
    """Append ``; param`` pieces so that folds fall after a semicolon."""
    for param in params:
        tokens[-1] += ";"
        tokens.append(" " + param)
    return tokens


def _content_type_value(content_type: str, *, field: str) -> tuple[str, str]:
    """Validate a leaf content type; return it stripped and its lower-case main type."""
    _check(field, content_type)
    content_type = content_type.strip()
    mime_type = content_type.partition(";")[0].strip().lower()
    main, slash, sub = mime_type.partition("/")
    if (
        _PRINTABLE.fullmatch(content_type) is None
        or not slash
        or _TOKEN.fullmatch(main) is None
        or _TOKEN.fullmatch(sub) is None
        or main in ("multipart", "message")
    ):
        raise HeaderError(f"{content_type!r} is not a leaf content type", field=field)
    return content_type, main


def _part_content_type(content_type: str) -> tuple[str, bool]:
    """The folded Content-Type line of an alternative, and whether it is text."""
    value, main = _content_type_value(content_type, field="Content-Type")
    if main == "text":
        match = _CHARSET.search(value)
        if match is None:
            value += "; charset=UTF-8"
        elif match.group(1).lower() not in ("utf-8", "utf8"):
            raise HeaderError(f"{content_type!r}: text parts are UTF-8", field="Content-Type")
    return _fold("Content-Type", _WORDS.findall(value)), main == "text"


# -- bodies ----------------------------------------------------------------------------


def _utf8(value: str, *, field: str, error: type[InputError] = InputError) -> bytes:
    try:
        return value.encode()
    except UnicodeEncodeError as exc:  # lone surrogates
        raise error(f"{field} is not encodable as UTF-8", field=field) from exc


def _base64(data: bytes) -> bytes:
    """Base64 in 76-character CRLF lines (RFC 2045 6.8), ending with CRLF."""
    encoded = b2a_base64(data, newline=False)
    full, rest = divmod(len(encoded), 76)
    # A Struct of "76s" * n slices the lines in C, three times faster than a loop.
    lines = list(_base64_lines(full).unpack_from(encoded)) if full else []
    if rest:
        lines.append(encoded[-rest:])
    lines.append(b"")
    return b"\r\n".join(lines)


@functools.lru_cache(maxsize=256)
def _base64_lines(count: int) -> struct.Struct:
    return struct.Struct("76s" * count)


def _encode_text(text: str, *, field: str) -> tuple[str, bytes]:
    """UTF-8 text with CRLF line endings (always ending in one), and its cheapest safe CTE.

    Pure ASCII without NUL, ``=_`` or lines over 998 octets goes as 7bit; text with
    under ~1/6 non-ASCII octets (Latin languages) as quoted-printable; the rest (CJK)
    as base64, where quoted-printable would triple most octets.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    data = _utf8(text, field=field)
    if data.isascii():
        if (
            b"=_" not in data
            and b"\x00" not in data
            and (len(data) <= _HARD_LINE + 1 or max(map(len, data.split(b"\n"))) <= _HARD_LINE)
        ):
            return _CTE_7BIT, data.replace(b"\n", b"\r\n")
        return _CTE_QP, b2a_qp(data, istext=True).replace(b"\n", b"\r\n")
    high = len(data) - len(data.translate(None, _HIGH_BYTES))
    if high * 6 < len(data):
        # b2a_qp turns every LF into a hard line break and soft-breaks at 76 with "=\n".
        return _CTE_QP, b2a_qp(data, istext=True).replace(b"\n", b"\r\n")
    return _CTE_BASE64, _base64(data.replace(b"\n", b"\r\n"))


def _encode_attachment(attachment: Attachment) -> tuple[str, bytes]:
    value, _ = _content_type_value(attachment.content_type, field="Content-Type")
    _check("Content-Disposition", attachment.filename)
    ct_tokens = _WORDS.findall(value)
    disposition = ["attachment"]
    if attachment.filename:
        _with_params(ct_tokens, _params("name", attachment.filename))
        _with_params(disposition, _params("filename", attachment.filename))
    head = (
        _fold("Content-Type", ct_tokens) + _fold("Content-Disposition", disposition) + _CTE_BASE64
    )
    return head, _base64(attachment.content)


def _multipart(boundary: str, leaves: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """The body of a multipart entity from (leaf headers, leaf body ending in CRLF).

    The CRLF before each delimiter belongs to the delimiter (RFC 2046 5.1.1), so the
    extra one keeps the leaf's own final line break.
    """
    between = f"\r\n--{boundary}\r\n".encode()
    chunks = [between[2:]]
    for index, (head, body) in enumerate(leaves):
        if index:
            chunks.append(between)
        chunks.append(head.encode() + b"\r\n")
        chunks.append(body)
    chunks.append(f"\r\n--{boundary}--\r\n".encode())
    return chunks
