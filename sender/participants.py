"""Reading participants from CSV, one row at a time, without ever losing a row.

A bad row never aborts the file: it comes back as a :class:`CsvRow` with an
:class:`~sender.errors.InputError` that names the row and field, so the
caller can record it as skipped and carry on.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sender.addresses import is_address
from sender.errors import InputError
from sender.models import Participant

__all__ = [
    "DELIMITERS",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "CsvRow",
    "detect_delimiter",
    "read_csv",
    "read_csv_text",
]

REQUIRED_COLUMNS = ("email", "name", "participant_id", "course_id")
OPTIONAL_COLUMNS = ("locale",)
# Delimiters read_csv tells apart from the header line, named for error messages.
DELIMITERS = {",": "',' (comma)", ";": "';' (semicolon)", "\t": "tab"}
_SURROGATE = re.compile("[\udc80-\udcff]")
_LINE_BREAK = re.compile("[\r\n\x00]")
_ONE_LINE_COLUMNS = ("name", "participant_id", "course_id", "email")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One record: the file line it starts on (header = 1), and a participant or an error."""

    row: int
    participant: Participant | None
    error: InputError | None = None
    email: str | None = None


def read_csv(path: Path, /) -> Iterator[CsvRow]:
    """Stream participants from a UTF-8 CSV (BOM or not); extra columns become variables.

    Fields may be separated by ``,``, ``;`` or tabs: :func:`detect_delimiter` decides
    from the header line.

    Raises :class:`InputError` only for a file-level problem (unreadable,
    missing required column); every row-level problem is yielded.
    """
    try:
        handle = path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", field="csv") from exc
    with handle:
        yield from _read(handle, str(path))


def read_csv_text(text: str, /, *, name: str = "the CSV") -> Iterator[CsvRow]:
    """:func:`read_csv` for CSV text already in memory (an upload); ``name`` is what
    messages call it."""
    return _read(io.StringIO(text.removeprefix("\ufeff"), newline=""), name)


def _read(handle: TextIO, path: str) -> Iterator[CsvRow]:
    """The rows of an open CSV; ``path`` names it in errors."""
    first = handle.readline()
    delimiter = detect_delimiter(first)
    reader = csv.reader(itertools.chain([first], handle), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path} is empty", field="csv") from None
    except csv.Error as exc:
        raise InputError(f"{path}: unreadable header: {exc}", row=1) from exc
    columns = [column.strip() for column in header]
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        raise InputError(
            f"{path} lacks the column(s) {', '.join(missing)} (read with "
            f"{DELIMITERS[delimiter]} as the delimiter); "
            f"the header must name {','.join(REQUIRED_COLUMNS)}[,locale][,extra...]",
            field=missing[0],
            row=1,
        )
    for column in columns:
        if column not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS and not _VARIABLE.match(column):
            raise InputError(
                f"column {column!r} cannot be a template variable name; use letters, "
                "digits and '_'",
                field=column,
                row=1,
            )
    while True:
        start = reader.line_num + 1  # a quoted field may span lines: name the first
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield CsvRow(start, None, InputError(str(exc), row=start))
            continue
        if not any(value.strip() for value in values):
            continue  # blank lines are not participants
        yield _row(start, columns, values)


def detect_delimiter(header: str, /) -> str:
    """The delimiter of a header line: ``,``, ``;`` (Excel in Nordic locales) or tab.

    The one that makes the most required column names appear wins (quoted names
    included); on a tie, the one that splits the line into the most fields; else ``,``.
    """

    def score(delimiter: str) -> tuple[int, int]:
        try:
            fields = next(csv.reader([header], delimiter=delimiter), [])
        except csv.Error:
            return (-1, 0)
        names = {field.strip() for field in fields}
        return (sum(column in names for column in REQUIRED_COLUMNS), len(fields))

    return max(DELIMITERS, key=score)  # max keeps the first (",") among equals


def _row(line: int, columns: list[str], values: list[str]) -> CsvRow:
    record = dict(zip(columns, values, strict=False))
    email = record.get("email", "").strip() or None

    def fail(message: str, field: str | None = None) -> CsvRow:
        return CsvRow(line, None, InputError(message, row=line, field=field), email)

    if len(values) != len(columns):
        return fail(f"has {len(values)} fields but the header has {len(columns)}")
    if _SURROGATE.search("".join(values)):  # one scan a row; then find the column
        for column, value in record.items():
            if _SURROGATE.search(value):
                return fail("is not valid UTF-8", column)
    for column in REQUIRED_COLUMNS:
        if not record[column].strip():
            return fail("is empty", column)
    for column in _ONE_LINE_COLUMNS:
        if _LINE_BREAK.search(record[column]):
            return fail("contains a line break", column)
    if not is_address(record["email"].strip()):
        return fail(f"{record['email'].strip()!r} is not an e-mail address", "email")
    extras = {
        key: value
        for key, value in record.items()
        if key not in REQUIRED_COLUMNS and key not in OPTIONAL_COLUMNS
    }
    participant = Participant(
        email=record["email"].strip(),
        name=record["name"].strip(),
        participant_id=record["participant_id"].strip(),
        course_id=record["course_id"].strip(),
        locale=(record.get("locale") or "en").strip() or "en",
        vars=extras,
    )
    return CsvRow(line, participant, None, participant.email)
