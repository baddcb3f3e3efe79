"""sender: reach LMS participants by e-mail, and reach them anyway when e-mail fails.

Every name in ``__all__`` is imported on first use (PEP 562), from the module that
``_HOMES`` names: a worker process imports ``sender.bulk.workers``, which runs this file
first, and should not pay for the HTTP, DKIM, calendar and SMTP-server libraries that
other names bring in. Type checkers read the imports under ``TYPE_CHECKING``.
"""

from typing import TYPE_CHECKING

import sender.errors as _errors
from sender._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from sender.bulk.runner import BulkRunner, RunReport
    from sender.bulk.settings import RunSettings
    from sender.bulk.status import Progress
    from sender.client import CalendarSend, ComposedMessage, Sender, open_sender
    from sender.clock import Clock, SystemClock
    from sender.compose.event import CalendarEvent, CalendarMethod, PartStat
    from sender.compose.links import AssertionClaims, IssuedLink, LinkClaims, LinkSigner
    from sender.compose.render import RenderedMessage, Renderer
    from sender.config import LinkSettings, SenderSettings, SmtpSecurity, SmtpSettings
    from sender.errors import (
        AddressError,
        CheckUnavailable,
        CodeError,
        CodeInvalid,
        CodeLocked,
        ConfigurationError,
        DeliveryError,
        HeaderError,
        InputError,
        LinkError,
        LinkExpired,
        LinkInvalid,
        LinkPolicyError,
        LinkRevoked,
        LinkUsed,
        PermanentDeliveryError,
        RunBusy,
        SenderError,
        TemplateError,
        TemplateNotFound,
        TemporaryDeliveryError,
        UndefinedVariable,
        UnsafePathError,
        WorkerError,
    )
    from sender.invites import AttendeeAnswer, Invitations
    from sender.landing import Landing, Redeemed
    from sender.models import (
        Address,
        DeliveryResult,
        DeliveryStatus,
        Envelope,
        Participant,
        RecipientResult,
        SmtpReply,
    )
    from sender.pacing.schedule import RateLimits, RetryPolicy, Scheduler
    from sender.store import SqliteStore, Store
    from sender.transport.base import Transport
    from sender.transport.smtp import SmtpTransport
    from sender.vocabulary import MessageState, RunState

# Where each public name lives; tests/test_exported_members.py keeps it equal to the imports above.
_HOMES: dict[str, str] = {
    name: module
    for module, names in {
        "sender.bulk.runner": ("BulkRunner", "RunReport"),
        "sender.bulk.settings": ("RunSettings",),
        "sender.bulk.status": ("Progress",),
        "sender.client": ("CalendarSend", "ComposedMessage", "Sender", "open_sender"),
        "sender.clock": ("Clock", "SystemClock"),
        "sender.compose.event": ("CalendarEvent", "CalendarMethod", "PartStat"),
        "sender.compose.links": ("AssertionClaims", "IssuedLink", "LinkClaims", "LinkSigner"),
        "sender.compose.render": ("RenderedMessage", "Renderer"),
        "sender.config": ("LinkSettings", "SenderSettings", "SmtpSecurity", "SmtpSettings"),
        "sender.errors": tuple(_errors.__all__),  # every error is public
        "sender.invites": ("AttendeeAnswer", "Invitations"),
        "sender.landing": ("Landing", "Redeemed"),
        "sender.models": (
            "Address",
            "DeliveryResult",
            "DeliveryStatus",
            "Envelope",
            "Participant",
            "RecipientResult",
            "SmtpReply",
        ),
        "sender.pacing.schedule": ("RateLimits", "RetryPolicy", "Scheduler"),
        "sender.store": ("SqliteStore", "Store"),
        "sender.transport.base": ("Transport",),
        "sender.transport.smtp": ("SmtpTransport",),
        "sender.vocabulary": ("MessageState", "RunState"),
    }.items()
    for name in names
}

__all__ = [
    "Address",
    "AddressError",
    "AssertionClaims",
    "AttendeeAnswer",
    "BulkRunner",
    "CalendarEvent",
    "CalendarMethod",
    "CalendarSend",
    "CheckUnavailable",
    "Clock",
    "CodeError",
    "CodeInvalid",
    "CodeLocked",
    "ComposedMessage",
    "ConfigurationError",
    "DeliveryError",
    "DeliveryResult",
    "DeliveryStatus",
    "Envelope",
    "HeaderError",
    "InputError",
    "Invitations",
    "IssuedLink",
    "Landing",
    "LinkClaims",
    "LinkError",
    "LinkExpired",
    "LinkInvalid",
    "LinkPolicyError",
    "LinkRevoked",
    "LinkSettings",
    "LinkSigner",
    "LinkUsed",
    "MessageState",
    "PartStat",
    "Participant",
    "PermanentDeliveryError",
    "Progress",
    "RateLimits",
    "RecipientResult",
    "Redeemed",
    "RenderedMessage",
    "Renderer",
    "RetryPolicy",
    "RunBusy",
    "RunReport",
    "RunSettings",
    "RunState",
    "Scheduler",
    "Sender",
    "SenderError",
    "SenderSettings",
    "SmtpReply",
    "SmtpSecurity",
    "SmtpSettings",
    "SmtpTransport",
    "SqliteStore",
    "Store",
    "SystemClock",
    "TemplateError",
    "TemplateNotFound",
    "TemporaryDeliveryError",
    "Transport",
    "UndefinedVariable",
    "UnsafePathError",
    "WorkerError",
    "open_sender",
]


_import_on_use, __dir__ = _lazy_exports(__name__, _HOMES, globals(), __all__)

# Hidden from type checkers: they would type every unknown name (a typo) as its result.
if not TYPE_CHECKING:
    __getattr__ = _import_on_use
