"""The :class:`Transport` interface: hand over one message, get one verdict per recipient.

A transport only moves bytes. Rendering, retry timing, rate limits, priority
and durable bookkeeping belong to the caller (the scheduler), so the same
scheduler drives SMTP, the capture server or an HTTP API alike.
"""

from __future__ import annotations

from typing import Protocol

from sender.models import DeliveryStatus, Envelope, RecipientResult, SmtpReply

__all__ = ["Transport", "results_for_all"]


class Transport(Protocol):
    """Delivers finished messages; one instance is shared by every sending task.

    The contract every implementation keeps:

    * :meth:`send` returns exactly one :class:`RecipientResult` per envelope
      recipient, in envelope order, and never raises for a delivery outcome: a
      refusal, a timeout or a lost connection is a ``TEMPORARY`` or
      ``PERMANENT`` result with the server's reply or a ``detail``.
    * It raises :class:`~sender.errors.ConfigurationError` when its settings
      cannot work (login refused, required TLS missing), because then every
      message would fail alike and must not be booked as a per-recipient bounce.
    * Many tasks may call :meth:`send` at once. The transport bounds its own
      concurrency and serves waiting callers in arrival order; a scheduler that
      wants a priority lane keeps its bulk work below that bound.
    * Cancelling a :meth:`send` leaves the transport usable; whether the
      message went out is then unknown, as with any interrupted delivery.
    * :meth:`aclose` lets sends in progress finish, then releases everything.
      Implementations are async context managers that call it on exit.
    """

    async def send(self, envelope: Envelope, message: bytes, /) -> tuple[RecipientResult, ...]:
        """Deliver ``message`` (complete RFC 5322 bytes, CRLF line ends) to the envelope."""
        ...

    async def aclose(self) -> None:
        """Finish sends in progress and release connections; idempotent."""
        ...


def results_for_all(
    recipients: tuple[str, ...],
    status: DeliveryStatus,
    /,
    *,
    reply: SmtpReply | None = None,
    detail: str = "",
) -> tuple[RecipientResult, ...]:
    """The same verdict for every recipient, e.g. when the whole message was refused."""
    return tuple(RecipientResult(rcpt, status, reply, detail) for rcpt in recipients)
