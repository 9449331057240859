"""mpremote works unchanged against the board: copy files, run code, survive a soft reset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the fixture's type, from this suite's conftest
    from conftest import HilBoard



def test_copy_run_and_remove_a_file(board: HilBoard, tmp_path: Path) -> None:
    module = tmp_path / "hil_probe.py"
    module.write_text("def answer():\n    return 6 * 7\n")
    board.mpremote("fs", "cp", str(module), ":hil_probe.py")
    listing = board.mpremote("fs", "ls", ":").stdout
    assert "hil_probe.py" in listing
    assert "42" in board.mpremote("exec", "import hil_probe; print(hil_probe.answer())").stdout
    back = tmp_path / "back.py"
    board.mpremote("fs", "cp", ":hil_probe.py", str(back))
    assert back.read_text() == module.read_text()
    board.mpremote("fs", "rm", ":hil_probe.py")
    assert "hil_probe.py" not in board.mpremote("fs", "ls", ":").stdout


def test_run_a_script(board: HilBoard, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint('running on', sys.implementation.name)\n")
    assert "running on micropython" in board.mpremote("run", str(script)).stdout


def test_soft_reset_clears_the_interpreter(board: HilBoard) -> None:
    probe = "try:\n print(marker)\nexcept NameError:\n print('cleared')"
    out = board.mpremote("exec", "marker = 'kept'", "resume", "exec", probe).stdout
    assert "kept" in out
    out = board.mpremote("exec", "marker = 'kept'", "soft-reset", "exec", probe).stdout
    assert "cleared" in out
    # and the board still answers afterwards
    assert "3" in board.mpremote("exec", "print(1 + 2)").stdout
