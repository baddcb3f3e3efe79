"""Transports move finished messages: the interface, pooled SMTP and SES.

``SesTransport`` is imported on first use (PEP 562): it brings in httpx, which SMTP
sending (every worker process) never needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sender._lazy import lazy_exports
from sender.transport.base import Transport, results_for_all
from sender.transport.smtp import SmtpTransport

if TYPE_CHECKING:
    from sender.transport.ses import SesTransport

__all__ = ["SesTransport", "SmtpTransport", "Transport", "results_for_all"]


_import_on_use, __dir__ = lazy_exports(
    __name__, {"SesTransport": "sender.transport.ses"}, globals(), __all__
)

# Hidden from type checkers: they would type every unknown name (a typo) as its result.
if not TYPE_CHECKING:
    __getattr__ = _import_on_use
