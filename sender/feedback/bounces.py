"""Delivery failures that come back to sender: reading them, and saying what they mean.

A bounce reaches sender as a raw message (a DSN, an MTA's own prose, an
auto-reply, a spam complaint) or as an Amazon SES notification. Each parser
returns :class:`Bounce` findings, one per affected recipient, each with a
:class:`~sender.vocabulary.Reason` (:func:`classify`). The reason, not the
status class, decides what happens (:data:`~sender.vocabulary.REASON_RULES`):
a dead address is suppressed, an unwell mailbox counted, a refusal of the
sender or the message (DMARC, a blocklisted IP, a content filter) never
suppresses the participant, and an out-of-office reply changes nothing.

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
per recipient block, also where the MIME structure hides it (a boundary that
does not match, a report pasted into a text body or forwarded as an attachment)
and as DSN fields written in plain text; an SES notification SNS mailed, a
Hotmail complaint or an Apple Mail unsubscribe gives its findings; an
auto-reply (RFC 3834 headers, vendor headers or a vacation subject) from a
person is :attr:`BounceKind.AUTOREPLY`; then the
prose of Exim, qmail, Postfix, Yahoo, Exchange and GroupWise; last, a
message from a mailer daemon that names nobody is kept as
:attr:`BounceKind.UNKNOWN` for a human. Anything else is ordinary mail: ``[]``.

Signature verification of SNS envelopes is out of scope here: the caller
verifies the SNS ``Signature`` (or trusts its transport) before passing the
payload to :func:`parse_ses_notification`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from email.message import Message
from enum import StrEnum
from types import MappingProxyType

from sender.errors import InputError
from sender.feedback.mailparse import MAX_PARTS as _MAX_PARTS
from sender.feedback.mailparse import (
    charset,
    decode_text,
    decoded_subject,
    header_addresses,
    header_values,
    mailboxes,
    parse_message,
    undo_surrogates,
    walk_parts,
)
from sender.feedback.prose import cut_returned_message, failed_recipients
from sender.vocabulary import REASON_RULES, Action, Reason, reason_of

__all__ = [
    "Bounce",
    "BounceKind",
    "action_of",
    "classify",
    "envelope_recipients",
    "parse_bounce",
    "parse_ses_notification",
    "reason_in",
]

# Characters of report text we read, findings we return (and mailparse's limits on
# nesting and parts): hostile input must not cost more than a real bounce.
_MAX_TEXT = 256 * 1024
# Bytes of a message we parse. The report comes before the returned original, which is
# all a longer bounce adds; the cap bounds the MIME parser's work on hostile input.
_MAX_MESSAGE = 1024 * 1024
_MAX_FINDINGS = 500


class BounceKind(StrEnum):
    """How final a finding is; what sender does about it follows from its :class:`Reason`."""

    HARD = "hard"  # permanent (5.x.x, an MTA that gave up): the message will not arrive
    SOFT = "soft"  # temporary (4.x.x, delayed), or a full mailbox
    AUTOREPLY = "autoreply"  # out of office, vacation: never a bounce
    COMPLAINT = "complaint"  # ARF feedback report (RFC 5965), SES complaint
    UNKNOWN = "unknown"  # kept for a human


@dataclass(frozen=True, slots=True)
class Bounce:
    """One recipient a report is about, what happened to it, and what sender does about it.

    ``recipient`` is lower-cased, or None when the report names nobody. ``reason`` is
    one of :class:`~sender.vocabulary.Reason`; :attr:`action` and :attr:`suppress` follow
    from it (:data:`~sender.vocabulary.REASON_RULES`). ``reply_code`` is the SMTP reply
    code the diagnostic quotes, ``dsn_action`` the RFC 3464 Action when the report gives
    one, ``feedback_type`` the ARF Feedback-Type of a complaint.
    """

    recipient: str | None
    kind: BounceKind
    status: str | None
    diagnostic: str
    reason: Reason
    dsn_action: str | None = None
    feedback_type: str | None = None
    reply_code: int | None = None

    @property
    def action(self) -> Action:
        """What sender does about this finding, by :data:`~sender.vocabulary.REASON_RULES`."""
        return action_of(self.reason, self.kind)

    @property
    def suppress(self) -> bool:
        """Whether this finding alone puts the address on the suppression list."""
        return self.action is Action.SUPPRESS

    @property
    def hint(self) -> str:
        """The doctor's hint for a sender-side refusal ("" for other reasons)."""
        return REASON_RULES[self.reason].hint


def action_of(reason: Reason | str, kind: BounceKind | str) -> Action:
    """The action for a finding: its reason's, except that only a permanent one (or a
    complaint) suppresses at once; a temporary "user unknown" is counted instead."""
    rule = REASON_RULES[reason_of(str(reason))]
    if rule.action is Action.SUPPRESS and kind not in (BounceKind.HARD, BounceKind.COMPLAINT):
        return Action.COUNT
    return rule.action


# -- classification ----------------------------------------------------------------------
#
# The reason comes from the diagnostic's words first (they say more than a code: a 5.7.1
# "blocked using zen.spamhaus.org" is a blocklist, a 5.1.10 "RecipientNotFound" an unknown
# user), then from the enhanced status (RFC 3463, the registry's detail codes), then from
# the status's class. The authentication codes of RFC 7372 (5.7.20 to 5.7.26) and PTR
# (5.7.25) are unambiguous, so they win over the words. The phrase tables follow Sisimai's
# lib/Sisimai/Reason/*.pm in spirit; the patterns are ours.

_ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_SMTP_CODE = re.compile(r"(?<![\w.:\[])([245]\d\d)(?=[ -]|$)")


def _words(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(patterns), re.IGNORECASE)


