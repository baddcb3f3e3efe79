"""README.md runs as written: every python block, and the commands, flags and settings it names."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from sender.cli import main
from sender.config import _TOML_KEYS
from tests.helpers import run_python

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# Run before each block: any connection that leaves the machine is an error, so a block
# that would reach smtp.example.com fails here instead of timing out somewhere else.
LOOPBACK_ONLY = """
import socket
_connect = socket.socket.connect
def _loopback_only(self, address):
    if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
        raise OSError(f"a README block tried to reach {address[0]}: only loopback is allowed")
    return _connect(self, address)
socket.socket.connect = _loopback_only
socket.socket.connect_ex = lambda self, address: _loopback_only(self, address) or 0
"""


@dataclass(frozen=True, slots=True)
class Block:
    language: str
    line: int  # the first line of the code, 1-based
    code: str
    heading: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"{self.language}-line{self.line}-{slug}"


def blocks(language: str) -> list[Block]:
    text = README.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) != language:
            continue
        before = text[: match.start()]
        headings = re.findall(r"^#+ (.+)$", before, re.MULTILINE)
        line = before.count("\n") + 2
        found.append(Block(language, line, match.group(2), headings[-1] if headings else "top"))
    return found


PYTHON = blocks("python")


def test_readme_has_the_three_library_examples() -> None:
    """The LMS quickstart, the bulk run and the calendar example are all python blocks."""
    assert len(PYTHON) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("block", PYTHON, ids=[block.id for block in PYTHON])
def test_python_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    """The block runs in a fresh interpreter in an empty directory, using loopback only."""
    runner = tmp_path / "run_block.py"
    source = "\n" * (block.line - 1) + block.code  # tracebacks point at README lines
    runner.write_text(
        LOOPBACK_ONLY
        + f"\nexec(compile({source!r}, {str(README)!r}, 'exec'), {{'__name__': '__main__'}})\n",
        encoding="utf-8",
    )
    result = run_python(tmp_path, str(runner))
    if result.returncode != 0:
        pytest.fail(f"README.md line {block.line}: the block failed:\n{result.stderr[-3000:]}")


def command_paths() -> list[tuple[str, ...]]:
    """Every ``sender WORD [WORD]`` the README names in code, as a command path."""
    text = README.read_text(encoding="utf-8")
    spans = re.findall(r"`([^`\n]+)`", text) + [b.code for b in blocks("sh")]
    paths: set[tuple[str, ...]] = set()
    for span in spans:
        for match in re.finditer(r"(?:^|[\s(&;])sender((?: [a-z][a-z-]*){1,2})", span):
            paths.add(tuple(match.group(1).split()))
    return sorted(paths)


def resolve(path: tuple[str, ...]) -> tuple[click.Command, tuple[str, ...]]:
    """The deepest command the words name, and the words it consumed."""
    command: click.Command = main
    used: list[str] = []
    for word in path:
        if not isinstance(command, click.Group):
            break
        sub = command.get_command(click.Context(command), word)
        if sub is None:
            break
        command, used = sub, [*used, word]
    return command, tuple(used)


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_the_readme_names_exists(path: tuple[str, ...]) -> None:
    """`sender X` (and `sender GROUP SUB`) named in README.md is a real command."""
    command, used = resolve(path)
    assert used, f"`sender {path[0]}` is not a command"
    if isinstance(command, click.Group):  # a group names a subcommand next (or nothing)
        assert len(path) == 1 or path[1] in command.commands, f"`sender {' '.join(path)}`"


def table_rows() -> list[tuple[str, str]]:
    """(command text, the row) for each ``sender ...`` in the CLI-at-a-glance table."""
    rows = []
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `sender "):
            first_cell = line.split(" | ")[0]
            rows.extend((span, line) for span in re.findall(r"`(sender [^`]+)`", first_cell))
    return rows


@pytest.mark.parametrize(("usage", "row"), table_rows(), ids=[u for u, _ in table_rows()])
def test_every_flag_in_the_cli_table_exists(usage: str, row: str) -> None:
    """Each --flag a table row shows belongs to that command (or to sender itself)."""
    words = tuple(w for w in usage.split()[1:3] if re.fullmatch(r"[a-z][a-z-]*", w))
    command, _ = resolve(words)
    known = {opt for p in [*command.params, *main.params] for opt in [*p.opts, *p.secondary_opts]}
    for flag in re.findall(r"--(?:\[no-\])?[a-z][a-z-]*", usage):
        for spelled in (
            [flag.replace("[no-]", ""), flag.replace("[no-]", "no-")] if "[no-]" in flag else [flag]
        ):
            assert spelled in known, f"{usage}: {spelled} is not an option of {command.name}"


def test_the_sender_toml_example_uses_only_known_settings() -> None:
    """The sender.toml block parses and every key in it is a setting sender reads."""
    (block,) = [b for b in blocks("toml") if "sender.toml" in b.code]
    values = tomllib.loads(block.code)
    assert set(values) <= _TOML_KEYS, set(values) - _TOML_KEYS


def test_the_systemd_unit_is_valid_as_written() -> None:
    """The worker's systemd unit has no inline comments (systemd reads them as part of the
    value, so `EnvironmentFile=path  # ...` names a file that does not exist), and counts
    the worker's exit code after SIGTERM (130) as a clean stop."""
    (unit,) = [b for b in blocks("ini") if "ExecStart=" in b.code and "sender worker" in b.code]
    settings = [line for line in unit.code.splitlines() if "=" in line and line[:1] not in "#;"]
    assert [line for line in settings if "#" in line] == []
    assert "SuccessExitStatus=130" in settings
