"""What the library would refuse is refused where the CLI reads it, before a run exists."""

from __future__ import annotations

import json
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


def test_a_csv_without_the_columns_leaves_no_run_behind(home: Path) -> None:
    """run refuses a file whose header lacks columns before a run exists (no phantom run)."""
    (home / "bad.csv").write_text("mail,who\na@d.example,A\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["run", "bad.csv", "--no-progress"], env=ENV)
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "lacks the column(s) email" in line
    listed = CliRunner().invoke(main, ["status", "--all", "--json"], env=ENV)
    assert json.loads(listed.stdout)["runs"] == []
