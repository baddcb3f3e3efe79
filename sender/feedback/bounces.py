"""Delivery failures that come back to sender: reading them, and saying what they mean.

A bounce reaches sender as a raw message (a DSN, an MTA's own prose, an
auto-reply, a spam complaint) or as an Amazon SES notification. Each parser
returns :class:`Bounce` findings, one per affected recipient, so the
suppression layer can stop mailing an address that will never accept mail
(:attr:`BounceKind.HARD`), wait on one that may (:attr:`BounceKind.SOFT`),
and never count an out-of-office reply as a failure.

Why the standard library and not flufl.bounce: flufl.bounce 4.0 (Apache-2.0,
installs and imports on 3.11) recognises many old non-standard formats, but
its ``scan_message`` returns only addresses: no status code, no diagnostic,
no permanent/temporary split beyond two coarse sets, which is the part sender
needs to decide on suppression. We would still parse every DSN and every MTA
text ourselves to get codes, so the library would add two dependencies
(atpublic, zope.interface) for little. Its detectors and test data were the
guide to the shapes recognised here (see ``tests/samples/bounces/README.md``).

Reading order, first match wins: an ARF feedback report (RFC 5965) is a
complaint; a ``message/delivery-status`` part (RFC 3464) gives one finding
per recipient block; an auto-reply (RFC 3834 headers, vendor headers or a
vacation subject) from a person is :attr:`BounceKind.AUTOREPLY`; then the
prose of Exim, qmail, Postfix, Yahoo, Exchange and GroupWise; last, a
message from a mailer daemon that names nobody is kept as
:attr:`BounceKind.UNKNOWN` for a human. Anything else is ordinary mail: ``[]``.

Signature verification of SNS envelopes is out of scope here: the caller
verifies the SNS ``Signature`` (or trusts its transport) before passing the
payload to :func:`parse_ses_notification`.
"""

from __future__ import annotations

import email
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from enum import StrEnum

from sender.errors import InputError
from sender.feedback.mailparse import MAX_PARTS as _MAX_PARTS
from sender.feedback.mailparse import (
    charset,
    decode_text,
    decoded_subject,
    header_addresses,
    header_values,
    mailboxes,
    undo_surrogates,
    walk_parts,
)

__all__ = [
    "Bounce",
    "BounceKind",
    "classify",
    "envelope_recipients",
    "parse_bounce",
    "parse_ses_notification",
]

# Characters of report text we read, findings we return (and mailparse's limits on
# nesting and parts): hostile input must not cost more than a real bounce.
_MAX_TEXT = 256 * 1024
_MAX_FINDINGS = 500


class BounceKind(StrEnum):
    """What a finding means for the address it names."""

    HARD = "hard"  # permanent 5.x.x: unknown user, domain does not exist, no MX ...
    SOFT = "soft"  # 4.x.x: mailbox full, delay, greylisting
    AUTOREPLY = "autoreply"  # out of office, vacation: never a bounce
    COMPLAINT = "complaint"  # ARF feedback report (RFC 5965), SES complaint
    UNKNOWN = "unknown"  # kept for a human


@dataclass(frozen=True, slots=True)
class Bounce:
    """One recipient a report is about, and what happened to it.

    ``recipient`` is lower-cased, or None when the report names nobody.
    ``reason`` is one of ``unknown_user``, ``no_domain``, ``mailbox_full``,
    ``policy``, ``greylisted``, ``delayed``, ``autoreply``, ``complaint``,
    ``other``. ``action`` is the RFC 3464 Action when the report gives one;
    ``feedback_type`` the ARF Feedback-Type of a complaint.
    """

    recipient: str | None
    kind: BounceKind
    status: str | None
    diagnostic: str
    reason: str
    action: str | None = None
    feedback_type: str | None = None


# -- classification ----------------------------------------------------------------------

_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_SMTP_CODE = re.compile(r"(?<![\w.:\[])([245]\d\d)(?=[ -]|$)")