# First match wins: sender-side reasons before address ones, because a refusal of the
# sender often quotes the recipient ("<a@b>: recipient address rejected: blocked using ...").
_PHRASES: tuple[tuple[Reason, re.Pattern[str]], ...] = (
    (
        Reason.AUTH_FAILURE,
        _words(
            r"\bdmarc\b",
            r"\bspf\b",
            r"\bdkim\b",
            r"sender policy framework",
            r"unauthenticated (?:e-?mail|mail|message)",
            r"is not allowed to send (?:mail )?from .{0,80} per it'?s spf",
            r"authentication (?:check|result)s? failed",
            r"message (?:failed|fails) (?:authentication|to authenticate)",
        ),
    ),
    (
        Reason.PTR_REQUIRED,
        _words(
            r"mismatches client ip",
            r"reverse (?:dns|lookup)",
            r"\bptr\b",
            r"cannot find your hostname",
            r"ip name lookup failed",
            r"no (?:rdns|reverse)",
            r"unresolvable relay host name",
        ),
    ),
    (
        Reason.BAD_REPUTATION,
        _words(
            r"reputation",
            r"unexpected volume or user complaints",
            r"sender score",
        ),
    ),
    (
        Reason.BLOCKED,
        _words(
            r"blocked using",
            r"block ?-?list",
            r"black ?-?list",
            r"\b(?:rbl|dnsbl|uribl|surbl)\b",
            r"spamhaus",
            r"spamcop",
            r"barracuda",
            r"sorbs",
            r"is (?:currently )?listed (?:in|on|at|by)",
            r"(?<!not )listed in (?:the )?\S+",
            r"banned sending ip",
            r"bad sender ip",
            r"your (?:ip|network|server|host)\b.{0,60}\b(?:blocked|banned|rejected|listed|refused)",
            r"(?:ip|host|network|client host) (?:address )?(?:is )?(?:blocked|banned)",
            r"not (?:currently )?accepting mail from your ip",
            r"sender ip address rejected",
            r"client host \S* ?rejected",
            r"dynamic(?:/zombied)? ip",
            r"hosts with dynamic ip",
            r"access denied\. ?\[?ip",
            r"\bblocked\b.{0,40}\bsee https?://",
            r"refused - see https?://",
            r"\bAS\(\d+\)",
            r"use the smtp server of your isp",
        ),
    ),
    (Reason.VIRUS, _words(r"\bvirus", r"malware", r"infected", r"executable (?:attachment|file)")),
    (
        Reason.SPAM_DETECTED,
        _words(
            r"\bspam",
            r"unsolicited",
            r"junk ?mail",
            r"content filter",
            r"message content rejected",
            r"rejecting (?:mail|banned) content",
            r"unacceptable content",
            r"bulk (?:e-?mail|mail|advertising)",
            r"mail content denied",
            r"message (?:was )?filtered",
            r"suspicious",
            r"phishing",
        ),
    ),
    (
        Reason.RATE_LIMITED,
        _words(
            r"rate[- ]limit",
            r"sending rate",
            r"too fast",
            r"try again slower",
            r"throttl",
            r"(?:exceeded|over) (?:the )?(?:max(?:imum)? )?(?:e-?mails?|messages?) "
            r"(?:per|an|a) (?:hour|day|minute)",
            r"too many (?:messages|mails|emails)",
            r"receiving mail at a rate",
        ),
    ),
    (
        Reason.TOO_MANY_CONNECTIONS,
        _words(
            r"too many (?:concurrent )?(?:smtp )?(?:connections|sessions)",
            r"connection (?:rate )?limit",
            r"too many (?:recipients|errors from your ip)",
            r"trop de connexions",
        ),
    ),
    (
        Reason.MAILBOX_FULL,
        _words(
            r"mailbox (?:is )?full",
            r"full mailbox",
            r"mail ?(?:box|folder|file)(?: is)? full",
            r"over ?(?:the )?(?:allowed )?(?:disk )?quota",
            r"quota (?:exceeded|full|violation|usage exceeded)",
            r"exceed(?:ed|ing|s)? (?:the |their |his |her |its )?(?:mailbox |storage |disk )?"
            r"(?:quota|storage|disk space)",
            r"insufficient (?:disk )?(?:storage|space)",
            r"not (?:enough|sufficient) (?:storage|disk)? ?space",
            r"mailbox size limit",
            r"mailbox exceeds (?:the )?allowed size",
            r"mailbox (?:has )?exceeded",
            r"disk (?:quota|full)",
            r"no space left",
            r"the user's space has been used up",
            r"boite du destinataire pleine",
            r"user has too many messages",
        ),
    ),
    (
        Reason.QUOTA_EXCEEDED,
        _words(
            r"mail system (?:is )?full",
            r"insufficient system storage",
            r"exceed(?:ed|ing) (?:its |their )?receiving limits?",
            r"too much mail data",
        ),
    ),
    (
        Reason.MESSAGE_TOO_BIG,
        _words(
            r"message (?:file |is )?too (?:big|large)",
            r"message (?:size|length) exceeds",
            r"exceed(?:s|ed)? (?:the )?max(?:imum)? (?:inbound )?message size",
            r"max(?:imum)? message size exceeded",
            r"\bsize limit",
            r"message size",
            r"line limit exceeded",
            r"taille limite du message",
        ),
    ),
    (
        Reason.SUSPENDED,
        _words(
            r"suspended",
            r"(?:account|mailbox|user|address)(?: is| has been)? (?:disabled|deactivated|"
            r"inactive|frozen|locked|discontinued|terminated|archived|blocked)",
            r"inactive (?:account|user|mailbox)",
            r"(?:disabled|deactivated|inactive|frozen) (?:account|mailbox|user)",
            r"account (?:has been )?(?:disabled|discontinued|deactivated)",
            r"temporarily inactive",
            r"temporar(?:y|ily) locked",
            r"user is terminated",
            r"extended inactivity",
        ),
    ),
    (
        Reason.HAS_MOVED,
        _words(r"has been replaced by", r"has moved", r"mailbox owner has changed"),
    ),
    (
        Reason.NOT_ACCEPTING,
        _words(
            r"null ?mx",
            r"(?:host|domain)(?:/domain)? does not accept (?:e-?)?mail",
            r"does not accept mail \(nullmx\)",
            r"mail receiving disabled",
            r"not accepting (?:any )?(?:e-?)?mail",
            r"(?:mx|srv) record indicated no smtp service",
        ),
    ),
    (
        Reason.FILTERED,
        _words(
            r"recipient preferences",
            # a "User unknown" whose address slot is empty: a carrier's reception filter
            # (KDDI/au's), refused at DATA wherever its report shows the stage
            r"\b[45]\d\d:? : user unknown",
            r"only accepting mail from specific",
            r"user refuses",
            r"refuse[sd]? to receive",
            r"blocked by the recipient",
            r"message rejected due to user rules",
            r"user reject",
            r"resolver\.rst\.notauthorized",
            r"not authorized to send to",
            r"restricted to (?:internal|members)",
        ),
    ),
    (
        Reason.NETWORK_ERROR,
        _words(r"malformed (?:or unexpected )?name server reply", r"host not found, try again"),
    ),
    (
        Reason.NOT_RFC_COMPLIANT,
        _words(r"multiple addresses in from"),
    ),
    (
        Reason.HOST_UNKNOWN,
        _words(
            r"host or domain name not found",
            r"\bnxdomain\b",
            r"\bno mx\b",
            r"no mail exchanger",
            r"(?:recipient |mail )?domain (?:name )?(?:not found|does not exist|doesn'?t exist|"
            r"must exist|is unknown|is not reachable)",
            r"(?:unknown|no such) (?:host|domain)",
            r"host (?:[\w.-]+ )?(?:not found|unknown)",
            r"name service error",
            r"name or service not known",
            r"unrouteable (?:mail )?(?:domain|address)",
            r"unroutable address",
            r"domain (?:name )?has no",
            r"dns records for the destination",
        ),
    ),
    (
        Reason.REJECTED_SENDER,
        _words(
            r"sender (?:e-?mail )?(?:address )?(?:was )?rejected",
            r"sender verif(?:y|ication) failed",
            r"invalid sender",
            r"domain of sender address",
            r"sender (?:domain|address) (?:is )?(?:empty|invalid|must)",
            r"null sender",
            r"empty envelope sender",
            r"bogus mail from",
            r"mail from not owned",
            r"unroutable sender",
            r"sender not pre-?approved",
            r"purported responsible address",
            r"\bbatv\b",
            r"not (?:allowed|permitted) to post",
            r"non-?member",
            r"is not subscribed to this group",
            r"unverified (?:sender|address)",
            r"email address is not verified",
        ),
    ),
    (
        Reason.USER_UNKNOWN,
        _words(
            r"user unknown",
            r"unknown (?:user|recipient|mailbox|address)",
            r"address unknown",
            r"no such (?:user|mailbox|recipient|person|address)",
            r"(?:does|do) not exist",
            r"doesn'?t exist",
            r"not exist",
            r"recip(?:ient)? ?notfound",
            r"recipient (?:not found|unknown|does not exist|is not local|not ok)",
            r"(?:user|mailbox|address|recipient|account)(?: name)? (?:was |is )?not found",
            r"not a (?:valid|known) (?:recipient|mailbox|user|address)",
            r"is not a (?:valid|known) (?:mailbox|user)",
            r"invalid (?:recipient|mailbox|address|user)",
            r"invalid (?:\w+ ){0,2}user ?id",
            r"mailbox (?:unavailable|not available|is unavailable|invalid|not present)",
            r"address rejected: (?:user|unknown|invalid|access denied)",
            r"doesn'?t have an? [\w.-]+ account",
            r"unknown or illegal user",
            r"recipient name is not recognized",
            r"user not on post office",
            r"bad (?:destination )?(?:mailbox )?address",
            r"no (?:mailbox|account) (?:by that name|here|found)",
            r"not (?:a )?local (?:address|user)",
            r"no longer (?:valid|accepts mail|active)",
            r"address invalid",
            r"user (?:not known|not active)",
            r"there is no one at this address",
            r"not in my (?:valid)?rcptto list",
            r"badrcptto",
            r"list of allowed rcpthosts",
            r"not listed in (?:the )?(?:public name|domino directory|directory)",
            r"ディレクトリのリストにありません",
        ),
    ),
    (
        Reason.RELAYING_DENIED,
        _words(
            r"relay(?:ing)? (?:access )?(?:denied|not permitted|not allowed|prohibited)",
            r"(?:not permitted|not allowed|unable) to relay",
            r"no relaying",
            r"open relay",
            r"as a relay",
            r"we don'?t handle mail for",
            r"insecure mail relay",
        ),
    ),
    (
        Reason.NOT_RFC_COMPLIANT,
        _words(r"rfc ?5322", r"rfc ?2822", r"rfcmessagenoncompliant", r"not rfc.{0,10}compliant"),
    ),
    (
        Reason.CONTENT_ERROR,
        _words(
            r"\bmime\b",
            r"duplicate header",
            r"header (?:size|line) (?:exceeds|too long)",
            r"8-?bit data",
            r"invalid (?:header|content)",
            r"improperly[- ]formatted",
            r"base64",
            r"message header size",
        ),
    ),
    (
        Reason.POLICY,
        _words(
            r"polic(?:y|ies)",
            r"not authori[sz]ed",
            r"access denied",
            r"administrative prohibition",
            r"prohibited",
            r"not allowed",
            r"authentication required",
            r"starttls is required",
            r"tls required",
            r"refused by (?:the )?(?:organization|administrator)",
            r"closed mailing list",
            r"members-only",
        ),
    ),
    (
        Reason.EXPIRED,
        _words(
            r"delivery (?:time )?expired",
            r"message expired",
            r"retry (?:time(?:out)? )?(?:exceeded|not reached)",
            r"giving up",
            r"gave up",
            r"(?:in|sitting in) (?:the )?queue (?:too long|for)",
            r"too long in (?:the )?queue",
            r"could not be delivered (?:within|for more than)",
            r"not (?:be )?delivered (?:within|for more than|after)",
            r"have been failing for a long time",
            r"unable to deliver message after multiple retries",
            r"\btimed? ?out\b",
            r"server did not respond",
        ),
    ),
    (
        Reason.NETWORK_ERROR,
        _words(
            r"\bloop",
            r"too many hops",
            r"hop count exceeded",
            r"no route to host",
            r"host (?:is )?unreachable",
            r"network is unreachable",
            r"host name lookup failure",
            r"name server",
            r"connection (?:refused|reset|dropped|closed)",
            r"could not connect",
            r"lost connection",
            r"unable to resolve",
        ),
    ),
    (
        Reason.MAILER_ERROR,
        _words(
            r"mailer error",
            r"procmail",
            r"maildrop",
            r"command (?:failed|died|output)",
            r"pipe to \|",
            r"x-unix;",
        ),
    ),
    (
        Reason.SYSTEM_ERROR,
        _words(
            r"system (?:error|config)",
            r"configuration error",
            r"local (?:error|problem|configuration)",
            r"internal (?:server )?error",
            r"temporary (?:local )?(?:problem|failure|error)",
            r"i/o error",
            r"write error",
            r"misconfigured",
        ),
    ),
    (
        Reason.SYNTAX_ERROR,
        _words(
            r"syntax error",
            r"(?:command )?unrecognized command",
            r"command (?:not )?(?:recognized|implemented)",
            r"bad sequence of commands",
            r"malformed (?:recipient )?address",
        ),
    ),
)

