"""The durable outbox: the ``Store`` roles, their records, and the embedded SQLite backend."""

import sender.store.base as base
from sender.store.base import *  # noqa: F403 - the roles and their records: base.__all__
from sender.store.sqlite import SqliteStore, find_latest_run
from sender.vocabulary import FINAL_STATES, MessageState, RunState

__all__ = ["FINAL_STATES", "MessageState", "RunState", "SqliteStore", "find_latest_run"]
__all__ += base.__all__
