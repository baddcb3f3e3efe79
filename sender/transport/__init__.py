"""Transports move finished messages: the interface and pooled SMTP."""

from sender.transport.base import Transport, results_for_all
from sender.transport.smtp import SmtpTransport

__all__ = ["SmtpTransport", "Transport", "results_for_all"]