# Enhanced status codes (RFC 3463 and the IANA registry) that name a reason; the words
# still decide first, except for the codes in _DECISIVE.
_STATUS: Mapping[str, Reason] = MappingProxyType(
    {
        **dict.fromkeys(("5.1.0", "5.1.1", "5.1.3", "4.1.1"), Reason.USER_UNKNOWN),
        **dict.fromkeys(("5.1.2", "5.4.4", "4.1.2"), Reason.HOST_UNKNOWN),
        **dict.fromkeys(("5.1.6", "4.1.6", "5.7.17", "5.7.18"), Reason.HAS_MOVED),
        **dict.fromkeys(("5.1.10", "5.7.27", "5.3.2", "4.3.2"), Reason.NOT_ACCEPTING),
        **dict.fromkeys(("5.1.7", "5.1.8", "4.1.7", "4.1.8"), Reason.REJECTED_SENDER),
        **dict.fromkeys(("5.2.1", "4.2.1", "5.7.13"), Reason.SUSPENDED),
        **dict.fromkeys(("5.2.2", "4.2.2"), Reason.MAILBOX_FULL),
        **dict.fromkeys(("5.3.1", "4.3.1"), Reason.QUOTA_EXCEEDED),
        **dict.fromkeys(("5.2.3", "4.2.3", "5.3.4", "5.7.16", "4.7.16"), Reason.MESSAGE_TOO_BIG),
        **dict.fromkeys(("5.2.4", "4.2.4"), Reason.FILTERED),
        **dict.fromkeys(("4.4.1", "4.4.7", "5.4.7"), Reason.EXPIRED),
        **dict.fromkeys(("4.4.2", "5.4.2", "4.4.6", "5.4.6", "4.4.8"), Reason.NETWORK_ERROR),
        **dict.fromkeys(
            ("5.1.9", "4.1.9", "5.3.0", "5.3.3", "4.3.3", "5.3.5", "4.3.5", "4.4.3", "5.4.3"),
            Reason.SYSTEM_ERROR,
        ),
        **dict.fromkeys(("4.4.5",), Reason.SYSTEM_ERROR),
        **dict.fromkeys(("5.5.2", "5.5.6", "5.5.1", "5.5.0"), Reason.SYNTAX_ERROR),
        **dict.fromkeys(("5.5.3", "4.5.3"), Reason.TOO_MANY_CONNECTIONS),
        **dict.fromkeys(("5.7.20", "5.7.21", "5.7.22", "5.7.23", "5.7.24"), Reason.AUTH_FAILURE),
        **dict.fromkeys(("5.7.26", "5.7.29", "4.7.24", "4.7.26"), Reason.AUTH_FAILURE),
        **dict.fromkeys(("5.7.25", "4.7.25"), Reason.PTR_REQUIRED),
        **dict.fromkeys(("5.7.28",), Reason.SPAM_DETECTED),
    }
)
_DECISIVE = frozenset(
    code for code, reason in _STATUS.items() if reason in {Reason.AUTH_FAILURE, Reason.PTR_REQUIRED}
)
# What a status's subject (its middle number) says when neither the words nor the
# exact code do.
_SUBJECT = {
    "3": Reason.SYSTEM_ERROR,
    "4": Reason.NETWORK_ERROR,
    "5": Reason.SYSTEM_ERROR,
    "6": Reason.CONTENT_ERROR,
    "7": Reason.POLICY,
}
_GREYLIST = _words(r"gr[ae]y[- ]?list", r"greylisted")
_TRY_LATER = _words(
    r"try (?:again )?later", r"try again", r"retry", r"come back later", r"deferred"
)
_DELAY = _words(
    r"delay", r"deferred", r"not yet been delivered", r"still trying", r"will (?:be )?retr"
)


