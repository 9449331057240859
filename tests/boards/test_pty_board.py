"""The virtual board behind a pty: mpremote drives it unchanged (files, exec, soft and hard
reset), main.py runs like on a board, deep sleep and power cuts behave like an ESP32's."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from allmende.boards.virtual.node import DEEPSLEEP_RESET, HARD_RESET, PWRON_RESET, SOFT_RESET
from allmende.boards.virtual.pty_board import PtyBoard

MPREMOTE = str(Path(sys.executable).parent / "mpremote")

COUNTER_MAIN = """
import machine
r = machine.RTC()
m = r.memory()
n = m[0] + 1 if m else 1
r.memory(bytes([n]))
with open('/wakes.txt', 'a') as f:
    f.write('%d %d\\n' % (machine.reset_cause(), n))
"""


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def mpremote(port: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True,
                          timeout=60)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture
def board(tmp_path: Path) -> Iterator[PtyBoard]:
    b = PtyBoard(tmp_path)
    b.start()
    yield b
    b.stop()


def test_mpremote_copies_lists_reads_and_runs(board: PtyBoard, tmp_path: Path) -> None:
    assert board.port and board.port.startswith("/dev/pts/")
    local = tmp_path / "greet.py"
    local.write_text("def hello():\n    return 'hello from flash'\n")
    mpremote(board.port, "fs", "mkdir", ":/lib")
    mpremote(board.port, "fs", "cp", str(local), ":/lib/greet.py")
    assert (board.flash / "lib" / "greet.py").read_text() == local.read_text()
    listing = mpremote(board.port, "fs", "ls", ":/lib").stdout
    assert f"{local.stat().st_size} greet.py" in listing
    out = mpremote(board.port, "exec", "import greet; print(greet.hello())").stdout
    assert "hello from flash" in out
    script = tmp_path / "script.py"
    script.write_text("import os\nprint(sorted(os.listdir('/lib')))\n")
    assert "['greet.py']" in mpremote(board.port, "run", str(script)).stdout
    back = tmp_path / "back.py"
    mpremote(board.port, "fs", "cp", ":lib/greet.py", str(back))
    assert back.read_text() == local.read_text()
    mpremote(board.port, "fs", "rm", ":/lib/greet.py")
    assert not (board.flash / "lib" / "greet.py").exists()


def test_absolute_paths_stay_on_the_flash_and_rename_works(board: PtyBoard) -> None:
    code = ("f = open('/a.txt', 'w'); f.write('x'); f.close()\n"
            "import os; os.rename('/a.txt', '/b.txt'); print(os.getcwd(), os.listdir('/'))")
    out = mpremote(board.port, "exec", code).stdout
    assert out.startswith("/ ") and ".vboard" not in out  # the harness's state stays hidden
    assert (board.flash / "b.txt").read_text() == "x"
    assert not Path("/b.txt").exists() or Path("/b.txt").read_text() != "x"


def test_soft_reset_restarts_the_interpreter(board: PtyBoard) -> None:
    mpremote(board.port, "exec", "leftover = 42")
    # One connection: the variable survives while the interpreter lives, a soft reset clears it.
    out = mpremote(board.port, "exec", "leftover = 42", "resume", "exec", "print(leftover)").stdout
    assert "42" in out
    probe = ("import machine\ntry:\n print(leftover)\n"
             "except NameError:\n print('gone', machine.reset_cause())")
    out = mpremote(board.port, "exec", "leftover = 1", "soft-reset", "exec", probe).stdout
    assert f"gone {SOFT_RESET}" in out
    assert any(w.kind == "soft_reset" for w in board.wakes)


def test_boot_and_main_run_at_power_on_and_ctrl_c_reaches_the_repl(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "boot.py").write_text("open('booted', 'a').write('b')\n")
    (flash / "main.py").write_text("import time\nopen('mained', 'a').write('m')\n"
                                   "while True:\n    time.sleep_ms(10)\n")
    with PtyBoard(tmp_path, fs=flash) as board:
        assert board.port
        # mpremote interrupts the running main.py with Ctrl-C, then soft-resets in the raw
        # REPL: boot.py runs again, main.py does not (as on a board).
        out = mpremote(board.port, "exec", "print(open('booted').read(), open('mained').read())")
        assert "bb m" in out.stdout


def test_hard_reset_and_deep_sleep_keep_rtc_memory_power_cut_loses_it(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(COUNTER_MAIN)
    with PtyBoard(tmp_path, fs=flash) as board:
        assert board.port
        wakes = flash / "wakes.txt"
        assert wait_for(lambda: _lines(wakes) == 1)
        mpremote(board.port, "reset")
        assert wait_for(lambda: _lines(wakes) == 2)
        mpremote(board.port, "exec", "import machine; machine.deepsleep(10)")
        assert wait_for(lambda: _lines(wakes) == 3)
        board.power_cut()
        assert wait_for(lambda: _lines(wakes) == 4)
    seen = [tuple(map(int, line.split())) for line in wakes.read_text().splitlines()]
    # power on; hard reset keeps the count; deep sleep wake keeps it; power cut loses it
    assert seen == [(PWRON_RESET, 1), (HARD_RESET, 2), (DEEPSLEEP_RESET, 3), (PWRON_RESET, 1)]
    kinds = [w.kind for w in board.wakes]
    assert "reset" in kinds and "deepsleep" in kinds and "power_cut" in kinds


def test_serial_input_wakes_a_sleeping_board(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    # A node that sleeps for an hour: a technician's mpremote must still get through.
    (flash / "main.py").write_text("import machine\nmachine.deepsleep(3600000)\n")
    with PtyBoard(tmp_path, fs=flash) as board:
        assert board.port
        assert wait_for(lambda: any(w.kind == "deepsleep" for w in board.wakes))
        out = mpremote(board.port, "exec", "print('awake')").stdout
        assert "awake" in out


def test_allmende_board_virtual_prints_the_port_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    import signal

    flash = tmp_path / "fs"
    proc = subprocess.Popen([sys.executable, "-m", "allmende.cli", "board", "virtual", "--fs",
                             str(flash)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/")
        mpremote(port, "exec", "open('/made-here', 'w').write('1')")
        assert (flash / "made-here").read_text() == "1"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def test_friendly_and_raw_repl_ctrl_d_soft_reboot_like_a_board(tmp_path: Path) -> None:
    import serial

    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "boot.py").write_text("print('boot.py ran')\n")
    (flash / "main.py").write_text("print('main.py ran')\n")
    with PtyBoard(tmp_path, fs=flash) as board, serial.Serial(board.port, timeout=10) as port:
        port.write(b"\r\x03")
        port.write(b"print('in' + 'sync')\r")  # a line whose output nothing else prints
        assert port.read_until(b"insync\n>>> ").endswith(b"insync\n>>> ")
        port.write(b"\x04")  # friendly REPL, empty line: soft reboot, boot.py and main.py
        out = port.read_until(b">>> ")
        assert out.index(b"MPY: soft reboot\r\n") < out.index(b"boot.py ran")
        assert out.index(b"boot.py ran") < out.index(b"main.py ran") < out.index(b">>> ")
        port.write(b"\r\x01")
        assert port.read_until(b"raw REPL; CTRL-B to exit\r\n>").endswith(b"exit\r\n>")
        port.write(b"\x04")  # raw REPL, empty: soft reboot into the raw REPL, boot.py only
        out = port.read_until(b"raw REPL; CTRL-B to exit\r\n>")
        assert out.startswith(b"OK\r\nMPY: soft reboot\r\n") and b"boot.py ran" in out
        assert b"main.py ran" not in out and out.endswith(b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"print(6 * 7)\x04")
        assert port.read_until(b"\x04>").startswith(b"OK42")
        port.write(b"\x02")  # back to the friendly REPL
        assert port.read_until(b">>> ").endswith(b">>> ")
