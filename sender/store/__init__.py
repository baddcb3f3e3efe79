"""The durable outbox: the ``Store`` roles, their records, the SQLite backend, ``open_store``.

``PostgresStore`` is in :mod:`sender.store.postgres` (psycopg is an optional extra);
:func:`open_store` builds either from a URL.
"""

import sender.store.base as base
from sender.store.base import *  # noqa: F403 - the roles and their records: base.__all__
from sender.store.sqlite import SqliteStore, find_latest_run
from sender.store.url import open_store
from sender.vocabulary import FINAL_STATES, MessageState, RunState

__all__ = [
    "FINAL_STATES",
    "MessageState",
    "RunState",
    "SqliteStore",
    "find_latest_run",
    "open_store",
]
__all__ += base.__all__