def reason_in(text: str, /) -> Reason | None:
    """The reason the words of a diagnostic give, or None when they say nothing we know."""
    text = " ".join(text.split())
    for reason, pattern in _PHRASES:
        if pattern.search(text):
            return reason
    return None


def classify(
    status: str | None, diagnostic: str = "", *, code: int | None = None
) -> tuple[BounceKind, Reason]:
    """``(kind, reason)`` from an enhanced status (RFC 3463), an SMTP code and the text.

    ``status`` may carry more than the code (``"5.1.1 (user unknown)"``). When it or
    ``code`` is missing, the first enhanced status or reply code found in ``diagnostic``
    stands in. The kind is the status's class: 5.x.x :attr:`BounceKind.HARD`, 4.x.x
    :attr:`BounceKind.SOFT`, except that a full mailbox is SOFT (as common practice has
    it). With neither status nor code the kind is UNKNOWN, whatever the text says.
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
        return BounceKind.UNKNOWN, reason_in(text) or Reason.UNDEFINED
    if klass == "2":
        return BounceKind.UNKNOWN, Reason.DELIVERED
    reason = _reason(enhanced, code, text, transient=klass == "4")
    return _kind(klass == "5", reason), reason


# The SMTP command a remote server's refusal answered, as each MTA writes it: Postfix's
# "(in reply to end of DATA command)", Exim's "SMTP error from remote mail server after
# RCPT TO:<a@b>", a sendmail or Courier transcript's last ">>> DATA" before "<<< 550".
_STAGE = re.compile(
    r"in reply to (?:the )?(?P<postfix>end of data|data|rcpt to|mail from|helo|ehlo)\b"
    r"|\bafter (?P<exim>end of data|data|rcpt to|mail from|helo|ehlo|initial connection)\b"
    r"|smtp command:? ?(?P<named>data|rcpt|mail|helo|ehlo)\b"
    r"|^>>> ?(?P<transcript>data|rcpt|mail from|helo|ehlo)\b"
    r"|(?P<norcpt>no valid recipients|need rcpt)\b",
    re.IGNORECASE | re.MULTILINE,
)
_STAGES = {
    "end of data": "data",
    "rcpt to": "rcpt",
    "mail from": "mail",
    "ehlo": "helo",
    "initial connection": "connect",
    # DATA answered "no valid recipients" / "Need RCPT": every recipient was refused at
    # RCPT TO, and the refusals before it (pipelined, after ">>> DATA") were RCPT replies
    "no valid recipients": "rcpt",
    "need rcpt": "rcpt",
}


def smtp_stage(text: str, /) -> str | None:
    """The last SMTP command a refusal in ``text`` answered: ``"connect"``, ``"helo"``,
    ``"mail"``, ``"rcpt"`` or ``"data"``; None when the text does not say.

    The last mention wins, as in a transcript the last command sent is the one refused.
    """
    stages = [_stage_of(found) for found in _STAGE.finditer(text)]
    return stages[-1] if stages else None


def _stage_of(found: re.Match[str]) -> str:
    said = " ".join(next(group for group in found.groups() if group).lower().split())
    return _STAGES.get(said, said)


_ADDRESS_REASONS = frozenset({Reason.USER_UNKNOWN, Reason.HOST_UNKNOWN})


def _at(reason: Reason, enhanced: str | None, stage: str | None) -> Reason:
    """An address reason re-read with the SMTP stage the refusal answered.

    At MAIL FROM no recipient had been named: "no such domain" / "does not exist" there
    is about our envelope sender (REJECTED_SENDER). At DATA an unknown user is a filter
    (see _filtered_at_data).
    """
    if stage == "mail":
        return Reason.REJECTED_SENDER
    if reason is Reason.USER_UNKNOWN and _filtered_at_data(enhanced, stage):
        return Reason.FILTERED
    return reason


def _filtered_at_data(enhanced: str | None, stage: str | None) -> bool:
    """Whether an "unknown user" is a content filter's refusal in disguise.

    A server that accepted the recipient at RCPT TO and refuses it once it has seen the
    message (at DATA) knows the mailbox exists: what refused us is a filter (carriers'
    anti-spam gateways answer "550 Unknown user" so). Sisimai reads it so too. An explicit
    X.1.1 still names a missing mailbox: with pipelining, a sendmail transcript shows the
    RCPT replies after ">>> DATA", and the corpus agrees (Sisimai keeps those dead).
    """
    return stage == "data" and (enhanced is None or enhanced[1:] != ".1.1")


# A local delivery program (procmail, a pipe) that failed after the MTA took the address:
# its "no such user" is about its own configuration, not the address we wrote to.
_LOCAL_AGENT = _words(r"\bx-unix;", r"command output:")


def _reason(enhanced: str | None, code: int | None, text: str, *, transient: bool) -> Reason:
    if enhanced in _DECISIVE:
        return _STATUS[enhanced]
    if transient and _GREYLIST.search(text):
        return Reason.GREYLISTED
    worded = reason_in(text)
    if worded in _ADDRESS_REASONS:
        worded = _at(worded, enhanced, smtp_stage(text))
    if worded is Reason.USER_UNKNOWN and _LOCAL_AGENT.search(text):
        return Reason.MAILER_ERROR
    if worded is not None:
        return worded
    if enhanced is not None and enhanced in _STATUS:
        return _STATUS[enhanced]
    if transient:
        greylist_reply = (enhanced or "").startswith("4.7.") or code in {450, 451}
        if greylist_reply and _TRY_LATER.search(text):
            return Reason.GREYLISTED
        if (enhanced or "").startswith("4.4.") or _DELAY.search(text):
            return Reason.EXPIRED if "expired" in text.lower() else Reason.DELAYED
    if enhanced is not None:
        subject = enhanced.split(".")[1]
        if subject in _SUBJECT:
            return _SUBJECT[subject]
    return Reason.UNDEFINED


_FULL = frozenset({Reason.MAILBOX_FULL, Reason.QUOTA_EXCEEDED})


def _kind(permanent: bool, reason: Reason) -> BounceKind:
    return BounceKind.HARD if permanent and reason not in _FULL else BounceKind.SOFT


# Amazon SES relays the remote reply inside its own label:
# "5.1.0 - Unknown address error 550-'5.7.1 <a@b>... Access denied' (delivery attempts: 0)".
_QUOTED_REPLY = re.compile(
    r"\b[245]\.\d{1,3}\.\d{1,3} - [^']{1,80}? (?P<code>[245]\d\d)-'(?P<reply>[^']+)'"
)


def _judge(
    status: str | None, diagnostic: str, *, action: str | None, failed: bool
) -> tuple[BounceKind, Reason]:
    """Classify one finding; a report that says it failed may be read by its words alone."""
    if action == "delayed":
        expired = status is not None and status.endswith(".4.7")
        return BounceKind.SOFT, Reason.EXPIRED if expired else Reason.DELAYED
    quoted = _QUOTED_REPLY.search(diagnostic)
    if quoted is not None:
        # the relay's label and code are its guess; the remote server's reply is the evidence
        status, diagnostic = None, f"{quoted['code']} {quoted['reply']}"
    kind, reason = classify(status, diagnostic)
    if kind is BounceKind.UNKNOWN and failed and reason is not Reason.UNDEFINED:
        return _kind(True, reason), reason
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
    report (recipients reported delivered, relayed, expanded or deliverable are
    skipped), one per complained-about recipient of an ARF report, one for an
    auto-reply (its From address). Never raises on malformed input.
    """
    findings, text = _read(data)
    return [_at_stage(finding, text) for finding in findings]


