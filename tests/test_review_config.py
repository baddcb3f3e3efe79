"""Settings the library refuses are refused where settings are read, with the same limit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from sender.cli import main

ENV = {"SENDER_SECRET_KEYS": "review-config-test-key-aaaaaaaaaaaa"}


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with one CSV and no SENDER_* settings."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("SENDER_")]:
        monkeypatch.delenv(name)
    (tmp_path / "p.csv").write_text(
        "email,name,participant_id,course_id\na@d.example,A,p-1,c\n", encoding="utf-8"
    )
    return tmp_path


@pytest.mark.parametrize("where", ["flag", "sender.toml"])
def test_concurrency_over_the_runners_limit_is_a_settings_error(home: Path, where: str) -> None:
    """concurrency 300 (over RunSettings' 256) is refused when read, before a run starts."""
    args = ["run", "p.csv", "--no-progress"]
    if where == "flag":
        args += ["--concurrency", "300"]
    else:
        (home / "sender.toml").write_text("concurrency = 300\n", encoding="utf-8")
    result = CliRunner().invoke(main, args, env=ENV, catch_exceptions=False)
    assert result.exit_code == 2
    assert "at a time" not in result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "concurrency must be 1 to 256, not 300" in line
