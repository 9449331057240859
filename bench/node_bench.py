"""Node benchmark: payload size against CayenneLPP and JSON, time on air, the smallest heap
one full wake completes in, and the size of the compiled firmware.

    .venv/bin/python bench/node_bench.py

Time on air comes from the firmware's own MAC code running on the unix port; the heap
figure is found by bisection: a virtual node (ABP, all sensors, radio) is woken with ever
smaller firmware heaps until the wake no longer ends in deep sleep.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from allmende.boards import load_board
from allmende.boards.virtual import unix_port
from allmende.boards.virtual.node import NO_MEDIUM, VirtualNode
from allmende.firmware import build
from allmende.firmware.app import payload
from cayennelpp import LppFrame

READING = {"pm25": 12.3, "pm10": 20.1, "temperature": 21.57, "humidity": 45.5,
           "pressure": 1013.2, "battery": 3.71, "flags": 0}
LORAWAN_OVERHEAD = 13  # MHDR + DevAddr + FCtrl + FCnt + FPort + MIC, no FOpts
ABP = {"activation": "abp", "dev_eui": "70b3d57ed0000b01", "dev_addr": "260b0001",
       "nwk_s_key": "00" * 16, "app_s_key": "11" * 16, "interval_s": 60,
       "sds011": {"warmup_s": 1, "samples": 3}}


def cayenne_lpp(reading: dict) -> bytes:
    frame = LppFrame()
    frame.add_generic(0, reading["pm25"])  # LPP has no particulate type: generic sensor
    frame.add_generic(1, reading["pm10"])
    frame.add_temperature(2, reading["temperature"])
    frame.add_humidity(3, reading["humidity"])
    frame.add_barometer(4, reading["pressure"])
    frame.add_voltage(5, reading["battery"])
    frame.add_digital_input(6, reading["flags"])
    return bytes(frame)


def payload_sizes() -> list[tuple[str, int]]:
    compact = json.dumps(READING, separators=(",", ":")).encode()
    return [
        ("allmende FPort 1 v1", len(payload.encode(payload.FPORT_AIR_QUALITY, READING))),
        ("allmende + CO2", len(payload.encode(payload.FPORT_AIR_QUALITY, dict(READING, co2=612)))),
        ("CayenneLPP", len(cayenne_lpp(READING))),
        ("JSON (compact)", len(compact)),
    ]


def time_on_air_ms(sizes: list[tuple[str, int]]) -> list[tuple[str, float, float]]:
    lengths = [n + LORAWAN_OVERHEAD for _, n in sizes]
    code = (
        "from lorawan import region\n"
        f"for n in {lengths}:\n"
        "    print(region.time_on_air_us(n, 7) / 1000, region.time_on_air_us(n, 12) / 1000)\n"
    )
    proc = unix_port.run(code)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    rows = [tuple(float(x) for x in line.split()) for line in proc.stdout.splitlines()]
    return [(name, sf7, sf12) for (name, _), (sf7, sf12) in zip(sizes, rows, strict=True)]


def wake_completes(root: Path, firmware_kb: int) -> bool:
    node = VirtualNode(root / f"heap{firmware_kb}", medium=NO_MEDIUM, seed=1)
    node.heap = f"{firmware_kb + node.simulation_heap_kb()}k"
    build.stage(node.flash, board=load_board("virtual"), config=ABP)
    wake = node.wake()
    return wake.kind == "deepsleep" and "Traceback" not in wake.output


def smallest_heap_kb() -> tuple[int, int]:
    """Smallest firmware heap (KB) in which one wake completes; and the simulation's share."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        low, high = 16, int(load_board("virtual")["free_heap_kb"])
        if not wake_completes(root, high):
            raise RuntimeError(f"a wake does not complete in the board's {high} KB")
        while high - low > 2:
            mid = (low + high) // 2
            if wake_completes(root, mid):
                high = mid
            else:
                low = mid
        return high, VirtualNode(root / "probe").simulation_heap_kb()


def bundle_size() -> tuple[int, int, int]:
    with tempfile.TemporaryDirectory() as scratch:
        files = build.compile_app(Path(scratch))
        mpy = sum(f.stat().st_size for f in files)
    source = sum(p.stat().st_size for p in build.app_sources())
    return len(files), mpy, source


def main() -> int:
    sizes = payload_sizes()
    print("Payload of one air-quality reading (PM2.5, PM10, T, RH, p, battery, flags)")
    print(f"  {'format':<22} {'bytes':>5}  {'airtime SF7':>11}  {'airtime SF12':>12}")
    for name, sf7, sf12 in time_on_air_ms(sizes):
        n = dict(sizes)[name]
        print(f"  {name:<22} {n:>5}  {sf7:>8.1f} ms  {sf12:>9.1f} ms")
    print(f"  (airtime of the whole LoRaWAN frame: payload + {LORAWAN_OVERHEAD} bytes, "
          "BW125, CR4/5)")
    files, mpy, source = bundle_size()
    print(f"\nFirmware slot: {files} modules, {mpy / 1024:.1f} KB .mpy "
          f"({source / 1024:.1f} KB source)")
    sys.stdout.flush()
    firmware_kb, sim_kb = smallest_heap_kb()
    print(f"Smallest heap one wake (sensors + ABP uplink + RX windows) completes in: "
          f"{firmware_kb} KB of the board's {load_board('virtual')['free_heap_kb']} KB "
          f"(the simulated hardware's own {sim_kb} KB on top)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