def _read(data: bytes) -> tuple[list[Bounce], str]:
    """The findings in a message, and the report's text they came from."""
    data = data[:_MAX_MESSAGE]
    if b"\n" not in data:
        # CR-only line ends (old Mac mailers): the MIME parser splits on them, but
        # quoted-printable soft breaks and body searches want LF
        data = data.replace(b"\r", b"\n")
    message = parse_message(data)
    parts = list(walk_parts(message, into_messages=False))
    feedback = _arf(parts)
    if feedback is not None:
        return feedback, ""
    parts, reports = _delivery_reports(parts)
    text = _report_text(parts)
    if reports:
        return _dsn_or_fallback(message, parts, reports, text)[:_MAX_FINDINGS], text
    inline = _dsn(_recipient_blocks(text), _prose_diagnostics(text), _preamble(text))
    if inline:
        return inline[:_MAX_FINDINGS], text
    notification = _provider_notification(message, parts, text)
    if notification is not None:
        return notification[:_MAX_FINDINGS], text
    daemon = _from_daemon(message)
    sender = _sender(message)
    detected = next((found for detector in _DETECTORS if (found := detector(text))), [])
    # RFC 3834 asks MTAs to mark their reports Auto-Submitted: auto-replied too, so a
    # marked message an MTA detector reads is a bounce; a vacation subject alone is not.
    machine = _header(message, "auto-submitted").lower().startswith("auto-replied")
    if not detected and (daemon or machine or _reports_failure(message, parts)):
        detected = _prose(text)
    if _is_autoreply(message) and not daemon and not (machine and detected):
        return [_autoreply(sender)], text
    if detected:
        return detected[:_MAX_FINDINGS], text
    if daemon:
        failed = _header_addresses(message, "x-failed-recipients")
        if failed:
            return [_text_finding(address, "") for address in failed][:_MAX_FINDINGS], text
        if machine or _BOUNCE_SUBJECT.search(decoded_subject(message)):
            # a mailer daemon's report we cannot read is never an auto-reply
            return [Bounce(None, BounceKind.UNKNOWN, None, "", Reason.UNDEFINED)], text
    if _is_autoreply(message) and not daemon:
        return [_autoreply(sender)], text
    return [], text


