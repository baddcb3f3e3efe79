"""A home that is a shared folder keeps its own mode: only sender's files are made private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from sender.cli import main

ENV = {"SENDER_SECRET_KEYS": "review-home-test-key-aaaaaaaaaaaaaa"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SENDER_* settings from the machine."""
    for name in [n for n in os.environ if n.startswith("SENDER_")]:
        monkeypatch.delenv(name)


def test_home_dot_leaves_the_project_folder_mode_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--home .` in a project folder (0755, other files) does not make the folder 0700."""
    project = tmp_path / "project"
    project.mkdir()
    project.chmod(0o755)
    (project / "p.csv").write_text("email,name,participant_id,course_id\n", encoding="utf-8")
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["--home", ".", "suppress", "add", "a@d.example"], env=ENV)
    assert result.exit_code == 0, result.output
    assert mode(project) == 0o755
    assert mode(project / "outbox.sqlite3") == 0o600


def test_a_dedicated_home_is_still_tightened(tmp_path: Path) -> None:
    """A folder holding only sender's state, left 0755 by an older version, becomes 0700."""
    home = tmp_path / "state"
    args = ["--home", str(home), "suppress", "add", "a@d.example"]
    assert CliRunner().invoke(main, args, env=ENV).exit_code == 0
    home.chmod(0o755)
    listed = CliRunner().invoke(main, ["--home", str(home), "suppress", "list"], env=ENV)
    assert listed.exit_code == 0
    assert mode(home) == 0o700


def test_a_regenerated_key_is_warned_about_again(tmp_path: Path) -> None:
    """The once-per-home key warning shows again when a lost key file was made anew."""
    home = tmp_path / "state"
    args = ["--home", str(home), "link", "issue", "--participant", "p", "--course", "c"]
    first = CliRunner().invoke(main, args, env={})
    assert "warning: no secret key configured" in first.stderr
    again = CliRunner().invoke(main, args, env={})
    assert "warning" not in again.stderr
    (home / "secret.key").unlink()
    regenerated = CliRunner().invoke(main, args, env={})
    assert "warning: no secret key configured" in regenerated.stderr
