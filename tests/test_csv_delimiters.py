"""CSV from spreadsheets: `,`, `;` and tab-separated files all read (issue 10, 4.7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sender.errors import InputError
from sender.participants import read_csv


def write(tmp_path: Path, text: str, *, bom: bool = False) -> Path:
    path = tmp_path / "p.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


@pytest.mark.parametrize(
    ("delimiter", "bom"), [(",", False), (";", True), (";", False), ("\t", False), ("\t", True)]
)
def test_each_delimiter_reads_the_same_participants(
    tmp_path: Path, delimiter: str, bom: bool
) -> None:
    """Excel's `;` (Norwegian, Swedish locales), tab and `,`, BOM or not: the same rows."""
    rows = [
        ["email", "name", "participant_id", "course_id", "course_name"],
        ["kari@d.example", "Kari Nordmann", "p-1", "PY101", "Python, del 1"],
        ["åse@d.example", "Åse Ørn", "p-2", "PY101", "Python; del 2"],
    ]

    def cell(value: str) -> str:
        return f'"{value}"' if any(c in value for c in ",;\t") else value

    text = "\n".join(delimiter.join(cell(v) for v in row) for row in rows) + "\n"
    read = list(read_csv(write(tmp_path, text, bom=bom)))
    assert [r.error for r in read] == [None, None]
    people = [r.participant for r in read if r.participant is not None]
    assert [p.email for p in people] == ["kari@d.example", "åse@d.example"]
    assert [p.vars["course_name"] for p in people] == ["Python, del 1", "Python; del 2"]
    assert [r.row for r in read] == [2, 3]


def test_quoted_semicolon_header_is_detected(tmp_path: Path) -> None:
    """A header whose names are quoted ("email";"name";...) is still told apart."""
    path = write(tmp_path, '"email";"name";"participant_id";"course_id"\na@d.example;A;p-1;c\n')
    (row,) = read_csv(path)
    assert row.participant is not None
    assert row.participant.name == "A"


def test_missing_columns_name_the_delimiter_found(tmp_path: Path) -> None:
    """When columns are still missing, the error says which delimiter the header was read with."""
    path = write(tmp_path, "email;name;id;course\na@d.example;A;p-1;c\n")
    with pytest.raises(InputError) as caught:
        list(read_csv(path))
    message = str(caught.value)
    assert "participant_id" in message
    assert "';' (semicolon)" in message
