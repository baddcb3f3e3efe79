"""Which outbox a ``store`` URL names: ``sqlite:///path`` or ``postgresql://…``.

The one place a URL becomes a store, so the CLI, the configuration and a library
caller agree on what a URL means. PostgreSQL is imported only when a URL names it:
psycopg is the optional ``postgres`` extra.
"""

from __future__ import annotations

from sender.errors import ConfigurationError
from sender.store.base import Store
from sender.store.sqlite import SqliteStore
from sender.storeurl import store_file

__all__ = ["open_store"]


def open_store(url: str, /) -> Store:
    """The store ``url`` names, built without connecting (PostgreSQL connects on first use).

    ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (a path, as SQLAlchemy
    writes it) opens :class:`~sender.store.sqlite.SqliteStore`; ``postgresql://user@host:port/db``
    (or ``postgres://``) a ``PostgresStore``. Anything else raises
    :class:`~sender.errors.ConfigurationError` naming the setting ``store``.
    """
    path = store_file(url)  # refuses what is neither, naming ``store``
    if path is not None:
        return SqliteStore(path)
    try:
        from sender.store.postgres import PostgresStore
    except ImportError as exc:
        raise ConfigurationError(
            "a PostgreSQL store needs psycopg: pip install 'sender[postgres]'",
            setting="store",
        ) from exc
    return PostgresStore(url)
