"""What a ``store`` URL names, written once for the settings and for ``open_store``.

``sqlite:///path`` names a SQLite file, ``postgresql://user@host:port/db`` a PostgreSQL
database. The settings check a URL when they load it and ``sender.store.url.open_store``
turns it into a store; both read it here, and so do the messages that show it
(:func:`redacted_store_url`: never a password).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from sender.errors import ConfigurationError

__all__ = ["redacted_store_url", "sqlite_store_url", "store_file"]

_POSTGRES_SCHEMES = ("postgresql", "postgres")
_STORE_FORMS = "sqlite:///path/to/outbox.sqlite3 or postgresql://user@host:port/database"


def store_file(url: str, /) -> Path | None:
    """The SQLite file a ``store`` URL names, or None for a PostgreSQL URL.

    ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (a path, as SQLAlchemy
    writes it, percent-decoded); ``postgresql://user@host:port/db`` (or ``postgres://``)
    with a database. Anything else raises :class:`ConfigurationError` naming ``store``,
    with any password left out of the message. :func:`sender.store.url.open_store` opens
    what this names.
    """
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite" and rest.startswith("/") and len(rest) > 1:
        return Path(unquote(rest[1:]))
    if scheme in _POSTGRES_SCHEMES:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            parts = None
        if parts is not None and parts.path.strip("/"):
            return None
    raise ConfigurationError(
        f"store {redacted_store_url(url)!r} is not a store URL: use {_STORE_FORMS}",
        setting="store",
    )


def sqlite_store_url(path: Path, /) -> str:
    """The ``store`` URL of the SQLite file at ``path`` (``sqlite:////abs/path`` when absolute)."""
    return "sqlite:///" + quote(str(path), safe="/")


_PASSWORD_PARAM = re.compile(r"(password=)[^&#]*", re.IGNORECASE)


def redacted_store_url(url: str, /) -> str:
    """``url`` as messages and logs may show it: user, host and database, never a password.

    A SQLite URL is a path and is shown as it is. Otherwise everything between the
    user name and the last ``@`` goes (a password may hold ``/`` or ``:``), and so does
    a ``password=`` query parameter.
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() == "sqlite":
        return url
    if not sep:  # not a URL at all: keep only what follows a last @
        scheme, rest = "", url
    if "@" in rest:
        user_info, _, after = rest.rpartition("@")
        user = re.split(r"[:/?#]", user_info, maxsplit=1)[0] if sep else "…"
        rest = f"{user}@{after}" if user else after
    shown = f"{scheme}{sep}{rest}" if sep else rest
    return _PASSWORD_PARAM.sub(r"\1***", shown)
