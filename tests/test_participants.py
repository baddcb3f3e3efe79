"""Reading participants from CSV: streamed, every bad row named, nothing lost."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sender.errors import InputError
from sender.participants import read_csv

HEADER = "email,name,participant_id,course_id,locale,course_name\n"


def write(tmp_path: Path, body: bytes | str) -> Path:
    path = tmp_path / "p.csv"
    path.write_bytes(body.encode("utf-8") if isinstance(body, str) else body)
    return path


def test_rows_become_participants_with_extra_columns_as_variables(tmp_path: Path) -> None:
    """Known columns fill the participant; extras become its template variables."""
    path = write(tmp_path, HEADER + 'a@example.com,"Smith, Ann",p-1,PY101,nb,Python\n')
    (row,) = read_csv(path)
    assert row.row == 2
    assert row.participant is not None
    assert row.participant.name == "Smith, Ann"
    assert row.participant.locale == "nb"
    assert dict(row.participant.vars) == {"course_name": "Python"}


def test_bom_is_ignored(tmp_path: Path) -> None:
    """A UTF-8 BOM from Excel does not end up in the first column name."""
    path = write(tmp_path, b"\xef\xbb\xbf" + (HEADER + "a@example.com,A,p-1,c,en,x\n").encode())
    (row,) = read_csv(path)
    assert row.participant is not None
    assert row.participant.email == "a@example.com"


def test_every_bad_row_is_reported_with_row_and_field(tmp_path: Path) -> None:
    """Bad rows come back as errors naming row and field, and good rows still come through."""
    rows = [
        "ok@example.com,Ok,p-1,c,en,x",
        ",No Mail,p-2,c,en,x",
        "broken-address,Bad,p-3,c,en,x",
        "c@example.com,,p-4,c,en,x",
        "d@example.com,Too,p-5,c,en,x,extra",
        "ok2@example.com,Ok2,p-6,c,sv,y",
    ]
    results = list(read_csv(write(tmp_path, HEADER + "\n".join(rows) + "\n")))
    assert [r.row for r in results] == [2, 3, 4, 5, 6, 7]
    errors = {r.row: r.error for r in results if r.error is not None}
    assert set(errors) == {3, 4, 5, 6}
    assert errors[3] is not None
    assert errors[3].field == "email"
    assert errors[3].row == 3
    assert errors[4] is not None
    assert "broken-address" in str(errors[4])
    assert errors[5] is not None
    assert errors[5].field == "name"
    assert "row 6" in str(errors[6])
    assert [r.participant.participant_id for r in results if r.participant] == ["p-1", "p-6"]


def test_invalid_utf8_row_is_named_not_fatal(tmp_path: Path) -> None:
    """A row in another encoding is reported; the rows after it still arrive."""
    body = HEADER.encode() + b"a@example.com,Bj\xf6rn,p-1,c,sv,x\nb@example.com,B,p-2,c,en,x\n"
    results = list(read_csv(write(tmp_path, body)))
    assert results[0].error is not None
    assert results[0].error.field == "name"
    assert results[1].participant is not None


def test_missing_required_column_is_a_file_error(tmp_path: Path) -> None:
    """A header without a required column fails at once, naming the column."""
    with pytest.raises(InputError) as info:
        list(read_csv(write(tmp_path, "email,name,course_id\nx@example.com,X,c\n")))
    assert info.value.field == "participant_id"


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path: Path) -> None:
    """Blank lines are not participants, and row numbers still match the file's lines."""
    results = list(read_csv(write(tmp_path, HEADER + "\n\nz@example.com,Z,p-9,c,ja,x\n")))
    assert [(r.row, r.error) for r in results] == [(4, None)]


def test_reading_is_streamed(tmp_path: Path) -> None:
    """Rows are yielded one at a time, so the first arrives before the file is read."""
    path = write(
        tmp_path, HEADER + "".join(f"u{i}@example.com,U,p-{i},c,en,x\n" for i in range(5000))
    )
    iterator = read_csv(path)
    first = next(iterator)
    assert first.participant is not None
    assert first.participant.participant_id == "p-0"


_cell = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_cell, min_size=0, max_size=8), max_size=12))
def test_hostile_rows_are_each_accounted_for(tmp_path: Path, rows: list[list[str]]) -> None:
    """Any rows at all: nothing raises; each non-blank record is a participant or a named error."""
    path = tmp_path / "hostile.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "participant_id", "course_id", "locale"])
        writer.writerows(rows)
    results = list(read_csv(path))
    non_blank = [r for r in rows if any(cell.strip() for cell in r)]
    assert len(results) == len(non_blank)
    for result in results:
        assert (result.participant is None) != (result.error is None)
        if result.error is not None:
            assert result.error.row == result.row
            assert f"row {result.row}" in str(result.error)
