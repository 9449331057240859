"""The suite's real-board mode, checked in plain CI without a board: argument handling, the
fault-injection skips, and a clear error when the port is not there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
         "--deselect", f"{HERE.name}/test_hil_suite_args.py", str(HERE), *args],
        capture_output=True, text=True, cwd=HERE.parent, timeout=120)


@pytest.fixture(autouse=True)
def _virtual_only(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--board") != "virtual":
        pytest.skip("checks the suite itself; runs in the virtual-board CI job")


def test_real_board_without_a_port_errors_and_skips_fault_injection() -> None:
    proc = _pytest("--board", "/dev/nonexistent", "--board-type", "heltec-v3")
    out = proc.stdout
    assert proc.returncode == 1, out
    assert "--board /dev/nonexistent: there is no such serial port" in out
    assert "SKIPPED" in out and "needs fault injection" in out
    assert " passed" not in out.splitlines()[-1]  # nothing pretends to have run on hardware
    skipped = [ln for ln in out.splitlines() if ln.startswith("SKIPPED")]
    assert any("power_cut" in ln or "fault injection" in ln for ln in skipped)


def test_real_board_needs_a_board_type() -> None:
    proc = _pytest("--board", "/dev/ttyUSB0")
    assert proc.returncode == 4
    assert "--board-type" in proc.stderr and "heltec-v3" in proc.stderr


def test_unknown_board_type_is_refused() -> None:
    proc = _pytest("--board", "/dev/ttyUSB0", "--board-type", "esp8266")
    assert proc.returncode == 4
    assert "unknown board" in proc.stderr
