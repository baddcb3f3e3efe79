"""What a log line may say about an address, a URL or an error.

Log lines never carry a message body, a login token, a return-path signature or
a key. Sender's own log calls name participant ids and outbox ids; where they
must mention an address or quote text that came from elsewhere (an SMTP reply,
an exception message), they pass it through here first:

- :func:`address` keeps the first character of the local part and the domain:
  ``bounces+m1-k7f2…@bounce.example.com`` becomes ``b…@bounce.example.com``.
- :func:`text` does that to every address in free text, cuts every URL after
  its host (so ``?token=…`` and path tokens go), and blanks ``token=…``,
  ``key=…`` and the like wherever they stand.
- :func:`error` is an exception as ``TypeName: redacted message``, for logging
  in place of ``exc_info`` (a traceback repeats the unredacted message).
"""

from __future__ import annotations

import re
import traceback

__all__ = ["address", "error", "frames", "text"]

_ADDRESS = re.compile(r"[^\s<>\"'(),;:@\[\]]+@([^\s<>\"'(),;:@\[\]]+)")
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^\s/?#<>\"']*)[^\s<>\"']*")
_SECRET_PARAM = re.compile(r"\b(token|key|sig|signature|secret|password)=[^\s&;,\"'<>]+", re.I)
_MAX = 300  # characters of quoted text kept; a reply that echoes a message is cut


def address(value: str, /) -> str:
    """``k…@example.org``: enough to tell domains and people apart, nothing of a VERP key."""
    local, at, domain = value.strip().strip("<>").rpartition("@")
    if not at:
        return "…" if value else ""
    return f"{local[:1]}…@{domain}"


def text(value: str, /) -> str:
    """``value`` with every address redacted and every URL cut after its host."""
    value = _URL.sub(_cut_url, value)
    value = _SECRET_PARAM.sub(lambda match: f"{match.group(1)}=…", value)
    value = _ADDRESS.sub(lambda match: address(match.group(0)), value)
    return value if len(value) <= _MAX else value[:_MAX] + "…"


def _cut_url(match: re.Match[str]) -> str:
    scheme, _, netloc = match.group(1).partition("://")
    return f"{scheme}://{netloc.rpartition('@')[2]}/…"  # no user or password either


def error(exc: BaseException, /) -> str:
    """``TypeName: message`` with the message redacted, for a log line."""
    message = text(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def frames(exc: BaseException, /) -> str:
    """Where ``exc`` was raised: the traceback's frames without its message (file, line, code)."""
    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()
