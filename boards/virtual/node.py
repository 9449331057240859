"""Host launcher of a virtual node: runs wakes of the MicroPython unix port like a board lives.

Each wake is one `micropython` process over the board's flash directory. The launcher plays
the parts of the chip a process cannot: it restarts the board after deep sleep (keeping RTC
memory), after a reset or a crash, enforces the watchdog, and can cut the power (RTC memory
lost, process killed wherever it was).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allmende.boards import load_board
from allmende.boards.virtual.unix_port import RUNTIME, micropython_cmd, micropython_env
from allmende.firmware.build import compile_module

log = logging.getLogger(__name__)

PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
EXIT_DEEPSLEEP, EXIT_RESET = 100, 101
NO_MEDIUM = ("127.0.0.1", 9)  # a discard port: a radio without a medium is heard by nobody
SIMULATION_MARGIN_KB = 16


@dataclass
class Wake:
    """How one wake ended: `kind` is deepsleep, reset, crash, watchdog, power_cut or exit."""

    index: int
    kind: str
    sleep_ms: int
    returncode: int | None
    output: str


class VirtualNode:
    def __init__(
        self,
        root: Path,
        *,
        board: str = "virtual",
        seed: int = 1,
        node_id: str = "0242ac000001",
        medium: tuple[str, int] | None = None,
        heap: str | None = None,
        faults: dict[str, str] | None = None,
        env: dict[str, float] | None = None,
        wake_timeout: float = 120.0,
        flash: Path | None = None,
        state: Path | None = None,
    ) -> None:
        self.root = Path(root)
        # The flash and state directories default to root/flash and root/state; the pty board
        # (`allmende board virtual --fs DIR --state DIR`) may place them elsewhere.
        self.flash = Path(flash) if flash is not None else self.root / "flash"
        self.state = Path(state) if state is not None else self.root / "state"
        self.flash.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self.board = load_board(board)
        self.wake_timeout = wake_timeout
        self.sim: dict[str, Any] = {
            "seed": seed,
            "node_id": node_id,
            "board": board,
            "medium": list(medium) if medium else None,
            "faults": faults or {},
            "env": env or {},
        }
        self.heap = heap or f"{self.board['free_heap_kb'] + self.simulation_heap_kb()}k"
        self._write_json("board.json", self.board)
        self._write_sim()
        self.boot_index = self._last_boot_index()
        self.next_cause = PWRON_RESET
        self.wakes: list[Wake] = []
        self._proc: subprocess.Popen[str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- state shared with the runtime -------------------------------------------------
    def _write_json(self, name: str, data: Any) -> None:
        tmp = self.state / f"{name}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.state / name)

    def _write_sim(self) -> None:
        self._write_json("sim.json", self.sim)

    def _last_boot_index(self) -> int:
        try:
            return int(json.loads((self.state / "boot.json").read_text())["index"])
        except (OSError, ValueError, KeyError):
            return 0

    def set_faults(self, faults: dict[str, str]) -> None:
        """Injects sensor faults from the next wake on (e.g. {"sds011": "bad_checksum"})."""
        self.sim["faults"] = dict(faults)
        self._write_sim()

    def truth(self) -> list[dict[str, Any]]:
        """What the simulated world really was at each wake (the tests' oracle)."""
        path = self.state / "truth.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def rtc_memory(self) -> bytes:
        path = self.state / "rtc.bin"
        return path.read_bytes() if path.exists() else b""

    # -- one wake ----------------------------------------------------------------------
    def wake(self, cause: int | None = None) -> Wake:
        """Runs one wake to its end and returns how it ended."""
        self.begin_wake(cause)
        runtime = self.install_runtime()
        env = micropython_env([runtime], {"ALLMENDE_VBOARD_STATE": str(self.state)})
        with self._lock:
            self._proc = subprocess.Popen(
                [micropython_cmd(), "-X", f"heapsize={self.heap}", str(runtime / "vboot.py")],
                cwd=self.flash,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        proc = self._proc
        output: list[str] = []
        reader = threading.Thread(target=self._pump, args=(proc, output), daemon=True)
        reader.start()
        kind = self._supervise(proc)
        if self._power_cut_requested:
            kind = "power_cut"
        reader.join(timeout=5)
        with self._lock:
            self._proc = None
        return self.end_wake(kind, proc.returncode, "".join(output))

    def install_runtime(self) -> Path:
        """The virtual hardware as the board's ROM: compiled with mpy-cross into the state
        directory, so the simulation's own code does not eat the heap the firmware has on
        an ESP32 (bytecode loaded from .mpy needs no compiler RAM). Rebuilt when changed."""
        rom = self.state / "runtime"
        rom.mkdir(exist_ok=True)
        for src in RUNTIME.glob("*.py"):
            if src.name == "vboot.py":  # the entry script stays source, as `micropython` runs it
                target = rom / src.name
                if not target.exists() or target.stat().st_mtime < src.stat().st_mtime:
                    shutil.copyfile(src, target)
                continue
            target = rom / f"{src.stem}.mpy"
            if target.exists() and target.stat().st_mtime >= src.stat().st_mtime:
                continue
            compile_module(src, target, name=src.name)
        return rom

    def simulation_heap_kb(self) -> int:
        """Heap the simulated hardware itself takes inside the interpreter, where a real chip
        has silicon: measured once per runtime build, plus room for the fragmentation and the
        transient buffers of the simulation. The firmware gets the board's free heap on top."""
        rom = self.install_runtime()
        cached = rom / "heap.json"
        newest = max(p.stat().st_mtime for p in rom.iterdir())
        if cached.exists() and cached.stat().st_mtime >= newest:
            return int(json.loads(cached.read_text())["kb"])
        with tempfile.TemporaryDirectory() as scratch:
            probe = Path(scratch)
            (probe / "board.json").write_text(json.dumps(self.board))
            (probe / "sim.json").write_text(json.dumps(dict(self.sim, medium=list(NO_MEDIUM))))
            code = (
                "import gc\ngc.collect()\nbase = gc.mem_alloc()\n"
                "import machine, vdevices\nvdevices._get()\ngc.collect()\n"
                "print(gc.mem_alloc() - base)\n"
            )
            proc = subprocess.run(
                [micropython_cmd(), "-X", "heapsize=1m", "-c", code],
                capture_output=True, text=True, cwd=probe,
                env=micropython_env([rom], {"ALLMENDE_VBOARD_STATE": str(probe)}),
            )
        if proc.returncode != 0:
            raise RuntimeError(f"could not measure the simulation's heap: {proc.stderr.strip()}")
        kb = -(-int(proc.stdout.split()[-1]) // 1024) + SIMULATION_MARGIN_KB
        cached.write_text(json.dumps({"kb": kb}))
        return kb

    # Shared with the pty board (allmende.boards.virtual.pty_board), which runs its wakes
    # behind a serial port instead of a pipe but keeps the same state-directory lifecycle.
    def begin_wake(self, cause: int | None = None) -> int:
        """Records the start of a wake (reset cause, boot index) and returns the cause."""
        cause = self.next_cause if cause is None else cause
        self._power_cut_requested = False
        self.boot_index += 1
        self._write_json("boot.json", {"cause": cause, "index": self.boot_index})
        for name in ("exit.json", "wdt.json"):
            (self.state / name).unlink(missing_ok=True)
        return cause

    def end_wake(self, kind: str, returncode: int | None, output: str) -> Wake:
        """Records how a wake ended; `kind` "exit" is resolved from the exit code and exit.json."""
        sleep_ms = 0
        if kind == "exit":
            kind, sleep_ms = self._exit_reason(returncode if returncode is not None else -1)
        self.next_cause = {
            "deepsleep": DEEPSLEEP_RESET,
            "watchdog": WDT_RESET,
            "power_cut": PWRON_RESET,
            "soft_reset": SOFT_RESET,
        }.get(kind, HARD_RESET)
        wake = Wake(self.boot_index, kind, sleep_ms, returncode, output)
        self.wakes.append(wake)
        return wake

    def _pump(self, proc: subprocess.Popen[str], output: list[str]) -> None:
        assert proc.stdout is not None
        with (self.state / "console.log").open("a") as console:
            for line in proc.stdout:
                output.append(line)
                console.write(line)
                console.flush()
                log.debug("node %s: %s", self.sim["node_id"], line.rstrip())

    def _supervise(self, proc: subprocess.Popen[str]) -> str:
        started = time.monotonic()
        while proc.poll() is None:
            if self._watchdog_expired():
                proc.kill()
                proc.wait()
                return "watchdog"
            if time.monotonic() - started > self.wake_timeout:
                proc.kill()
                proc.wait()
                return "crash"
            time.sleep(0.02)
        return "exit"

    _power_cut_requested = False

    def watchdog_expired(self) -> bool:
        """True when the firmware armed the watchdog and stopped feeding it in time."""
        return self._watchdog_expired()

    def _watchdog_expired(self) -> bool:
        path = self.state / "wdt.json"
        try:
            timeout_ms = json.loads(path.read_text().strip())["timeout_ms"]
            fed = path.stat().st_mtime
        except (OSError, ValueError, KeyError):
            return False
        return (time.time() - fed) * 1000 > timeout_ms

    def _exit_reason(self, returncode: int) -> tuple[str, int]:
        if returncode == EXIT_DEEPSLEEP:
            reason = json.loads((self.state / "exit.json").read_text())
            return "deepsleep", int(reason["ms"])
        if returncode == EXIT_RESET:
            return "reset", 0
        return "crash", 0

    # -- a life of wakes ---------------------------------------------------------------
    def run(self, *, wakes: int | None = None) -> None:
        """Wakes the board again and again, sleeping as it asks, until stopped or `wakes` done."""
        done = 0
        while not self._stop.is_set() and (wakes is None or done < wakes):
            wake = self.wake()
            done += 1
            if wake.kind == "power_cut":
                break
            if wake.sleep_ms:
                self._stop.wait(wake.sleep_ms / 1000)

    def start(self) -> None:
        self._stop.clear()
        self._power_cut_requested = False
        self._thread = threading.Thread(target=self.run, name="virtual-node", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Lets the current wake finish, then stops (the board stays asleep)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)

    def power_cut(self) -> None:
        """Cuts the power now: the running wake dies wherever it is, RTC memory is lost."""
        self._power_cut_requested = True
        self._stop.set()
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
        if self._thread:
            self._thread.join(30)
        self.lose_power()

    def lose_power(self) -> None:
        """What a power cut does to the chip's state: RTC memory gone, next boot is power-on."""
        (self.state / "rtc.bin").unlink(missing_ok=True)
        self.next_cause = PWRON_RESET

    def erase_flash(self) -> None:
        shutil.rmtree(self.flash)
        self.flash.mkdir()
