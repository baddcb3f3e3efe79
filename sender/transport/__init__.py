"""Transports move finished messages: the interface, pooled SMTP and SES.

``SesTransport`` is imported on first use (PEP 562): it brings in httpx, which SMTP
sending (every worker process) never needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sender.transport.base import Transport, results_for_all
from sender.transport.smtp import SmtpTransport

if TYPE_CHECKING:
    from sender.transport.ses import SesTransport

__all__ = ["SesTransport", "SmtpTransport", "Transport", "results_for_all"]


def _import_on_use(name: str) -> object:
    """``SesTransport`` from :mod:`sender.transport.ses`, imported when first asked for."""
    if name != "SesTransport":
        raise AttributeError(f"module 'sender.transport' has no attribute {name!r}")
    from sender.transport.ses import SesTransport

    globals()[name] = SesTransport
    return SesTransport


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


# Hidden from type checkers: they would type every unknown name (a typo) as its result.
if not TYPE_CHECKING:
    __getattr__ = _import_on_use