_MAILBOX_FULL = re.compile(
    r"mailbox (?:is )?full|over ?quota|quota (?:exceeded|full)|exceeded (?:the |their |his |her )?"
    r"(?:storage )?(?:quota|storage)|insufficient (?:system )?storage|mailbox size limit",
    re.IGNORECASE,
)
_NO_DOMAIN = re.compile(
    r"host or domain name not found|nxdomain|no mx\b|null mx|no mail exchanger|"
    r"domain (?:name )?(?:not found|does not exist|doesn't exist)|host not found|"
    r"name service error|unrouteable (?:mail )?(?:domain|address)|no such domain|"
    r"domain (?:name )?has no",
    re.IGNORECASE,
)
_UNKNOWN_USER = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|does not exist|"
    r"doesn'?t exist|recip(?:ient)?notfound|unknown recipient|recipient (?:not found|unknown)|"
    r"(?:user|mailbox|address|recipient) (?:was )?not found|not a valid (?:recipient|mailbox)|"
    r"invalid (?:recipient|mailbox)|mailbox unavailable|address rejected: user|"
    r"doesn'?t have an? [\w.-]+ account|unknown or illegal user|"
    r"recipient name is not recognized|user not on post office|"
    r"account (?:has been )?(?:disabled|discontinued|deactivated)",
    re.IGNORECASE,
)
_POLICY = re.compile(
    r"blocked|block ?list|black ?list|spam|dmarc|\bspf\b|dkim|reputation|"
    r"rejected (?:for|by|due to) (?:policy|content)|policy (?:violation|reasons)|"
    r"not authori[sz]ed|access denied|relay(?:ing)? (?:denied|not permitted)",
    re.IGNORECASE,
)
_GREYLIST = re.compile(r"gr[ae]y[- ]?list", re.IGNORECASE)
_TRY_LATER = re.compile(r"try again|retry|come back later|deferred", re.IGNORECASE)
_DELAY = re.compile(
    r"delay|deferred|timed? ?out|queue|not yet been delivered|try again|temporar",
    re.IGNORECASE,
)


def classify(
    status: str | None, diagnostic: str = "", *, code: int | None = None
) -> tuple[BounceKind, str]:
    """``(kind, reason)`` from an enhanced status (RFC 3463), an SMTP code and the text.

    ``status`` may carry more than the code (``"5.1.1 (user unknown)"``). When
    it or ``code`` is missing, the first enhanced status or reply code found
    in ``diagnostic`` stands in. 5.x.x is :attr:`BounceKind.HARD`, except a
    full mailbox (5.2.2 or text saying so), which common practice treats as
    :attr:`BounceKind.SOFT`; 4.x.x is SOFT. With neither status nor code the
    answer is ``(UNKNOWN, "other")`` whatever the text says.
    """
    text = " ".join(diagnostic.split())
    enhanced = _enhanced(status or "") or _enhanced(text)
    if code is None:
        code = _smtp_code(text)
    if enhanced is not None:
        klass = enhanced[0]
    elif code is not None and 200 <= code <= 599:
        klass = str(code)[0]
    else:
        return BounceKind.UNKNOWN, "other"
    if klass == "5":
        return _permanent(enhanced, code, text)
    if klass == "4":
        return _transient(enhanced, code, text)
    return BounceKind.UNKNOWN, "other"


def _permanent(enhanced: str | None, code: int | None, text: str) -> tuple[BounceKind, str]:
    if enhanced == "5.2.2" or _MAILBOX_FULL.search(text):
        return BounceKind.SOFT, "mailbox_full"
    if enhanced in {"5.1.0", "5.1.1"}:
        return BounceKind.HARD, "unknown_user"
    if enhanced == "5.1.10" or code == 556:
        # RFC 7505 gives 556 5.1.10 to a null MX; Exchange reuses 5.1.10 for
        # RESOLVER.ADR.RecipientNotFound, which its text says.
        unknown = _UNKNOWN_USER.search(text) and not _NO_DOMAIN.search(text)
        return BounceKind.HARD, "unknown_user" if unknown else "no_domain"
    if enhanced in {"5.1.2", "5.4.4"}:
        return BounceKind.HARD, "no_domain"
    if enhanced is not None and enhanced.startswith("5.7."):
        return BounceKind.HARD, "policy"
    return BounceKind.HARD, _text_reason(text) or "other"


