"""The event loop sender's processes run on: uvloop where the default install has it."""

from __future__ import annotations

import asyncio
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from sender.loop import fast_loop

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _default_requirements() -> list[Requirement]:
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    return [Requirement(line) for line in data["project"]["dependencies"]]


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_default_install_has_uvloop_on_linux_and_macos(platform: str) -> None:
    """`pip install sender` pulls in uvloop on Linux and macOS, with no extra."""
    [uvloop] = [r for r in _default_requirements() if r.name == "uvloop"]
    assert uvloop.marker is not None
    assert uvloop.marker.evaluate({"sys_platform": platform})


def test_default_install_leaves_uvloop_out_on_windows() -> None:
    """uvloop has no Windows build, so the marker keeps it out there."""
    [uvloop] = [r for r in _default_requirements() if r.name == "uvloop"]
    assert uvloop.marker is not None
    assert not uvloop.marker.evaluate({"sys_platform": "win32"})


@pytest.mark.skipif(sys.platform not in ("linux", "darwin"), reason="uvloop: Linux and macOS")
def test_fast_loop_runs_on_uvloop_when_installed() -> None:
    """With uvloop installed (the default here), sender's processes run on its loop."""
    uvloop = pytest.importorskip("uvloop")
    factory = fast_loop()
    assert factory is not None
    with asyncio.Runner(loop_factory=factory) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, uvloop.Loop)
        assert runner.run(asyncio.sleep(0, result=7)) == 7