def _at_stage(finding: Bounce, text: str) -> Bounce:
    """A finding re-read with the SMTP stage its report's text gives (see _filtered_at_data).

    The diagnostic's own stage first, else the last one the report's text names.
    """
    if finding.reason not in _ADDRESS_REASONS:
        return finding
    stage = smtp_stage(finding.diagnostic) or smtp_stage(text)
    reason = _at(finding.reason, finding.status, stage)
    return finding if reason is finding.reason else replace(finding, reason=reason)


def envelope_recipients(data: bytes, /) -> list[str]:
    """The addresses a message was delivered to, as its saved headers tell.

    Reads Delivered-To, X-Original-To, Envelope-To, X-Envelope-To and To, in
    that order; lower-cased, each once. A VERP return path
    (``bounces+<token>@bounce.example.com``) shows up here in a saved bounce.
    """
    message = parse_message(data[:_MAX_MESSAGE])
    found: dict[str, None] = {}
    for name in ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to"):
        for address in _header_addresses(message, name):
            found.setdefault(address, None)
    return list(found)


# -- RFC 3464 delivery status notifications ----------------------------------------------

_NOT_FAILED = frozenset({"delivered", "relayed", "expanded", "deliverable"})
_REPORT_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})


def _delivery_reports(parts: list[Message]) -> tuple[list[Message], list[Message]]:
    """The report's parts and its delivery-status parts, wherever the report really is.

    Usually they are the message's own parts. Failing that: a report the MIME parser
    could not see (a multipart whose declared boundary is not the body's, or a whole
    report pasted into a text body), then a report forwarded as an attached message.
    """
    reports = [part for part in parts if part.get_content_type() in _REPORT_TYPES]
    if reports:
        return parts, reports
    for candidates in (_embedded_reports(parts), _forwarded_reports(parts)):
        if candidates is not None:
            return candidates
    return parts, []


_EMBEDDED_DSN = re.compile(
    rb"^content-type:[ \t]*message/(?:global-)?delivery-status", re.IGNORECASE | re.MULTILINE
)
_BOUNDARY_LINE = re.compile(rb'^--([^\s"\\]{1,200})[ \t]*\r?$', re.MULTILINE)


def _embedded_reports(parts: list[Message]) -> tuple[list[Message], list[Message]] | None:
    """A report inside a single part's body, re-read with the boundary the body uses."""
    for part in parts[:_MAX_PARTS]:
        if part.is_multipart() or part.get_content_maintype() not in {"multipart", "text"}:
            continue
        body = part.get_payload(decode=True)
        if not isinstance(body, bytes):
            continue
        body = body[:_MAX_TEXT]
        found = _EMBEDDED_DSN.search(body)
        if found is None:
            continue
        boundaries = [
            line[1]
            for line in _BOUNDARY_LINE.finditer(body, 0, found.start())
            if line[1].strip(b"-")
        ]
        if not boundaries:
            continue
        boundary = boundaries[-1]
        header = b'Content-Type: multipart/report; boundary="' + boundary + b'"\n\n'
        inner = parse_message(header + body)
        inner_parts = list(walk_parts(inner, into_messages=False))
        reports = [p for p in inner_parts if p.get_content_type() in _REPORT_TYPES]
        if reports:
            return inner_parts, reports
    return None


# How many attached messages deep a forwarded report may sit.
_FORWARD_DEPTH = 3


def _forwarded_reports(parts: list[Message]) -> tuple[list[Message], list[Message]] | None:
    """A report attached to another message: a bounce someone forwarded to us."""
    for _depth in range(_FORWARD_DEPTH):
        attached = _original_message(parts)
        if attached is None:
            return None
        parts = list(walk_parts(attached, into_messages=False))
        reports = [part for part in parts if part.get_content_type() in _REPORT_TYPES]
        if reports:
            return parts, reports
    return None


def _dsn_or_fallback(
    message: Message, parts: list[Message], reports: list[Message], text: str
) -> list[Bounce]:
    """Findings from the delivery-status parts; when they name nobody, from what else does.

    Some servers write only the per-message fields (Postfix's "Delivery report
    unavailable", Google's group refusals): the recipient is then in X-Failed-Recipients,
    in the prose, or (last resort) the returned message's one To address.
    """
    prose = _prose_diagnostics(text)
    blocks = [block for report in reports for block in _field_blocks(report)]
    named = [block for block in blocks if _names_recipient(block)]
    diagnostic = _preamble(text)
    if named:
        return _dsn(named, prose, diagnostic)
    failed = _header_addresses(message, "x-failed-recipients")
    if failed:
        return [_text_finding(address, diagnostic) for address in failed]
    detected = next((found for detector in _DETECTORS if (found := detector(text))), [])
    if detected:
        return detected
    original = _original_message(parts)
    addressed = _header_addresses(original, "to") if original is not None else []
    if len(addressed) == 1:
        return [_text_finding(addressed[0], diagnostic)]
    return [Bounce(None, BounceKind.UNKNOWN, None, diagnostic, Reason.UNDEFINED)]


# Characters of prose kept as the diagnostic when a report has no Diagnostic-Code of its own.
_MAX_DIAGNOSTIC = 1000


