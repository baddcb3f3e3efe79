"""sender: reach LMS participants by e-mail, and reach them anyway when e-mail fails."""

from sender.client import ComposedMessage, Sender, open_sender
from sender.clock import Clock, SystemClock
from sender.config import LinkSettings, SenderSettings, SmtpSecurity, SmtpSettings
from sender.errors import (
    AddressError,
    ConfigurationError,
    DeliveryError,
    HeaderError,
    InputError,
    LinkError,
    LinkExpired,
    LinkInvalid,
    LinkPolicyError,
    LinkRevoked,
    PermanentDeliveryError,
    SenderError,
    TemplateError,
    TemplateNotFound,
    TemporaryDeliveryError,
    UndefinedVariable,
    UnsafePathError,
)
from sender.links import IssuedLink, LinkClaims, LinkSigner
from sender.models import (
    Address,
    DeliveryResult,
    DeliveryStatus,
    Envelope,
    Participant,
    RecipientResult,
    SmtpReply,
)
from sender.render import RenderedMessage, Renderer
from sender.transport import SmtpTransport, Transport

__all__ = [
    "Address",
    "AddressError",
    "Clock",
    "ComposedMessage",
    "ConfigurationError",
    "DeliveryError",
    "DeliveryResult",
    "DeliveryStatus",
    "Envelope",
    "HeaderError",
    "InputError",
    "IssuedLink",
    "LinkClaims",
    "LinkError",
    "LinkExpired",
    "LinkInvalid",
    "LinkPolicyError",
    "LinkRevoked",
    "LinkSettings",
    "LinkSigner",
    "Participant",
    "PermanentDeliveryError",
    "RecipientResult",
    "RenderedMessage",
    "Renderer",
    "Sender",
    "SenderError",
    "SenderSettings",
    "SmtpReply",
    "SmtpSecurity",
    "SmtpSettings",
    "SmtpTransport",
    "SystemClock",
    "TemplateError",
    "TemplateNotFound",
    "TemporaryDeliveryError",
    "Transport",
    "UndefinedVariable",
    "UnsafePathError",
    "open_sender",
]
