"""Synthetic participant CSVs for bulk-run benchmarks, written row by row.

Addresses are ``user{i}@domain{i % domains}.example`` (ASCII: smtp-sink has no
SMTPUTF8); locales cycle en/nb/sv/ja with matching names, Japanese included.
"""

from __future__ import annotations

import csv
from pathlib import Path

from sender import Participant

HEADER = ("email", "name", "participant_id", "course_id", "locale", "course_name")
LOCALES = ("en", "nb", "sv", "ja")
NAMES = {
    "en": ("Alice Johnson", "Robert Smith", "Seán O'Brien"),
    "nb": ("Kari Nordmann", "Åse Bjørnstad", "Ola Ødegård"),
    "sv": ("Märta Öberg", "Lars Åkesson", "Sofia Lindqvist"),
    "ja": ("山田 太郎", "佐藤 花子", "鈴木 一郎"),
}
COURSES = {
    "en": ("PY101", "Introduction to Python"),
    "nb": ("PY101", "Introduksjon til Python"),
    "sv": ("DS201", "Statistik för dataanalys"),
    "ja": ("WEB110", "Web開発の基礎"),
}


def row(i: int, *, domains: int = 200) -> tuple[str, ...]:
    locale = LOCALES[i % len(LOCALES)]
    names = NAMES[locale]
    course_id, course_name = COURSES[locale]
    name = f"{names[(i // len(LOCALES)) % len(names)]} {i}"
    return (f"user{i}@domain{i % domains}.example", name, f"p-{i}", course_id, locale, course_name)


def write_participants(path: Path, rows: int, *, domains: int = 200) -> int:
    """Write ``rows`` participants to ``path`` (streaming); return the file size."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        chunk = 10_000
        for start in range(0, rows, chunk):
            writer.writerows(
                row(i, domains=domains) for i in range(start, min(rows, start + chunk))
            )
    return path.stat().st_size


def participant(i: int, *, domains: int = 200) -> Participant:
    """Row ``i`` as a :class:`~sender.Participant`, for benchmarks that skip the CSV."""
    email, name, participant_id, course_id, locale, course_name = row(i, domains=domains)
    return Participant(email, name, participant_id, course_id, locale, {"course_name": course_name})
