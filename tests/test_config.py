"""Loading settings for the CLI: sender.toml, then the environment, then flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from sender.config import load_config
from sender.errors import ConfigurationError

KEYS = {"SENDER_SECRET_KEYS": "config-test-key-0123456789abcdef"}


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sender.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_sending_settings_come_from_the_file(tmp_path: Path) -> None:
    """concurrency, workers and rates in sender.toml reach the resolved settings."""
    path = write_toml(
        tmp_path,
        'concurrency = 16\nworkers = 2\nrate = 14\ndomain_rate = "10/min"\n'
        'smtp_url = "smtp://127.0.0.1:2525"\n',
    )
    config = load_config(config_file=path, environ=KEYS, state_dir=tmp_path / ".sender")
    assert (config.concurrency, config.workers) == (16, 2)
    assert config.smtp is not None
    assert config.smtp.pool_size == 16
    assert config.limits.global_per_second == 14
    assert config.limits.domain_per_minute == 10


def test_flags_override_the_file(tmp_path: Path) -> None:
    """A flag value wins over sender.toml; an absent flag (None) does not."""
    path = write_toml(tmp_path, "concurrency = 16\nworkers = 2\n")
    config = load_config(
        config_file=path,
        environ=KEYS,
        overrides={"workers": 4, "concurrency": None},
        state_dir=tmp_path / ".sender",
    )
    assert (config.concurrency, config.workers) == (16, 4)


def test_more_workers_than_concurrency_names_the_setting(tmp_path: Path) -> None:
    """Each worker needs a connection of its own: workers above concurrency is refused."""
    path = write_toml(tmp_path, "concurrency = 2\nworkers = 3\n")
    with pytest.raises(ConfigurationError, match="workers") as caught:
        load_config(config_file=path, environ=KEYS, state_dir=tmp_path / ".sender")
    assert caught.value.setting == "workers"


def test_unknown_setting_is_named(tmp_path: Path) -> None:
    """A misspelt key in sender.toml is an error naming it, not silently ignored."""
    path = write_toml(tmp_path, "wokers = 2\n")
    with pytest.raises(ConfigurationError, match="wokers") as caught:
        load_config(config_file=path, environ=KEYS, state_dir=tmp_path / ".sender")
    assert caught.value.setting == "wokers"
