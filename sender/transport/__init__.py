"""Transports move finished messages: the interface, pooled SMTP and SES."""

from sender.transport.base import Transport, results_for_all
from sender.transport.ses import SesTransport
from sender.transport.smtp import SmtpTransport

__all__ = ["SesTransport", "SmtpTransport", "Transport", "results_for_all"]
