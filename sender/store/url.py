"""Which outbox a ``store`` URL names: ``sqlite:///path`` or ``postgresql://…``.

The one place a URL becomes a store, so the CLI, the configuration and a library
caller agree on what a URL means. PostgreSQL is imported only when a URL names it:
psycopg is the optional ``postgres`` extra.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from sender.errors import ConfigurationError
from sender.store.base import Store
from sender.store.sqlite import SqliteStore

__all__ = ["open_store"]

POSTGRES_SCHEMES = ("postgresql", "postgres")


def open_store(url: str, /) -> Store:
    """The store ``url`` names, built without connecting (PostgreSQL connects on first use).

    ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (a path, as SQLAlchemy
    writes it) opens :class:`~sender.store.sqlite.SqliteStore`; ``postgresql://user@host:port/db``
    (or ``postgres://``) a ``PostgresStore``. Anything else raises
    :class:`~sender.errors.ConfigurationError` naming the setting ``store``.
    """
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite" and rest.startswith("/") and len(rest) > 1:
        return SqliteStore(unquote(rest[1:]))
    if scheme in POSTGRES_SCHEMES and urlsplit(url).path.strip("/"):
        try:
            from sender.store.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigurationError(
                "a PostgreSQL store needs psycopg: pip install 'sender[postgres]'",
                setting="store",
            ) from exc
        return PostgresStore(url)
    shown = url if "@" not in url else "…@" + url.rpartition("@")[2]  # never a password
    raise ConfigurationError(
        f"store {shown!r} is not a store URL: use sqlite:///path/to/outbox.sqlite3"
        " or postgresql://user@host:port/database",
        setting="store",
    )
