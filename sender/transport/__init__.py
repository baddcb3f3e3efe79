"""Transports move finished messages: the interface, pooled SMTP, and the local capture server."""

from sender.transport.base import Transport, results_for_all
from sender.transport.capture import CaptureServer
from sender.transport.smtp import SmtpTransport

__all__ = ["CaptureServer", "SmtpTransport", "Transport", "results_for_all"]