def _transient(enhanced: str | None, code: int | None, text: str) -> tuple[BounceKind, str]:
    if enhanced == "4.2.2" or _MAILBOX_FULL.search(text):
        return BounceKind.SOFT, "mailbox_full"
    greylist_reply = (enhanced or "").startswith("4.7.") or code in {450, 451}
    if _GREYLIST.search(text) or (greylist_reply and _TRY_LATER.search(text)):
        return BounceKind.SOFT, "greylisted"
    if (enhanced or "").startswith("4.4.") or _DELAY.search(text):
        return BounceKind.SOFT, "delayed"
    return BounceKind.SOFT, "other"


def _text_reason(text: str) -> str | None:
    if _NO_DOMAIN.search(text):
        return "no_domain"
    if _UNKNOWN_USER.search(text):
        return "unknown_user"
    if _POLICY.search(text):
        return "policy"
    return None


def _judge(
    status: str | None, diagnostic: str, *, action: str | None, failed: bool
) -> tuple[BounceKind, str]:
    """Classify one finding; a report that says it failed may be read by its words alone."""
    if action == "delayed":
        return BounceKind.SOFT, "delayed"
    kind, reason = classify(status, diagnostic)
    if kind is BounceKind.UNKNOWN and failed:
        text = " ".join(diagnostic.split())
        if _MAILBOX_FULL.search(text):
            return BounceKind.SOFT, "mailbox_full"
        worded = _text_reason(text)
        if worded is not None:
            return BounceKind.HARD, worded
    return kind, reason


def _enhanced(text: str) -> str | None:
    found = _ENHANCED.search(text)
    if found is None:
        return None
    return ".".join(str(int(group)) for group in found.groups())


def _smtp_code(text: str) -> int | None:
    found = _SMTP_CODE.search(text)
    return int(found.group(1)) if found else None


# -- parsing messages --------------------------------------------------------------------


def parse_bounce(data: bytes, /) -> list[Bounce]:
    """Every finding in one raw message, in report order; ``[]`` for ordinary mail.

    One :class:`Bounce` per failed or delayed recipient of a DSN or MTA
    report (recipients reported delivered, relayed or expanded are skipped),
    one per complained-about recipient of an ARF report, one for an
    auto-reply (its From address). Never raises on malformed input.
    """
    message = email.message_from_bytes(data)
    parts = list(walk_parts(message, into_messages=False))
    feedback = _arf(parts)
    if feedback is not None:
        return feedback
    reports = [
        part
        for part in parts
        if part.get_content_type() in {"message/delivery-status", "message/global-delivery-status"}
    ]
    text = _report_text(parts)
    if reports:
        return _dsn(reports, _prose_diagnostics(text))[:_MAX_FINDINGS]
    daemon = _from_daemon(message)
    sender = _sender(message)
    if _is_autoreply(message) and not daemon:
        return [_autoreply(sender)]
    for detector in _DETECTORS:
        findings = detector(text)
        if findings:
            return findings[:_MAX_FINDINGS]
    if daemon:
        failed = _header_addresses(message, "x-failed-recipients")
        if failed:
            return [_text_finding(address, "") for address in failed][:_MAX_FINDINGS]
        if _BOUNCE_SUBJECT.search(decoded_subject(message)):
            return [Bounce(None, BounceKind.UNKNOWN, None, "", "other")]
    if _is_autoreply(message):
        return [_autoreply(sender)]
    return []


