"""sender: reach LMS participants by e-mail, and reach them anyway when e-mail fails."""

from sender.bulk.runner import BulkRunner, Progress, RunReport, RunSettings
from sender.client import CalendarSend, ComposedMessage, Sender, open_sender
from sender.clock import Clock, SystemClock
from sender.compose.ical import CalendarEvent, CalendarMethod, PartStat
from sender.compose.links import AssertionClaims, IssuedLink, LinkClaims, LinkSigner
from sender.compose.render import RenderedMessage, Renderer
from sender.config import LinkSettings, SenderSettings, SmtpSecurity, SmtpSettings
from sender.errors import (
    AddressError,
    CheckUnavailable,
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
from sender.transport import SmtpTransport, Transport
from sender.vocabulary import MessageState, RunState

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