_FIRST_FIELD = re.compile(
    r"^[ \t]*(?:reporting-mta|original-envelope-id|final-recipient|original-recipient|"
    r"action)[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)


def _preamble(text: str) -> str:
    """A report's prose up to its first DSN field, on one line and cut short."""
    found = _FIRST_FIELD.search(text)
    prose = text[: found.start()] if found else text
    return " ".join(prose[: _MAX_DIAGNOSTIC * 4].split())[:_MAX_DIAGNOSTIC]


def _names_recipient(block: dict[str, list[str]]) -> bool:
    return "final-recipient" in block or "original-recipient" in block


_RECIPIENT_FIELD = re.compile(r"^[ \t]*(?:final|original)-recipient[ \t]*:", re.I | re.M)


def _recipient_blocks(text: str) -> list[dict[str, list[str]]]:
    """DSN recipient blocks written into plain text (Amazon WorkMail's "Technical report")."""
    if _RECIPIENT_FIELD.search(text) is None:
        return []
    return [
        block
        for block in _text_blocks(text)
        if _names_recipient(block) and ("action" in block or "status" in block)
    ]


def _dsn(
    blocks: list[dict[str, list[str]]], prose: dict[str, str], preamble: str = ""
) -> list[Bounce]:
    """Findings from recipient blocks.

    ``prose`` (what the report's text says per recipient) fills in a missing
    Diagnostic-Code; for a report about one recipient, ``preamble`` (the text before
    the fields) does when the prose names nobody.
    """
    findings: list[Bounce] = []
    for block in blocks:
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
            # Exim leaves out Diagnostic-Code for its own errors ("Unrouteable address");
            # sendmail's prose has the transcript ("mail.local: unknown user").
            diagnostic = prose.get(_dsn_address(final) or "", "")
            if len(blocks) == 1 and preamble:
                # About one recipient, the whole text is about it: a transcript's earlier
                # lines ("mail.local: unknown user") say more than the reply beside it.
                diagnostic = preamble
        if recipient is None and len(prose) == 1:
            # a Final-Recipient without a local part (a source route's remnant, "@host")
            (recipient, diagnostic), *_ = prose.items()
        status = _dsn_status(_first(block, "status") or "", diagnostic)
        if action is None and status is not None and status.startswith("2."):
            continue
        kind, reason = _judge(status, diagnostic, action=action, failed=action == "failed")
        findings.append(
            Bounce(
                recipient,
                kind,
                status,
                diagnostic,
                reason,
                action,
                reply_code=_smtp_code(" ".join(diagnostic.split())),
            )
        )
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
            return {f.recipient: f.diagnostic for f in findings if f.recipient}
    return {found.address: found.diagnostic for found in failed_recipients(text)}


def _dsn_address(value: str | None) -> str | None:
    if value is None:
        return None
    _type, _sep, address = value.rpartition(";")
    address = address.strip().strip("<>").strip().lower()
    local, _at, domain = address.rpartition("@")
    # "|/usr/bin/filter a@b": an Exim pipe, not an address (nor is "@host", a route's remnant)
    return address if local and domain and not any(c.isspace() for c in address) else None


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
            blocks.extend(_split_fields(item.raw_items()))
            inner = item.get_payload()
            if isinstance(inner, str) and inner.strip():
                blocks.extend(_text_blocks(inner))
    elif isinstance(payload, str):
        blocks.extend(_text_blocks(payload))
    return blocks[:_MAX_PARTS]


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
        blocks.extend(_split_fields(pairs))
    return blocks


# Per-recipient fields (RFC 3464 2.3). A second one of these in a block, or a recipient
# field after the block's recipient and its Action or Status, starts the next recipient:
# some servers (AOL) write several recipient blocks without a blank line between them.
_PER_RECIPIENT = frozenset({"original-recipient", "final-recipient", "action", "status"})
_RECIPIENT_FIELDS = frozenset({"original-recipient", "final-recipient"})


def _split_fields(pairs: Iterable[tuple[str, object]]) -> list[dict[str, list[str]]]:
    blocks: list[dict[str, list[str]]] = [{}]
    for name, value in pairs:
        if not isinstance(value, str):
            continue
        key = name.strip().lower()
        current = blocks[-1]
        if key in _PER_RECIPIENT and (
            key in current
            or (
                key in _RECIPIENT_FIELDS
                and not _RECIPIENT_FIELDS.isdisjoint(current)
                and ("action" in current or "status" in current)
            )
        ):
            current = {}
            blocks.append(current)
        current.setdefault(key, []).append(" ".join(undo_surrogates(value).split()))
    return [block for block in blocks if block]


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
        Bounce(name, BounceKind.COMPLAINT, None, "", Reason.COMPLAINT, None, feedback_type)
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
            return parse_message(payload[:_MAX_TEXT])
    return None


# -- provider notifications that are neither DSN nor ARF ---------------------------------

_HOTMAIL_COMPLAINT = re.compile(r"^\s*complaint about message from", re.IGNORECASE)
_HOTMAIL_DOMAINS = frozenset({"hotmail.com", "outlook.com", "live.com", "msn.com"})


def _provider_notification(
    message: Message, parts: list[Message], text: str
) -> list[Bounce] | None:
    """An SES notification SNS mailed, a Hotmail complaint, an Apple Mail unsubscribe.

    None when the message is none of these.
    """
    body = text.strip()
    if body.startswith("{") and ('"notificationType"' in body or '"Notification"' in body):
        try:
            # SNS appends an unsubscribe footer after the JSON: read the object alone
            document, _end = json.JSONDecoder(strict=False).raw_decode(body)
            if isinstance(document, dict):
                return parse_ses_notification(document)
        except (ValueError, RecursionError, InputError):
            pass  # JSON of another kind, or cut short: read on as mail
    if _header(message, "x-apple-unsubscribe").lower() == "true":
        # Apple Mail's unsubscribe, sent to the List-Unsubscribe address from the
        # participant's own mailbox: an opt-out (Sisimai reads it as feedback), so it
        # suppresses like a complaint. Its Auto-Submitted header makes it no auto-reply.
        sender = _sender(message)
        return [Bounce(sender, BounceKind.COMPLAINT, None, "", Reason.COMPLAINT, None, "opt-out")]
    return _hotmail_complaint(message, parts)


def _hotmail_complaint(message: Message, parts: list[Message]) -> list[Bounce] | None:
    """Hotmail/Outlook.com's own complaint format: the message attached, whose
    ``X-HmXmrOriginalRecipient`` header names the complaining recipient."""
    domains = {address.rpartition("@")[2].lower() for address in _header_addresses(message, "from")}
    by_hotmail = not domains.isdisjoint(_HOTMAIL_DOMAINS)
    if not (by_hotmail or _HOTMAIL_COMPLAINT.search(decoded_subject(message))):
        return None
    original = _original_message(parts)
    if original is None:
        return None
    recipients = _header_addresses(original, "x-hmxmroriginalrecipient")
    if not recipients:
        return None
    return [
        Bounce(address, BounceKind.COMPLAINT, None, "", Reason.COMPLAINT, None, "abuse")
        for address in recipients
    ]


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
    return Bounce(sender, BounceKind.AUTOREPLY, None, "", Reason.AUTO_REPLY)


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
    r"unable to deliver|unzustellbar|failure delivery|mail failure|error sending|"
    r"delayed \d+ hours|delivery (?:delayed|notification)",
    re.IGNORECASE,
)


def _reports_failure(message: Message, parts: list[Message]) -> bool:
    """A message that says it failed, or returns a message: prose there may be a report."""
    if _BOUNCE_SUBJECT.search(decoded_subject(message)):
        return True
    return any(part.get_content_type() in _ORIGINAL_TYPES for part in parts[1:])


