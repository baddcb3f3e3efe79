"""The words the store and the logic above it share: states, RSVP outcomes, bounce reasons.

These are stored as their string values, so a value never changes once released; a new
state is a new member. They live in the foundation, below the store, so that code which
only needs to name a state (the CLI's status table, the bulk engine) does not reach into
a storage module for it.

Message states::

    queued ──claim──▶ sending ──▶ sent
      ▲                  │
      │                  ├──▶ deferred ──(due)──▶ claimable again
      │                  ├──▶ failed        (permanent, or retries exhausted)
      └──requeue_stale───┘──▶ suppressed    (never sent; bounce handling)
                         └──▶ unsubscribed  (never sent; unsubscribed from the run's stream)
    skipped                                 (bad input; recorded at ingest)

Streams (:class:`Stream`) split mail the way receivers' rules do: ``transactional`` mail
(an invitation, a login link) is exempt from unsubscribe; ``subscription`` mail
(reminders) carries RFC 8058 one-click unsubscribe and honours it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "FINAL_STATES",
    "OUTCOME_STATES",
    "REASON_RULES",
    "UNSUBSCRIBE_STREAMS",
    "Action",
    "MessageState",
    "Reason",
    "ReasonRule",
    "RsvpOutcome",
    "RunState",
    "Stream",
    "WebhookEvent",
    "reason_of",
    "reasons_with",
]


class MessageState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    SKIPPED = "skipped"
    UNSUBSCRIBED = "unsubscribed"  # never sent: the address left the run's stream


# Final until an operator acts (``reset_failed`` for ``sender retry``).
FINAL_STATES = frozenset(
    {
        MessageState.SENT,
        MessageState.FAILED,
        MessageState.SUPPRESSED,
        MessageState.SKIPPED,
        MessageState.UNSUBSCRIBED,
    }
)

# What one attempt can end in: SKIPPED too, for a row valid at ingest whose template could
# not render it. QUEUED and SENDING are the store's own doing, never an attempt's outcome.
OUTCOME_STATES = frozenset(
    {
        MessageState.SENT,
        MessageState.DEFERRED,
        MessageState.FAILED,
        MessageState.SUPPRESSED,
        MessageState.SKIPPED,
        MessageState.UNSUBSCRIBED,
    }
)


class Stream(StrEnum):
    """What kind of mail a template set sends (its ``template.toml``), as receivers see it."""

    TRANSACTIONAL = "transactional"  # asked for by what the participant did: no unsubscribe
    SUBSCRIPTION = "subscription"  # reminders and the like: one-click unsubscribe (RFC 8058)


#: The streams whose mail carries List-Unsubscribe and whose unsubscribes are honoured.
UNSUBSCRIBE_STREAMS = frozenset({Stream.SUBSCRIPTION})


class RunState(StrEnum):
    ACTIVE = "active"  # has work to do (or is doing it)
    PAUSED = "paused"  # stopped on purpose; ``paused_reason`` says why
    DONE = "done"  # nothing left but final states


class WebhookEvent(StrEnum):
    """What a webhook tells an LMS; the ``type`` of each event the outbox keeps for it."""

    MESSAGE_SENT = "message.sent"
    MESSAGE_DEFERRED = "message.deferred"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_BOUNCED = "message.bounced"
    MESSAGE_COMPLAINED = "message.complained"
    ADDRESS_SUPPRESSED = "address.suppressed"
    ADDRESS_UNSUBSCRIBED = "address.unsubscribed"
    RSVP_ANSWERED = "rsvp.answered"
    RUN_PAUSED = "run.paused"
    RUN_FINISHED = "run.finished"


class RsvpOutcome(StrEnum):
    """What a calendar answer counts for; every answer is kept, with its outcome."""

    RECORDED = "recorded"  # it counts
    STALE = "stale"  # answers an older SEQUENCE
    UNKNOWN_EVENT = "unknown_event"
    NOT_INVITED = "not_invited"
    SENDER_MISMATCH = "sender_mismatch"  # From is not the attendee
    UNAUTHENTICATED = "unauthenticated"  # no aligned DKIM signature, no trusted DMARC pass


# --- bounce reasons and what each asks of sender ---------------------------------------------


class Reason(StrEnum):
    """Why a report (a DSN, an MTA's prose, a refusal at RCPT, an SES notification) came back.

    Modelled on Sisimai's reasons (its names in brackets where they differ), so a finding
    from any server reads the same; ``greylisted`` and ``delayed`` are our own, because a
    retry answers them. :data:`REASON_RULES` says what sender does about each.
    """

    # the address is dead
    USER_UNKNOWN = "user_unknown"  # 5.1.1: no such mailbox [userunknown]
    HOST_UNKNOWN = "host_unknown"  # 5.1.2, 5.4.4: no such domain, no MX [hostunknown]
    HAS_MOVED = "has_moved"  # 5.1.6, 5.7.17: moved, no forwarding address [hasmoved]
    NOT_ACCEPTING = "not_accepting"  # 5.1.10, 5.7.27: null MX, accepts no mail [notaccept]
    # the mailbox is unwell
    SUSPENDED = "suspended"  # 5.2.1, 5.7.13: account disabled, perhaps for now [suspend]
    MAILBOX_FULL = "mailbox_full"  # 5.2.2, 4.2.2: over quota [mailboxfull]
    QUOTA_EXCEEDED = "quota_exceeded"  # the mailbox's own limits [exceedlimit, systemfull]
    EXPIRED = "expired"  # 4.4.7: the MTA gave up retrying [expired]
    # the sender or the message was refused
    MESSAGE_TOO_BIG = "message_too_big"  # 5.3.4, 5.2.3 [mesgtoobig]
    FILTERED = "filtered"  # the recipient's own rules refuse us [filtered]
    REJECTED_SENDER = "rejected_sender"  # 5.1.7, 5.1.8: our envelope sender [rejected]
    BLOCKED = "blocked"  # the sending IP is on a blocklist, or refused [blocked]
    BAD_REPUTATION = "bad_reputation"  # the IP's or domain's reputation [badreputation]
    PTR_REQUIRED = "ptr_required"  # 5.7.25: the sending IP has no reverse DNS [requireptr]
    AUTH_FAILURE = "auth_failure"  # 5.7.20-5.7.26: SPF, DKIM or DMARC failed [authfailure]
    POLICY = "policy"  # 5.7.x and local policy [policyviolation, securityerror]
    SPAM_DETECTED = "spam_detected"  # a content filter called it spam [spamdetected]
    VIRUS = "virus"  # [virusdetected]
    CONTENT_ERROR = "content_error"  # 5.6.x: MIME, headers, encoding [contenterror]
    NOT_RFC_COMPLIANT = "not_rfc_compliant"  # the message breaks RFC 5322 [notcompliantrfc]
    RELAYING_DENIED = "relaying_denied"  # the relay will not pass it on [norelaying]
    SYNTAX_ERROR = "syntax_error"  # 5.5.x: a command sender sent [syntaxerror]
    TOO_MANY_CONNECTIONS = "too_many_connections"  # [toomanyconn]
    RATE_LIMITED = "rate_limited"  # sending too fast [speeding]
    # the receiving system failed
    MAILER_ERROR = "mailer_error"  # the local delivery program failed [mailererror]
    NETWORK_ERROR = "network_error"  # DNS, routing, loops [networkerror]
    SYSTEM_ERROR = "system_error"  # 5.3.x: the receiving system [systemerror]
    # nothing to do
    GREYLISTED = "greylisted"  # 4xx "try again later": the retry answers it
    DELAYED = "delayed"  # a DSN's Action: delayed, a warning; the MTA still tries
    AUTO_REPLY = "auto_reply"  # out of office [vacation]
    DELIVERED = "delivered"  # a success report [delivered]
    # the address's owner
    COMPLAINT = "complaint"  # marked as spam: an ARF report, an SES complaint [feedback]
    UNDEFINED = "undefined"  # nothing said why [undefined]


class Action(StrEnum):
    """What sender does about a finding; :data:`REASON_RULES` gives one per reason."""

    SUPPRESS = "suppress"  # the address is dead (or its owner complained): suppress it now
    COUNT = "count"  # the mailbox is unwell: suppress after ``soft_limit`` within a window
    SENDER_SIDE = "sender_side"  # we or our message were refused: never suppress; per provider
    NOTHING = "nothing"  # an auto-reply, a delivery report, a retry under way


@dataclass(frozen=True, slots=True)
class ReasonRule:
    """One row of :data:`REASON_RULES`: the action, and for the sender's side the fix."""

    action: Action
    hint: str = ""  # what the operator should do (sender-side reasons only)


_DOCTOR = "run `sender doctor DOMAIN` for the sending domain"

#: The one table from reason to action (and, for sender-side reasons, the doctor's hint).
#: A sender-side refusal never suppresses the participant: the problem is ours, and the
#: receiving provider would refuse anyone's mail alike; a burst of them from one provider
#: pauses bulk mail to it instead (``BouncePolicy.sender_side_pause``).
REASON_RULES: Mapping[Reason, ReasonRule] = MappingProxyType(
    {
        Reason.USER_UNKNOWN: ReasonRule(Action.SUPPRESS),
        Reason.HOST_UNKNOWN: ReasonRule(Action.SUPPRESS),
        Reason.HAS_MOVED: ReasonRule(Action.SUPPRESS),
        Reason.NOT_ACCEPTING: ReasonRule(Action.SUPPRESS),
        Reason.COMPLAINT: ReasonRule(Action.SUPPRESS),
        Reason.SUSPENDED: ReasonRule(Action.COUNT),
        Reason.MAILBOX_FULL: ReasonRule(Action.COUNT),
        Reason.QUOTA_EXCEEDED: ReasonRule(Action.COUNT),
        Reason.EXPIRED: ReasonRule(Action.COUNT),
        Reason.MAILER_ERROR: ReasonRule(Action.COUNT),
        Reason.NETWORK_ERROR: ReasonRule(Action.COUNT),
        Reason.SYSTEM_ERROR: ReasonRule(Action.COUNT),
        Reason.UNDEFINED: ReasonRule(Action.COUNT),
        Reason.MESSAGE_TOO_BIG: ReasonRule(
            Action.SENDER_SIDE, "the message is too big for the receiver: send a link, not files"
        ),
        Reason.FILTERED: ReasonRule(
            Action.SENDER_SIDE,
            "the recipient's own filter refuses your sending address: ask them to allow it",
        ),
        Reason.REJECTED_SENDER: ReasonRule(
            Action.SENDER_SIDE,
            "the envelope sender (return path) was refused: check the bounce domain's DNS; "
            + _DOCTOR,
        ),
        Reason.BLOCKED: ReasonRule(
            Action.SENDER_SIDE,
            "your sending IP is on a blocklist or refused by this provider: look it up "
            "(e.g. Spamhaus, the URL in the diagnostic) and ask for delisting, "
            "or send through another relay",
        ),
        Reason.BAD_REPUTATION: ReasonRule(
            Action.SENDER_SIDE,
            "the provider distrusts your IP or domain: slow down, send only to people who "
            "asked, and check its postmaster tools",
        ),
        Reason.PTR_REQUIRED: ReasonRule(
            Action.SENDER_SIDE,
            "your sending IP has no matching reverse DNS (PTR): ask its owner to set one",
        ),
        Reason.AUTH_FAILURE: ReasonRule(
            Action.SENDER_SIDE, f"publish SPF/DKIM/DMARC that pass and align: {_DOCTOR}"
        ),
        Reason.POLICY: ReasonRule(
            Action.SENDER_SIDE,
            "refused by the receiver's policy: read the diagnostic; check authentication ("
            + _DOCTOR
            + ")",
        ),
        Reason.SPAM_DETECTED: ReasonRule(
            Action.SENDER_SIDE,
            "a content filter called the message spam: review the template, its links and "
            "its authentication",
        ),
        Reason.VIRUS: ReasonRule(
            Action.SENDER_SIDE, "a virus scanner refused the message: check its attachments"
        ),
        Reason.CONTENT_ERROR: ReasonRule(
            Action.SENDER_SIDE, "the receiver refused the message's format (MIME, headers)"
        ),
        Reason.NOT_RFC_COMPLIANT: ReasonRule(
            Action.SENDER_SIDE, "the message breaks RFC 5322: check the template's headers"
        ),
        Reason.RELAYING_DENIED: ReasonRule(
            Action.SENDER_SIDE, "a relay refused to pass the mail on: check the SMTP relay settings"
        ),
        Reason.SYNTAX_ERROR: ReasonRule(
            Action.SENDER_SIDE, "the receiver refused an SMTP command: check the relay"
        ),
        Reason.TOO_MANY_CONNECTIONS: ReasonRule(
            Action.SENDER_SIDE, "too many connections at once: lower pool_size or concurrency"
        ),
        Reason.RATE_LIMITED: ReasonRule(
            Action.SENDER_SIDE, "sending too fast for this provider: lower domain_rate"
        ),
        Reason.GREYLISTED: ReasonRule(Action.NOTHING),
        Reason.DELAYED: ReasonRule(Action.NOTHING),
        Reason.AUTO_REPLY: ReasonRule(Action.NOTHING),
        Reason.DELIVERED: ReasonRule(Action.NOTHING),
    }
)


def reason_of(text: str, /) -> Reason:
    """The reason a stored word names; what no longer names one is :attr:`Reason.UNDEFINED`."""
    try:
        return Reason(text)
    except ValueError:
        return Reason.UNDEFINED


def reasons_with(action: Action, /) -> frozenset[Reason]:
    """Every reason :data:`REASON_RULES` gives ``action``."""
    return frozenset(reason for reason, rule in REASON_RULES.items() if rule.action is action)