def envelope_recipients(data: bytes, /) -> list[str]:
    """The addresses a message was delivered to, as its saved headers tell.

    Reads Delivered-To, X-Original-To, Envelope-To, X-Envelope-To and To, in
    that order; lower-cased, each once. A VERP return path
    (``bounces+<token>@bounce.example.com``) shows up here in a saved bounce.
    """
    message = email.message_from_bytes(data)
    found: dict[str, None] = {}
    for name in ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to"):
        for address in _header_addresses(message, name):
            found.setdefault(address, None)
    return list(found)


# -- RFC 3464 delivery status notifications ----------------------------------------------

_NOT_FAILED = frozenset({"delivered", "relayed", "expanded"})


def _dsn(reports: list[Message], prose: dict[str, str]) -> list[Bounce]:
    """Findings from the recipient blocks; ``prose`` fills in a missing Diagnostic-Code."""
    findings: list[Bounce] = []
    for report in reports:
        for block in _field_blocks(report):
            final = _first(block, "final-recipient")
            original = _first(block, "original-recipient")
            if final is None and original is None:
                continue
            words = (_first(block, "action") or "").lower().split()
            action = words[0] if words else None
            if action in _NOT_FAILED:
                continue
            # Original-Recipient is the address sender wrote to; Final-Recipient
            # may be an alias's target. flufl.bounce's DSN detector prefers it too.
            recipient = _dsn_address(original) or _dsn_address(final)
            diagnostic = _first(block, "diagnostic-code") or ""
            if not diagnostic:
                # Exim leaves out Diagnostic-Code for its own errors ("Unrouteable address").
                diagnostic = prose.get(_dsn_address(final) or "", "")
            status = _dsn_status(_first(block, "status") or "", diagnostic)
            if action is None and status is not None and status.startswith("2."):
                continue
            kind, reason = _judge(status, diagnostic, action=action, failed=action == "failed")
            findings.append(Bounce(recipient, kind, status, diagnostic, reason, action))
            if len(findings) >= _MAX_FINDINGS:
                return findings
    return findings


def _dsn_status(field: str, diagnostic: str) -> str | None:
    """The Status field's code; a generic X.0.0 yields to the reply's own code of that class."""
    status = _enhanced(field)
    replied = _enhanced(diagnostic)
    if status is None:
        return replied
    if status.endswith(".0.0") and replied is not None and replied[0] == status[0]:
        return replied
    return status


def _prose_diagnostics(text: str) -> dict[str, str]:
    """What the human-readable part of a report says about each recipient."""
    for detector in _DETECTORS:
        findings = detector(text)
        if findings:
            return {f.recipient: f.diagnostic for f in findings if f.recipient and f.diagnostic}
    return {}


def _dsn_address(value: str | None) -> str | None:
    if value is None:
        return None
    _type, _sep, address = value.rpartition(";")
    address = address.strip().strip("<>").strip().lower()
    return address if "@" in address else None


def _field_blocks(part: Message) -> list[dict[str, list[str]]]:
    """The field blocks of a delivery-status or feedback-report part."""
    payload = part.get_payload()
    blocks: list[dict[str, list[str]]] = []
    if isinstance(payload, list):
        # The parser splits message/delivery-status into one Message per block,
        # and reads other message/* types as one message whose body holds the rest.
        for item in payload[:_MAX_PARTS]:
            if not isinstance(item, Message):
                continue
            blocks.append(_fields((key, value) for key, value in item.raw_items()))
            inner = item.get_payload()
            if isinstance(inner, str) and inner.strip():
                blocks.extend(_text_blocks(inner))
    elif isinstance(payload, str):
        blocks.extend(_text_blocks(payload))
    return blocks


def _text_blocks(text: str) -> list[dict[str, list[str]]]:
    text = text[:_MAX_TEXT].replace("\r\n", "\n").replace("\r", "\n")
    blocks: list[dict[str, list[str]]] = []
    for chunk in re.split(r"\n[ \t]*\n", text)[:_MAX_PARTS]:
        pairs: list[tuple[str, str]] = []
        for line in chunk.split("\n"):
            if line[:1] in {" ", "\t"} and pairs:
                name, value = pairs[-1]
                pairs[-1] = (name, value + " " + line)
            elif ":" in line:
                name, _sep, value = line.partition(":")
                pairs.append((name, value))
        if pairs:
            blocks.append(_fields(pairs))
    return blocks


