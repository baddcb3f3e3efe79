"""Hostile settings and a damaged outbox are one clear line naming the field, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result

from tests.helpers import cli_with

KEYS = {"SENDER_SECRET_KEYS": "config-errors-key-aaaaaaaaaaaaaa"}
CSV = "email,name,participant_id,course_id\nkari@example.com,Kari,p-1,c\n"


pytestmark = pytest.mark.usefixtures("workdir")


cli = cli_with(**KEYS)


def assert_one_line(result: Result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "internal error" not in lines[0]
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_a_huge_ttl_flag_is_a_configuration_error() -> None:
    """`link issue --ttl 99999999d` names --ttl and exits 2 instead of overflowing."""
    result = cli("link", "issue", "--participant", "p", "--course", "c", "--ttl", "99999999d")
    assert_one_line(result, 2, "--ttl")


@pytest.mark.parametrize(
    ("setting", "name"),
    [
        ('link_ttl = "99999999d"', "link_ttl"),
        (f'link_ttl = "{"9" * 400}"', "link_ttl"),
        ("link_ttl = true", "link_ttl"),
        ("link_ttl = 0", "link_ttl"),
        ("workers = 0", "workers"),
        ("workers = -2", "workers"),
        ("concurrency = -1", "concurrency"),
        ("concurrency = 0", "concurrency"),
        ("concurrency = 99999999999999999999", "concurrency"),
        ("pool_size = 0", "pool_size"),
        ("max_messages_per_connection = -1", "max_messages_per_connection"),
        ("max_connections = 0", "max_connections"),
        ('smtp_url = "smtp://127.0.0.1:25?max_connections=0"', "max_connections"),
        ('smtp_url = "smtp://127.0.0.1:25?max_connections=two"', "max_connections"),
        ("rate = nan", "rate"),
        ("rate = inf", "rate"),
        ("rate = -1", "rate"),
        ('retry_first = "99999999999d"', "retry_first"),
        ('retry_max_age = "0s"', "retry_max_age"),
        ('smtp_timeout = "99999999999999d"', "smtp_timeout"),
        ("bounce_budget = 0", "bounce_budget"),
        ("soft_bounce_limit = -1", "soft_bounce_limit"),
        ('return_path = "a@b.example\\r\\nBcc: x@y.example"', "return_path"),
        ('[headers]\n"X-A" = "b\\r\\nBcc: x@y.example"', "headers"),
        ('[headers]\n"X A:" = "b"', "headers"),
        ('smtp_url = "smtp://127.0.0.1:25?timeout=nan"', "timeout"),
        ('smtp_url = "smtp://127.0.0.1:25?timeout=1e999"', "timeout"),
    ],
)
def test_a_hostile_setting_in_sender_toml_names_its_field(
    workdir: Path, setting: str, name: str
) -> None:
    """Each bad value in sender.toml is one line naming the setting, exit 2."""
    (workdir / "sender.toml").write_text(setting + "\n", encoding="utf-8")
    assert_one_line(cli("link", "issue", "--participant", "p", "--course", "c"), 2, name)


def test_a_sender_toml_that_is_not_utf8_names_the_file(workdir: Path) -> None:
    """A Latin-1 sender.toml is one line naming the file and UTF-8, exit 2."""
    (workdir / "sender.toml").write_bytes('organization = "Skolen på Ås"\n'.encode("latin-1"))
    assert_one_line(cli("suppress", "list"), 2, "sender.toml", "UTF-8")


@pytest.mark.parametrize(
    ("flag", "value", "name"),
    [
        ("--workers", "0", "workers"),
        ("--concurrency", "-1", "concurrency"),
        ("--rate", "nan", "rate"),
    ],
)
def test_a_bad_sending_flag_names_its_field(
    workdir: Path, flag: str, value: str, name: str
) -> None:
    """`run --workers 0`, `--concurrency -1`, `--rate nan`: one line naming it, exit 2."""
    (workdir / "p.csv").write_text(CSV, encoding="utf-8")
    assert_one_line(cli("run", "p.csv", "--no-progress", flag, value), 2, name)
    assert not (workdir / ".sender" / "maildir" / "new").exists()


@pytest.mark.parametrize("content", [b"", b"this is not a database " * 100])
def test_an_empty_or_corrupt_outbox_is_refused_not_started_over(
    workdir: Path, content: bytes
) -> None:
    """A 0-byte or garbage outbox is refused naming the file; nothing is sent or rewritten."""
    (workdir / "p.csv").write_text(CSV, encoding="utf-8")
    (workdir / ".sender").mkdir()
    outbox = workdir / ".sender" / "outbox.sqlite3"
    outbox.write_bytes(content)
    for command in (("run", "p.csv", "--no-progress"), ("status",), ("suppress", "list")):
        assert_one_line(cli(*command), 2, str(outbox), "move it aside")
    assert outbox.read_bytes() == content
    assert not (workdir / ".sender" / "maildir" / "new").exists()
