"""`templates lint` lists every problem; `templates show` says what a template needs (4.8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sender.compose.render import Renderer, lint_templates
from tests.helpers import cli_with

pytestmark = pytest.mark.usefixtures("workdir")


cli = cli_with(SENDER_SECRET_KEYS="templates-show-test-key-aaaaaaaaaa")


def write(base: Path, relative: str, text: str) -> None:
    path = base / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def broken_set(base: Path) -> None:
    """One set with five problems over two locales and three parts."""
    write(base, "seat/en/subject.txt", "Seat {{ room }} for {{ name }}")
    write(
        base, "seat/en/body.txt", "{{ link }} {{ building }} {{ floor }}\nhttps://evil.example/\n"
    )
    write(base, "seat/nb/subject.txt", "Plass {{ rom")
    write(base, "seat/nb/body.txt", "{{ link }} {{ etasje }}\n")


def test_lint_lists_every_problem_of_a_set(tmp_path: Path) -> None:
    """Each unknown variable, the syntax error and the foreign link: all found in one lint."""
    broken_set(tmp_path / "tpl")
    findings = [str(f) for f in lint_templates(Renderer(template_dirs=[tmp_path / "tpl"]))]
    mine = [f for f in findings if f.startswith("seat/")]
    for expected in ("'room'", "'building'", "'floor'", "evil.example", "seat/nb/subject.txt"):
        assert any(expected in finding for finding in mine), (expected, mine)
    assert any("'etasje'" in finding for finding in mine), mine


def test_lint_command_prints_all_and_counts_them(tmp_path: Path) -> None:
    """templates lint prints each problem on its own line and exits 1 with the count."""
    broken_set(tmp_path / "tpl")
    result = cli("templates", "lint", "--templates", str(tmp_path / "tpl"))
    assert result.exit_code == 1
    for word in ("room", "building", "floor", "etasje", "evil.example", "seat/nb/subject.txt"):
        assert word in result.stdout, word


def test_show_lists_variables_sender_fills_and_csv_columns(tmp_path: Path) -> None:
    """templates show NAME: variables by who fills them, and the locales (also as JSON)."""
    write(tmp_path / "tpl", "seat/en/subject.txt", "Seat {{ room }} for {{ name }}")
    write(tmp_path / "tpl", "seat/en/body.txt", "{{ link }} {{ course_name }}\n")
    write(tmp_path / "tpl", "seat/sv/subject.txt", "Plats {{ room }}")
    write(tmp_path / "tpl", "seat/sv/body.txt", "{{ link }} {{ floor }}\n")
    (tmp_path / "sender.toml").write_text(f'templates = "{tmp_path / "tpl"}"\n', encoding="utf-8")
    result = cli("templates", "show", "seat", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["locales"] == ["en", "sv"]
    assert data["filled_by_sender"] == ["link", "name"]
    assert data["csv_columns"] == ["floor", "room"]
    assert data["required_columns"] == ["floor", "room"]
    assert data["optional_columns"] == ["course_name"]
    assert data["by_locale"]["sv"] == ["floor", "link", "room"]
    text = cli("templates", "show", "seat")
    assert "room" in text.stdout
    assert "en, sv" in text.stdout


def test_show_of_a_calendar_template_counts_event_variables_as_filled() -> None:
    """The built-in invite set: event_* come from the event, not from CSV columns."""
    data = json.loads(cli("templates", "show", "invite", "--json").stdout)
    assert "event_summary" in data["filled_by_sender"]
    assert not [v for v in data["csv_columns"] if v.startswith("event_")]
    assert "en" in data["locales"]
    invitation = json.loads(cli("templates", "show", "invitation", "--json").stdout)
    assert "start_date" in invitation["csv_columns"]  # used only when given
    assert invitation["required_columns"] == []


def test_show_of_an_unknown_template_is_one_line() -> None:
    """An unknown name is a one-line error naming it."""
    result = cli("templates", "show", "nope")
    assert result.exit_code == 1
    assert "nope" in result.stderr