def _fields(pairs: Iterable[tuple[str, object]]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        if isinstance(value, str):
            text = " ".join(undo_surrogates(value).split())
            fields.setdefault(name.strip().lower(), []).append(text)
    return fields


def _first(block: dict[str, list[str]], name: str) -> str | None:
    values = block.get(name)
    return values[0] if values else None


# -- RFC 5965 feedback reports -----------------------------------------------------------

_ORIGINAL_TYPES = frozenset({"message/rfc822", "message/global", "text/rfc822-headers"})


def _arf(parts: list[Message]) -> list[Bounce] | None:
    reports = [part for part in parts if part.get_content_type() == "message/feedback-report"]
    if not reports:
        return None
    fields: dict[str, list[str]] = {}
    for block in _field_blocks(reports[0]):
        for name, values in block.items():
            fields.setdefault(name, []).extend(values)
    words = (_first(fields, "feedback-type") or "").lower().split()
    feedback_type = words[0] if words else None
    recipients: dict[str, None] = {}
    for value in fields.get("original-rcpt-to", []):
        for _name, address in mailboxes([value]):
            if "@" in address:
                recipients.setdefault(address.lower(), None)
    if not recipients:
        original = _original_message(parts)
        if original is not None:
            for address in _header_addresses(original, "to"):
                recipients.setdefault(address, None)
    names: list[str | None] = list(recipients) or [None]
    return [
        Bounce(name, BounceKind.COMPLAINT, None, "", "complaint", None, feedback_type)
        for name in names[:_MAX_FINDINGS]
    ]


def _original_message(parts: list[Message]) -> Message | None:
    for part in parts:
        if part.get_content_type() not in _ORIGINAL_TYPES:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            for item in payload:
                if isinstance(item, Message):
                    return item
        elif isinstance(payload, str):
            return email.message_from_string(payload[:_MAX_TEXT])
    return None


# -- auto-replies ------------------------------------------------------------------------

_AUTOREPLY_SUBJECT = re.compile(
    r"^\s*(?:out of (?:the )?office|automatic reply|auto[- ]?reply|auto(?:matic)? response|"
    r"abwesenheitsnotiz|automatische antwort|fravær|fraværsmelding|automatisk svar|"
    r"frånvaro|autosvar|réponse automatique|absence|respuesta automática|"
    r"risposta automatica|vacation|on vacation)\b",
    re.IGNORECASE,
)


def _is_autoreply(message: Message) -> bool:
    auto = _header(message, "auto-submitted").lower()
    if auto.startswith("auto-replied"):
        return True
    if _header(message, "x-autoreply") or _header(message, "x-autorespond"):
        return True
    if _header(message, "precedence").lower().strip() == "auto_reply":
        return True
    return bool(_AUTOREPLY_SUBJECT.search(decoded_subject(message)))


def _autoreply(sender: str | None) -> Bounce:
    return Bounce(sender, BounceKind.AUTOREPLY, None, "", "autoreply")


_DAEMON_LOCAL = re.compile(
    r"^(?:mailer[-_]?daemon|mail[-_]?daemon|postmaster|mdaemon|microsoftexchange[0-9a-f]*)$",
    re.IGNORECASE,
)
_DAEMON_NAME = re.compile(
    r"mail delivery (?:subsystem|system|service)|system administrator|mail administrator|"
    r"mailer.daemon|postmaster|microsoft outlook",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification|delivery (?:failure|failed|has failed)|"
    r"returned mail|mail delivery failed|failure notice|non-?delivery|could not be delivered|"
    r"unable to deliver|unzustellbar|failure delivery",
    re.IGNORECASE,
)


def _from_daemon(message: Message) -> bool:
    for name, address in mailboxes([_header(message, "from")]):
        local = address.rpartition("@")[0] if "@" in address else address
        if _DAEMON_LOCAL.match(local.strip()) or _DAEMON_NAME.search(name):
            return True
    return False


# -- MTA prose ---------------------------------------------------------------------------

_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")

# Where an MTA starts quoting the original message; text after it is not report.
_ORIGINAL_MARKERS = re.compile(
    r"^(?:-+ ?Below this line is a copy of the message|-+ ?Original message follows|"
    r"-+ ?This is a copy of the message|Original message headers:|"
    r"Possibly truncated original message follows|-+ ?Original Message -+)",
    re.IGNORECASE | re.MULTILINE,
)


def _report_text(parts: list[Message]) -> str:
    """The human-readable report: text/plain parts outside any returned message."""
    plain: list[str] = []
    html: list[str] = []
    for part in parts:
        kind = part.get_content_type()
        if kind not in {"text/plain", "text/html"}:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        text = decode_text(payload[:_MAX_TEXT], charset(part))
        (plain if kind == "text/plain" else html).append(text)
    if plain:
        text = "\n".join(plain)
    else:
        text = re.sub(r"<br\s*/?>|</p>|</div>|</tr>", "\n", "\n".join(html), flags=re.IGNORECASE)
        text = re.sub(r"<[^<>]*>", "", text)
    text = text[:_MAX_TEXT].replace("\r\n", "\n").replace("\r", "\n")
    marker = _ORIGINAL_MARKERS.search(text)
    return text[: marker.start()] if marker else text


def _text_finding(address: str | None, diagnostic: str, *, delayed: bool = False) -> Bounce:
    diagnostic = " ".join(diagnostic.split())
    status = _enhanced(diagnostic)
    action = "delayed" if delayed else None
    kind, reason = _judge(status, diagnostic, action=action, failed=not delayed)
    recipient = address.lower() if address and "@" in address else None
    return Bounce(recipient, kind, status, diagnostic, reason)


_ANGLE_INTRO = re.compile(
    r"This is the qmail-send program|Message from yahoo\.|"
    r"Sorry, we were unable to deliver your message to the following address|"
    r"This is the mail system at host|This is the Postfix program at host|"
    r"Unable to deliver message to the following address",
    re.IGNORECASE,
)
_ANGLE_LINE = re.compile(
    r"^<(?P<addr>[^<>\s]+@[^<>\s]+)>(?: \(expanded from <[^<>]*>\))?:[ \t]*(?P<rest>.*)$"
)


def _angle_blocks(text: str) -> list[Bounce]:
    """qmail, Yahoo and Postfix: ``<address>:`` then the reason, up to a blank line."""
    intro = _ANGLE_INTRO.search(text)
    if intro is None:
        return []
    delayed = "THIS IS A WARNING ONLY" in text or "has not yet been delivered" in text
    blocks: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for line in text[intro.end() :].split("\n"):
        found = _ANGLE_LINE.match(line)
        if found:
            current = (found["addr"], [found["rest"]])
            blocks.append(current)
        elif current is not None:
            if line.strip():
                current[1].append(line)
            else:
                current = None
        if len(blocks) >= _MAX_FINDINGS:
            break
    return [_text_finding(addr, " ".join(lines), delayed=delayed) for addr, lines in blocks]


_EXIM_INTRO = re.compile(
    r"This message was created automatically by mail delivery software", re.IGNORECASE
)
_EXIM_FAILED = re.compile(r"following address(?:\(es\)|es)? failed:[ \t]*\n", re.IGNORECASE)
_EXIM_ADDRESS = re.compile(r"^ {1,3}(?P<addr>[^\s<>]+@[^\s<>:]+):?\s*$")


def _exim(text: str) -> list[Bounce]:
    """Exim: indented address lines, each followed by more deeply indented reasons."""
    if _EXIM_INTRO.search(text) is None:
        return []
    failed = _EXIM_FAILED.search(text)
    if failed is None:
        return []
    blocks: list[tuple[str, list[str]]] = []
    for line in text[failed.end() :].split("\n"):
        found = _EXIM_ADDRESS.match(line)
        if found:
            blocks.append((found["addr"], []))
        elif line.startswith("    ") and blocks:
            blocks[-1][1].append(line)
        elif line.strip() and not line.startswith(" "):
            break
        if len(blocks) >= _MAX_FINDINGS:
            break
    return [_text_finding(addr, " ".join(lines)) for addr, lines in blocks]


_EXCHANGE_INTRO = re.compile(
    r"Delivery has failed to these recipients or groups|"
    r"Your message did not reach some or all of the intended recipients",
    re.IGNORECASE,
)
_EXCHANGE_ADMIN = re.compile(r"Diagnostic information for administrators", re.IGNORECASE)
_EXCHANGE_REPLY = re.compile(r"^#(?P<a>.*?)##?\s*$|^Remote Server returned '(?P<b>.*)'\s*$")
_BARE_ADDRESS = re.compile(r"^\s*(?P<addr>[^\s<>@]+@[^\s<>@]+?)(?:<mailto:[^<>]*>)?\s*$")


def _exchange(text: str) -> list[Bounce]:
    """Exchange and Outlook: the administrators' section pairs an address with its reply."""
    intro = _EXCHANGE_INTRO.search(text)
    if intro is None:
        return []
    admin = _EXCHANGE_ADMIN.search(text, intro.end())
    findings: list[Bounce] = []
    if admin is not None:
        address: str | None = None
        for line in text[admin.end() :].split("\n"):
            bare = _BARE_ADDRESS.match(line)
            reply = _EXCHANGE_REPLY.match(line.strip())
            if bare:
                address = bare["addr"]
            elif reply and address is not None:
                findings.append(_text_finding(address, reply["a"] or reply["b"] or ""))
                address = None
            if len(findings) >= _MAX_FINDINGS:
                break
    if findings:
        return findings
    # No administrators' section: each address line is followed by the user text.
    lines = text[intro.end() :].split("\n")
    for index, line in enumerate(lines[:_MAX_PARTS]):
        bare = _BARE_ADDRESS.match(line)
        if bare:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            findings.append(_text_finding(bare["addr"], following))
    return findings


_GROUPWISE_INTRO = re.compile(
    r"The message that you sent was undeliverable to the following:", re.IGNORECASE
)
_GROUPWISE_LINE = re.compile(r"^\s+(?P<addr>\S+) \((?P<reason>[^()]+)\)\s*$")


def _groupwise(text: str) -> list[Bounce]:
    """GroupWise (GWIA): tab-indented ``address (reason)`` lines."""
    intro = _GROUPWISE_INTRO.search(text)
    if intro is None:
        return []
    findings: list[Bounce] = []
    for line in text[intro.end() :].split("\n"):
        found = _GROUPWISE_LINE.match(line)
        if found:
            findings.append(_text_finding(found["addr"], found["reason"]))
        elif line.strip() and findings:
            break
        if len(findings) >= _MAX_FINDINGS:
            break
    return findings


_DETECTORS = (_exim, _angle_blocks, _exchange, _groupwise)


# -- Amazon SES --------------------------------------------------------------------------

_SES_KINDS = {
    "Permanent": BounceKind.HARD,
    "Transient": BounceKind.SOFT,
    "Undetermined": BounceKind.UNKNOWN,
}
# bounceSubType words that say more than the status code would; others
# ("General", "Undetermined") leave the reason to classify().
_SES_REASONS = {
    "NoEmail": "unknown_user",
    "Suppressed": "policy",  # SES's own suppression list
    "OnAccountSuppressionList": "policy",
    "MailboxFull": "mailbox_full",
    "ContentRejected": "policy",
    "AttachmentRejected": "policy",
}


def parse_ses_notification(payload: str | bytes | Mapping[str, object], /) -> list[Bounce]:
    """Findings from an Amazon SES notification, raw or inside an SNS envelope.

    A Bounce gives one finding per ``bouncedRecipients`` entry (Permanent is
    HARD, Transient SOFT, Undetermined UNKNOWN); a Complaint one COMPLAINT per
    ``complainedRecipients`` entry; a Delivery gives ``[]``. Bad JSON or any
    other shape raises :class:`~sender.errors.InputError` (``field="notification"``).
    The SNS signature is not checked here; verify it before calling.
    """
    document = _json_object(payload)
    if document.get("Type") == "Notification" and "Message" in document:
        inner = document["Message"]
        if not isinstance(inner, str):
            raise _bad_notification("the SNS Message is not a string")
        document = _json_object(inner)
    kind = document.get("notificationType", document.get("eventType"))
    if kind == "Bounce":
        return _ses_bounce(document.get("bounce"))
    if kind == "Complaint":
        return _ses_complaint(document.get("complaint"))
    if kind == "Delivery":
        return []
    raise _bad_notification(f"unknown notification type {kind!r}")


def _ses_bounce(bounce: object) -> list[Bounce]:
    if not isinstance(bounce, dict):
        raise _bad_notification("a Bounce notification without a bounce object")
    kind = _SES_KINDS.get(str(bounce.get("bounceType")), BounceKind.UNKNOWN)
    subtype_reason = _SES_REASONS.get(str(bounce.get("bounceSubType")))
    findings: list[Bounce] = []
    for entry in _ses_entries(bounce, "bouncedRecipients"):
        diagnostic = _optional_str(entry, "diagnosticCode") or ""
        status = _enhanced(_optional_str(entry, "status") or "") or _enhanced(diagnostic)
        reason = subtype_reason or classify(status, diagnostic)[1]
        action = _optional_str(entry, "action")
        address = _address_of(entry)
        findings.append(Bounce(address, kind, status, diagnostic, reason, action))
    return findings


def _ses_complaint(complaint: object) -> list[Bounce]:
    if not isinstance(complaint, dict):
        raise _bad_notification("a Complaint notification without a complaint object")
    feedback = complaint.get("complaintFeedbackType")
    feedback_type = feedback.lower() if isinstance(feedback, str) else None
    return [
        Bounce(_address_of(entry), BounceKind.COMPLAINT, None, "", "complaint", None, feedback_type)
        for entry in _ses_entries(complaint, "complainedRecipients")
    ]


def _ses_entries(container: dict[str, object], key: str) -> list[dict[str, object]]:
    entries = container.get(key)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _bad_notification(f"{key} is not a list of objects")
    return [entry for entry in entries if isinstance(entry, dict)]


def _address_of(entry: dict[str, object]) -> str:
    address = entry.get("emailAddress")
    if not isinstance(address, str) or "@" not in address:
        raise _bad_notification("a recipient without an emailAddress")
    found = mailboxes([address])
    bare = found[0][1] if found and found[0][1] else address
    return bare.strip().lower()


def _optional_str(entry: dict[str, object], key: str) -> str | None:
    value = entry.get(key)
    return value if isinstance(value, str) else None


def _json_object(payload: str | bytes | Mapping[str, object]) -> dict[str, object]:
    if isinstance(payload, Mapping):
        return dict(payload)
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise _bad_notification(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise _bad_notification("not a JSON object")
    return document


def _bad_notification(reason: str) -> InputError:
    return InputError(f"SES notification: {reason}", field="notification")


# -- headers ----------------------------------------------------------------------------


def _header(message: Message, name: str) -> str:
    values = header_values(message, name)
    return " ".join(values[0].split()) if values else ""


def _header_addresses(message: Message, name: str) -> list[str]:
    """The addresses in header ``name``, lower-cased, each once; names without an @ left out."""
    found: dict[str, None] = {}
    for address in header_addresses(message, name):
        if "@" in address:
            found.setdefault(address.lower(), None)
    return list(found)


def _sender(message: Message) -> str | None:
    mailboxes = [a for a in header_addresses(message, "from") if "@" in a]
    return mailboxes[0].lower() if len(mailboxes) == 1 else None