def _from_daemon(message: Message) -> bool:
    for name, address in mailboxes([_header(message, "from")]):
        local = address.rpartition("@")[0] if "@" in address else address
        if _DAEMON_LOCAL.match(local.strip()) or _DAEMON_NAME.search(name):
            return True
    return False


# -- MTA prose ---------------------------------------------------------------------------

_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


def _report_text(parts: list[Message]) -> str:
    """The human-readable report: text/plain parts outside any returned message."""
    plain: list[str] = []
    html: list[str] = []
    for part in parts:
        kind = part.get_content_type()
        if part.get_content_maintype() == "multipart" and not part.is_multipart():
            kind = "text/plain"  # no boundary matched: the parser left the body as text
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
    return cut_returned_message(text)


def _text_finding(address: str | None, diagnostic: str, *, delayed: bool = False) -> Bounce:
    diagnostic = " ".join(diagnostic.split())
    status = _enhanced(diagnostic)
    action = "delayed" if delayed else None
    kind, reason = _judge(status, diagnostic, action=action, failed=not delayed)
    recipient = address.lower() if address and "@" in address else None
    return Bounce(recipient, kind, status, diagnostic, reason, reply_code=_smtp_code(diagnostic))


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
_EXIM_FAILED = re.compile(
    r"following address(?:\(es\)|es)? failed:[ \t]*\n|"
    r"(?P<delayed>address(?:es)? to which the message has not yet been delivered (?:is|are)):"
    r"[ \t]*\n",
    re.IGNORECASE,
)
_EXIM_ADDRESS = re.compile(r"^ {1,3}(?P<addr>[^\s<>]+@[^\s<>:]+):?\s*$")
# A local delivery (a pipe, a file) that failed; "generated by" names the address it was for.
_EXIM_LOCAL = re.compile(r"^ {1,3}(?:pipe|save|file) to \S")
_EXIM_GENERATED = re.compile(r"^\s+generated by (?P<addr>[^\s<>]+@[^\s<>]+)\s*$")
_EXIM_MALFORMED = re.compile(
    r"recipient addresses that were\s+incorrectly constructed:[ \t]*\n", re.IGNORECASE
)
_EXIM_MALFORMED_LINE = re.compile(r"^ {1,3}(?P<what>\S.*?): (?P<why>malformed address:.*)$")


def _exim(text: str) -> list[Bounce]:
    """Exim: indented address lines, each followed by more deeply indented reasons.

    The same layout serves its delay warnings ("has not yet been delivered") and local
    deliveries (``pipe to |...`` / ``generated by <address>``); its report on malformed
    recipient addresses has ``address: malformed address: ...`` lines instead.
    """
    malformed = _EXIM_MALFORMED.search(text)
    if malformed is not None:
        return _exim_malformed(text[malformed.end() :])
    if _EXIM_INTRO.search(text) is None:
        return []
    failed = _EXIM_FAILED.search(text)
    if failed is None:
        return []
    delayed = failed["delayed"] is not None
    blocks: list[tuple[str | None, list[str]]] = []
    for line in text[failed.end() :].split("\n"):
        found = _EXIM_ADDRESS.match(line)
        generated = _EXIM_GENERATED.match(line)
        if found:
            blocks.append((found["addr"], []))
        elif _EXIM_LOCAL.match(line):
            blocks.append((None, [line]))
        elif generated and blocks and blocks[-1][0] is None:
            blocks[-1] = (generated["addr"], blocks[-1][1])
        elif line.startswith("    ") and blocks:
            blocks[-1][1].append(line)
        elif line.strip() and not line.startswith(" "):
            break
        if len(blocks) >= _MAX_FINDINGS:
            break
    # a local delivery without a "generated by" address is left to X-Failed-Recipients
    return [
        _text_finding(addr, " ".join(lines), delayed=delayed)
        for addr, lines in blocks
        if addr is not None
    ]


def _exim_malformed(text: str) -> list[Bounce]:
    findings: list[Bounce] = []
    for line in text.split("\n")[:_MAX_PARTS]:
        found = _EXIM_MALFORMED_LINE.match(line)
        if found:
            # "a@b <c@d>: malformed address: <c@d> may not follow a@b": the last address
            addresses = _ADDRESS.findall(found["what"])
            findings.append(_text_finding(addresses[-1] if addresses else None, found["why"]))
        elif line.strip() and not line.startswith(" "):
            break
    return findings


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


def _prose(text: str) -> list[Bounce]:
    """Any server's failure prose (:mod:`sender.feedback.prose`), after the readers above."""
    return [
        _text_finding(found.address, found.diagnostic, delayed=found.delayed)
        for found in failed_recipients(text)
    ]


# -- Amazon SES --------------------------------------------------------------------------

_SES_KINDS = {
    "Permanent": BounceKind.HARD,
    "Transient": BounceKind.SOFT,
    "Undetermined": BounceKind.UNKNOWN,
}
# bounceSubType words that say more than the status code would; others
# ("General", "Undetermined") leave the reason to classify().
_SES_REASONS = {
    "NoEmail": Reason.USER_UNKNOWN,
    # SES's own suppression lists: the address bounced hard before, for someone
    "Suppressed": Reason.USER_UNKNOWN,
    "OnAccountSuppressionList": Reason.USER_UNKNOWN,
    "MailboxFull": Reason.MAILBOX_FULL,
    "MessageTooLarge": Reason.MESSAGE_TOO_BIG,
    "ContentRejected": Reason.SPAM_DETECTED,
    "AttachmentRejected": Reason.VIRUS,
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
        if reason is Reason.DELIVERED:
            reason = Reason.UNDEFINED
        action = _optional_str(entry, "action")
        address = _address_of(entry)
        findings.append(
            Bounce(
                address,
                kind,
                status,
                diagnostic,
                reason,
                action,
                reply_code=_smtp_code(" ".join(diagnostic.split())),
            )
        )
    return findings


def _ses_complaint(complaint: object) -> list[Bounce]:
    if not isinstance(complaint, dict):
        raise _bad_notification("a Complaint notification without a complaint object")
    feedback = complaint.get("complaintFeedbackType")
    feedback_type = feedback.lower() if isinstance(feedback, str) else None
    return [
        Bounce(
            _address_of(entry),
            BounceKind.COMPLAINT,
            None,
            "",
            Reason.COMPLAINT,
            None,
            feedback_type,
        )
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
        # strict=False: SNS by mail may carry raw line breaks inside JSON strings
        document = json.loads(payload, strict=False)
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
