"""`sender run --run-id` refuses names that cannot identify a run, before any run exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli_with

ROWS = "email,name,participant_id,course_id\na@d.example,A,p-1,c\n"

cli = cli_with(SENDER_SECRET_KEYS="run-id-option-test-key-aaaaaaaaaaaa")


@pytest.fixture(autouse=True)
def workdir(workdir: Path) -> Path:
    """The shared empty working directory, holding p.csv."""
    (workdir / "p.csv").write_text(ROWS, encoding="utf-8")
    return workdir


@pytest.mark.parametrize(
    "run_id",
    ["", "   ", "\t", "r-\x00-1", "r\nsecond line", "r-\x1b[31m", "r-\x7f", "r" * 201],
    ids=["empty", "spaces", "tab", "nul", "newline", "escape", "delete", "too-long"],
)
def test_a_run_id_that_cannot_name_a_run_is_a_one_line_usage_error(
    run_id: str, workdir: Path
) -> None:
    """An empty, blank, control-character or over-long --run-id: one line naming it, exit 2."""
    result = cli("run", "p.csv", "--run-id", run_id, "--no-progress")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "--run-id" in lines[0]
    assert "\x00" not in lines[0]
    assert "\x1b" not in lines[0]
    assert not (workdir / ".sender" / "maildir" / "new").is_dir()
    listed = cli("status", "--all", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert json.loads(listed.stdout)["runs"] == []


@pytest.mark.parametrize("run_id", ["r-1", "Høstkurs 2027 – uke 3", "r" * 200])
def test_a_printable_run_id_names_the_run(run_id: str, workdir: Path) -> None:
    """Printable names (spaces inside and non-ASCII letters too) up to 200 characters work."""
    result = cli("run", "p.csv", "--run-id", run_id, "--no-progress", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["run_id"] == run_id
    assert len(list((workdir / ".sender" / "maildir" / "new").iterdir())) == 1
