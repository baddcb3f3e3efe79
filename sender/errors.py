"""The exception tree of sender.

Every error sender raises on purpose derives from :class:`SenderError`, so an
LMS can catch one class. Errors carry their context as attributes (the field,
the row, the template, the reply) so a caller never parses messages::

    SenderError
    ├── ConfigurationError(ValueError)   a setting is wrong; raised at construction, or at
    │                                    first contact when only the server can tell
    │                                    (login refused, STARTTLS missing, untrusted cert)
    ├── InputError(ValueError)           one input value is unusable; names its field
    │   ├── HeaderError                  CR/LF or other bytes a header must not hold
    │   ├── AddressError                 not an e-mail address we can send to
    │   └── UnsafePathError              a ``next`` path that could redirect off-site
    ├── LinkError                        a personal login link does not verify
    │   ├── LinkInvalid                  tampered, truncated, foreign key or purpose
    │   ├── LinkExpired                  older than its max age
    │   ├── LinkRevoked                  issued under another stamp
    │   └── LinkUsed                     one-time: already redeemed (a link or an assertion)
    ├── TemplateError                    a template cannot produce a message
    │   ├── TemplateNotFound
    │   ├── UndefinedVariable            the template uses a variable nobody gave
    │   └── LinkPolicyError              the single-link rule refuses the message
    ├── RunBusy                          another worker holds the run's lease
    ├── CheckUnavailable                 a check could not be made now (DNS did not answer)
    ├── WorkerError(RuntimeError)        a bulk worker process died or could not start
    └── DeliveryError                    the mail server did not accept a message
        ├── TemporaryDeliveryError       4xx, timeout, dropped connection: retry later
        └── PermanentDeliveryError       5xx: do not retry

Third-party exceptions (jinja2, itsdangerous, aiosmtplib, aiosmtpd) never
escape: each wrapper module translates them where they enter, ``from exc``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from sender.models import DeliveryResult

__all__ = [
    "AddressError",
    "CheckUnavailable",
    "ConfigurationError",
    "DeliveryError",
    "HeaderError",
    "InputError",
    "LinkError",
    "LinkExpired",
    "LinkInvalid",
    "LinkPolicyError",
    "LinkRevoked",
    "LinkUsed",
    "PermanentDeliveryError",
    "RunBusy",
    "SenderError",
    "TemplateError",
    "TemplateNotFound",
    "TemporaryDeliveryError",
    "UndefinedVariable",
    "UnsafePathError",
    "WorkerError",
]


class SenderError(Exception):
    """Root of every error sender raises on purpose."""


class ConfigurationError(SenderError, ValueError):
    """A setting is missing or wrong.

    Raised when the object is built, or by a transport at first contact when only
    the server can tell (a refused login). Never a per-recipient result: booking it
    as a bounce would punish good addresses for our mistake.
    """

    def __init__(self, message: str, /, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class InputError(SenderError, ValueError):
    """One input value cannot be used. ``field`` names it; ``row`` is set for CSV input."""

    def __init__(
        self, message: str, /, *, field: str | None = None, row: int | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.row = row

    def __str__(self) -> str:
        text = super().__str__()
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {text}" if where else text


class HeaderError(InputError):
    """A header name or value would break the message (CR, LF, NUL, non-ASCII name)."""


class AddressError(InputError):
    """A string is not an e-mail address sender can put on an envelope."""


class UnsafePathError(InputError):
    """A ``next`` path is not a same-site relative path, so it could redirect off-site."""


class LinkError(SenderError):
    """A personal login link did not verify. ``kind`` is a stable word for CLIs and APIs."""

    kind = "invalid"


class LinkInvalid(LinkError):
    """The token was tampered with, truncated, signed by an unknown key or for another purpose."""

    kind = "invalid"


class LinkExpired(LinkError):
    """The token's signature is good but it is older than its max age."""

    kind = "expired"

    def __init__(self, message: str, /, *, expired_at: datetime) -> None:
        super().__init__(message)
        self.expired_at = expired_at


class LinkRevoked(LinkError):
    """The token was issued under another stamp (the address or link version changed)."""

    kind = "revoked"


class LinkUsed(LinkError):
    """A one-time token (a ``login`` link, a landing page's assertion) was already redeemed."""

    kind = "used"


class TemplateError(SenderError):
    """A template cannot produce a message. ``template`` names it (``name/locale/part``)."""

    def __init__(self, message: str, /, *, template: str | None = None) -> None:
        super().__init__(message)
        self.template = template


class TemplateNotFound(TemplateError):
    """No template set of that name exists in any template directory."""


class UndefinedVariable(TemplateError):
    """The template refers to a variable the caller did not provide."""

    def __init__(self, message: str, /, *, template: str | None, variable: str) -> None:
        super().__init__(message, template=template)
        self.variable = variable


class LinkPolicyError(TemplateError):
    """The rendered message breaks the single-link rule; ``sites`` lists what it found."""

    def __init__(
        self, message: str, /, *, template: str | None = None, sites: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, template=template)
        self.sites = sites


class RunBusy(SenderError):
    """Another live worker is sending this run; two would send everyone twice."""

    def __init__(self, message: str, /, *, owner: str | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class CheckUnavailable(SenderError):
    """A check that must pass could not be made now, e.g. DNS did not answer for a DKIM key.

    Nothing was decided or recorded; the same input later may pass.
    """


class WorkerError(SenderError, RuntimeError):
    """A worker process of a bulk run died, could not start, or broke the pipe protocol.

    The run stops; messages that worker had in flight stay ``sending`` until a
    resume requeues them, as after a crash.
    """

    def __init__(self, message: str, /, *, worker: int | None = None) -> None:
        super().__init__(message)
        self.worker = worker


class DeliveryError(SenderError):
    """The mail server did not accept a message. ``result`` holds the reply."""

    def __init__(self, message: str, /, *, result: DeliveryResult) -> None:
        super().__init__(message)
        self.result = result


class TemporaryDeliveryError(DeliveryError):
    """A 4xx reply, a timeout or a dropped connection: the same send may work later."""


class PermanentDeliveryError(DeliveryError):
    """A 5xx reply: sending the same message again will fail again."""
