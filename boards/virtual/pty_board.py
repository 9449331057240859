"""The virtual board behind a serial port: the MicroPython unix port on a pty that `mpremote`
(or any serial terminal) drives exactly like a USB-connected ESP32.

The harness holds the master side of a pty and prints the slave path (/dev/pts/N). Behind
it, one `micropython vboot.py` process per boot (staying for the REPL) runs on an inner pty
of its own; the harness relays bytes both ways and plays the chip where a process cannot:

- soft reset (Ctrl-D on an empty line of the friendly REPL or the raw REPL, `sys.exit()`):
  the interpreter process ends; the harness prints "MPY: soft reboot" and starts a new one,
  which runs boot.py and main.py from the friendly REPL, only boot.py from the raw REPL
  (and comes back in the raw REPL), as a board does;
- hard reset (`machine.reset()`), deep sleep (`machine.deepsleep(ms)`, restart after the
  time), the watchdog and crashes: RTC memory kept, reset cause as on an ESP32; the
  lifecycle and its state directory are shared with `VirtualNode`;
- a power cut at any moment (`power_cut()`): RTC memory lost, power-on reset;
- a sleeping board ignores serial input, except that Ctrl-C (mpremote connecting, a
  technician at a terminal) wakes it with a hard reset and main.py skipped: the stand-in for
  pressing RST on a real board while mpremote connects and interrupts main.py.

The unix port itself speaks the friendly REPL, the raw REPL and raw-paste mode. Inside, the
board's flash directory is mounted as "/" (see vboot._BoardFs), so `mpremote fs` commands
with relative or absolute paths act on the board's flash; the state directory (with the
precompiled virtual-board runtime) is reachable as /.vboard, which no listing shows.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import select
import signal
import subprocess
import termios
import threading
import time
import tty
from pathlib import Path

from allmende.boards.virtual.node import (
    EXIT_DEEPSLEEP,
    EXIT_RESET,
    HARD_RESET,
    NO_MEDIUM,
    VirtualNode,
)
from allmende.boards.virtual.unix_port import (
    micropython_cmd,
    micropython_env,
)

log = logging.getLogger(__name__)

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.'
SOFT_REBOOT = b"MPY: soft reboot\r\n"
_OUT_LIMIT = 1 << 20  # bytes kept for a slow or absent serial reader; older ones are lost


class PtyBoard:
    """One virtual board on a pty. `start()` returns the port path; `stop()` ends it."""

    def __init__(
        self,
        root: Path,
        *,
        board: str = "virtual",
        fs: Path | None = None,
        state: Path | None = None,
        heap: str | None = None,
        seed: int = 1,
        node_id: str = "0242ac000001",
        medium: tuple[str, int] | None = NO_MEDIUM,
        faults: dict[str, str] | None = None,
    ) -> None:
        # The firmware gets the board's free heap; the simulated hardware's own comes on top.
        self.node = VirtualNode(root, board=board, seed=seed, node_id=node_id, medium=medium,
                                heap=heap, faults=faults, flash=fs, state=state)
        self.flash = self.node.flash
        self.state = self.node.state
        self.heap = self.node.heap
        self.port: str | None = None
        self._master = -1
        self._slave = -1
        self._proc: subprocess.Popen[bytes] | None = None
        self._inner = -1
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wakeup_r, self._wakeup_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._mode = "friendly"  # the REPL the interpreter is in, as its output shows
        self._scan = b""
        self._pending_in = bytearray()  # serial input waiting for the interpreter to be ready
        self._out = bytearray()  # board output not yet taken by the serial reader
        self._ready = False
        self._holding: bytearray | None = None  # output held while re-entering the raw REPL
        self._wake_output = bytearray()
        self._sleep_until: float | None = None
        self._powered = False
        self._boot_count = 0
        self._interrupt_sent = False
        self._booted = threading.Condition(self._lock)

    # -- public API --------------------------------------------------------------------
    def start(self) -> str:
        """Creates the serial port, powers the board on, returns the port's path."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # a UART: no echo, no line editing, until a client sets it
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._stop.clear()
        with self._lock:
            self._power_on(self.node.next_cause)
        self._thread = threading.Thread(target=self._loop, name="pty-board", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Switches the board off and removes the serial port."""
        self._stop.set()
        self._poke()
        if self._thread:
            self._thread.join(10)
        with self._lock:
            self._kill_child()
        for fd in (self._master, self._slave, self._wakeup_r, self._wakeup_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = self._wakeup_r = self._wakeup_w = -1

    def __enter__(self) -> PtyBoard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def power_cut(self, *, restore: bool = True) -> None:
        """Cuts the power wherever the board is: the interpreter dies, RTC memory is lost.
        With `restore` the power comes back at once (power-on reset); else call power_on()."""
        with self._lock:
            self._kill_child()
            self.node.end_wake("power_cut", None, self._take_wake_output())
            self.node.lose_power()
            self._powered = False
            self._sleep_until = None
            self._pending_in.clear()
            if restore:
                self._power_on(self.node.next_cause)
        self._poke()

    def power_on(self) -> None:
        with self._lock:
            if not self._powered:
                self._power_on(self.node.next_cause)
        self._poke()

    def press_reset(self) -> None:
        """The EN button: the interpreter stops, the chip restarts (RTC memory kept)."""
        with self._lock:
            self._kill_child()
            self.node.end_wake("reset", None, self._take_wake_output())
            self._power_on(HARD_RESET)
        self._poke()

    @property
    def boots(self) -> int:
        """How many times the interpreter has been started (any reset counts)."""
        return self._boot_count

    def wait_boots(self, count: int, timeout: float = 30) -> bool:
        """Waits until the board has started at least `count` times."""
        with self._booted:
            return self._booted.wait_for(lambda: self._boot_count >= count, timeout)

    @property
    def wakes(self):  # type: ignore[no-untyped-def]
        return self.node.wakes

    # -- interpreter processes ---------------------------------------------------------
    def _power_on(self, cause: int, *, raw: bool = False, interrupted: bool = False) -> None:
        self.node.begin_wake(cause)
        rom = self.node.install_runtime()
        (self.state / "ready").unlink(missing_ok=True)
        env = micropython_env([rom], {
            "ALLMENDE_VBOARD_STATE": "/.vboard",
            "ALLMENDE_VBOARD_FLASH": str(self.flash.resolve()),
            "ALLMENDE_VBOARD_MOUNT": str(self.state.resolve()),
            "ALLMENDE_VBOARD_REPL": "raw" if raw else "interrupted" if interrupted else "friendly",
        })
        inner, inner_slave = os.openpty()
        tty.setraw(inner_slave)
        attrs = termios.tcgetattr(inner_slave)
        # The unix port restores these settings while code runs, so Ctrl-C must raise SIGINT
        # (KeyboardInterrupt, as on a board); no other key may stop or kill the process.
        attrs[3] |= termios.ISIG
        attrs[6][termios.VQUIT] = b"\x00"
        attrs[6][termios.VSUSP] = b"\x00"
        termios.tcsetattr(inner_slave, termios.TCSANOW, attrs)
        self._proc = subprocess.Popen(
            [micropython_cmd(), "-X", f"heapsize={self.heap}", str(rom / "vboot.py")],
            cwd=self.flash,
            env=env,
            stdin=inner_slave,
            stdout=inner_slave,
            stderr=inner_slave,
            start_new_session=True,
            preexec_fn=_take_controlling_tty,
        )
        os.close(inner_slave)
        os.set_blocking(inner, False)
        self._inner = inner
        self._powered = True
        self._sleep_until = None
        self._ready = False
        self._scan = b""
        self._mode = "raw" if raw else "friendly"
        self._holding = None
        self._interrupt_sent = False
        if raw:
            # Queued for the REPL that follows boot.py; its banner is hidden (see _on_output).
            os.write(inner, b"\x01")
            self._holding = bytearray()
        with self._booted:
            self._boot_count += 1
            self._booted.notify_all()

    def _kill_child(self) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
        self._proc = None
        if self._inner >= 0:
            os.close(self._inner)
            self._inner = -1

    def _take_wake_output(self) -> str:
        text = self._wake_output.decode("utf-8", "replace")
        self._wake_output = bytearray()
        return text

    def _left_how(self) -> str | None:
        try:
            return str(json.loads((self.state / "exit.json").read_text())["kind"])
        except (OSError, ValueError, KeyError):
            return None

    def _child_ended(self) -> None:
        """The interpreter process is gone: decide what the chip does next."""
        proc = self._proc
        assert proc is not None
        code = proc.wait()
        # machine.deepsleep()/reset() leave exit.json; their exit code only survives the
        # friendly REPL (the raw REPL turns any SystemExit into a soft reset, code 0).
        left = self._left_how()
        if left == "deepsleep":
            code = EXIT_DEEPSLEEP
        elif left == "reset":
            code = EXIT_RESET
        raw = self._mode == "raw"
        self._kill_child()
        output = self._take_wake_output()
        interrupted = self._interrupt_sent or b"\x03" in self._pending_in
        if code == EXIT_DEEPSLEEP and interrupted:
            # A Ctrl-C reached the interpreter as it was going to sleep; never let it get lost
            # to the sleep (mpremote would wait forever): handle it as a wake by Ctrl-C.
            self.node.end_wake("exit", code, output)
            self._power_on(HARD_RESET, interrupted=True)
            return
        if code == EXIT_DEEPSLEEP:
            wake = self.node.end_wake("exit", code, output)
            self._powered = True
            self._sleep_until = time.monotonic() + wake.sleep_ms / 1000
            log.info("virtual board: deep sleep for %d ms", wake.sleep_ms)
            return
        if code == EXIT_RESET:
            self.node.end_wake("exit", code, output)
            self._power_on(self.node.next_cause)
            return
        if code < 0:  # killed: a crash of the port itself, the chip resets
            self.node.end_wake("crash", code, output)
            # SIGINT while the port has no handler (starting up, shutting down): the Ctrl-C
            # still counts, main.py is skipped as if it had been interrupted.
            self._power_on(self.node.next_cause, interrupted=code == -signal.SIGINT)
            return
        # Ctrl-D or SystemExit: MicroPython's soft reset, staying in the REPL mode it was in.
        self._emit(SOFT_REBOOT)
        self.node.end_wake("soft_reset", code, output)
        self._power_on(self.node.next_cause, raw=raw)

    # -- the relay ---------------------------------------------------------------------
    def _poke(self) -> None:
        try:
            os.write(self._wakeup_w, b"x")
        except OSError:
            pass

    def _emit(self, data: bytes) -> None:
        """Board output towards the serial port; a full buffer loses the oldest bytes."""
        self._out += data
        if len(self._out) > _OUT_LIMIT:
            del self._out[: len(self._out) - _OUT_LIMIT]
        self._flush_out()

    def _flush_out(self) -> None:
        while self._out:
            try:
                n = os.write(self._master, self._out)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return
                raise
            del self._out[:n]

    def _on_output(self, data: bytes) -> None:
        self._wake_output += data
        if len(self._wake_output) > 65536:
            del self._wake_output[:-65536]
        self._scan = (self._scan + data)[-256:]
        raw_at, friendly_at = self._scan.rfind(RAW_BANNER), self._scan.rfind(FRIENDLY_BANNER)
        if raw_at > friendly_at:
            self._mode = "raw"
        elif friendly_at > raw_at:
            self._mode = "friendly"
        if self._holding is None:
            self._emit(data)
            return
        # Restarting into the raw REPL: show boot.py's output, not the unix port's banner.
        self._holding += data
        marker = self._holding.find(RAW_BANNER)
        if marker < 0:
            return
        banner = self._holding.rfind(b"MicroPython ", 0, marker)
        before = self._holding[:banner] if banner >= 0 else b""
        self._emit(bytes(before) + bytes(self._holding[marker:]))
        self._holding = None
        self._ready = True

    def _on_input(self, data: bytes) -> None:
        if not self._powered:
            return  # no power, nobody listens
        if self._sleep_until is not None:
            if b"\x03" not in data:
                return  # a sleeping chip hears nothing
            # Ctrl-C (mpremote connecting, a technician at a terminal) stands in for pressing
            # RST on a sleeping board: it wakes with a hard reset and gets the bytes.
            log.info("virtual board: Ctrl-C while asleep, resetting")
            self.node.end_wake("reset", None, "")
            self._pending_in += data[data.index(b"\x03"):]
            self._power_on(HARD_RESET, interrupted=True)
            return
        self._pending_in += data
        self._forward_input()

    def _forward_input(self) -> None:
        if not self._ready and self._holding is None and (self.state / "ready").exists():
            self._ready = True
        if not self._ready or not self._pending_in or self._inner < 0:
            return
        try:
            n = os.write(self._inner, self._pending_in)
        except BlockingIOError:
            return
        if b"\x03" in self._pending_in[:n]:
            self._interrupt_sent = True
        del self._pending_in[:n]

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                fds = [self._master, self._wakeup_r]
                if self._inner >= 0:
                    fds.append(self._inner)
                want_write = [self._master] if self._out else []
                if self._inner >= 0 and self._pending_in and self._ready:
                    want_write.append(self._inner)
            timeout = 0.02 if (not self._ready or self._sleep_until) else 0.2
            try:
                readable, writable, _ = select.select(fds, want_write, [], timeout)
            except (OSError, ValueError):
                if self._stop.is_set():
                    return
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                self._step(readable, writable)

    def _step(self, readable: list[int], writable: list[int]) -> None:
        if self._wakeup_r in readable:
            os.read(self._wakeup_r, 4096)
        if self._master in readable:
            try:
                data = os.read(self._master, 4096)
            except (BlockingIOError, OSError):
                data = b""
            if data:
                self._on_input(data)
        if self._master in writable:
            self._flush_out()
        if self._inner >= 0 and self._inner in readable:
            try:
                data = os.read(self._inner, 65536)
            except BlockingIOError:
                data = b""
            except OSError:  # EIO: the interpreter closed its terminal (it ended)
                data = b""
                if self._proc is not None:
                    self._proc.wait()
            if data:
                self._on_output(data)
        if self._proc is not None and self._proc.poll() is not None:
            self._drain_child()
            self._child_ended()
        elif self._proc is not None and self.node.watchdog_expired():
            self._kill_child()
            self.node.end_wake("watchdog", None, self._take_wake_output())
            self._power_on(self.node.next_cause)
        if self._sleep_until is not None and time.monotonic() >= self._sleep_until:
            self._power_on(self.node.next_cause)
        self._forward_input()

    def _drain_child(self) -> None:
        while self._inner >= 0:
            try:
                data = os.read(self._inner, 65536)
            except OSError:
                return
            if not data:
                return
            self._on_output(data)


def _take_controlling_tty() -> None:
    # In the child, before exec: the inner pty (stdin) becomes the controlling terminal of its
    # new session, so the terminal's Ctrl-C reaches the interpreter as SIGINT.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
