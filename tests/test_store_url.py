"""A store URL names the backend: sqlite:///path or postgresql://, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from sender.errors import ConfigurationError
from sender.store import SqliteStore, open_store
from sender.store.postgres import PostgresStore


async def test_sqlite_url_opens_the_file_at_its_path(tmp_path: Path) -> None:
    """sqlite:////abs/path opens (and creates) that outbox file."""
    store = open_store(f"sqlite:///{tmp_path}/state/outbox.sqlite3")
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "state" / "outbox.sqlite3"
    await store.aclose()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_postgresql_urls_open_a_postgres_store_without_connecting(scheme: str) -> None:
    """postgresql:// and postgres:// give a PostgresStore; nothing connects until first use."""
    store = open_store(f"{scheme}://lms:pw@db.invalid:5432/sender")
    assert isinstance(store, PostgresStore)
    assert store.url == f"{scheme}://lms@db.invalid:5432/sender"
    await store.aclose()


@pytest.mark.parametrize(
    "url", ["mysql://db/x", "sqlite://", "outbox.sqlite3", "postgresql://u:hunter2@h/", ""]
)
def test_other_urls_are_a_configuration_error_naming_store(url: str) -> None:
    """Anything else names the setting and both forms, and never echoes a password."""
    with pytest.raises(ConfigurationError, match=r"sqlite:///.*postgresql://") as caught:
        open_store(url)
    assert caught.value.setting == "store"
    assert "hunter2" not in str(caught.value)
