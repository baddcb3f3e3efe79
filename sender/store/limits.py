"""Which limiter the ``limits`` setting names: the store's own, or Redis.

``store`` (the default) keeps the shared limits where the outbox is: a SQLite outbox's
processes share ``limits.sqlite3`` beside it, a PostgreSQL outbox's share two of its
tables. ``redis://host:port/db`` shares them through Redis. Each backend is imported only
when named: psycopg and redis are optional extras.
"""

from __future__ import annotations

from sender.errors import ConfigurationError
from sender.pacing.limits import LIMITS_IN_STORE, Limiter, check_limits
from sender.storeurl import store_file

__all__ = ["open_limiter"]


def open_limiter(limits: str, /, *, store: str) -> Limiter:
    """The limiter ``limits`` names, for the outbox at the ``store`` URL; connects on first use."""
    limits = check_limits(limits)
    if limits != LIMITS_IN_STORE:
        try:
            from sender.pacing.redis_limits import RedisLimiter
        except ImportError as exc:
            raise ConfigurationError(
                "Redis limits need redis-py: pip install 'sender[redis]'", setting="limits"
            ) from exc
        return RedisLimiter(limits)
    path = store_file(store)
    if path is not None:
        from sender.store.sqlite.limits import SqliteLimiter, limits_file

        return SqliteLimiter(limits_file(path))
    try:
        from sender.store.postgres.limits import PostgresLimiter
    except ImportError as exc:
        raise ConfigurationError(
            "a PostgreSQL store needs psycopg: pip install 'sender[postgres]'", setting="store"
        ) from exc
    return PostgresLimiter(store)
