"""The virtual board's life: deep sleep keeps RTC memory, a power cut loses it, the watchdog
resets a hung board, and reset causes are reported like on an ESP32."""

from __future__ import annotations

from pathlib import Path

import pytest
from allmende.boards.virtual.node import (
    DEEPSLEEP_RESET,
    HARD_RESET,
    PWRON_RESET,
    WDT_RESET,
    VirtualNode,
)

COUNTER = """
import machine
r = machine.RTC()
m = r.memory()
n = m[0] + 1 if m else 1
r.memory(bytes([n]))
print(machine.reset_cause(), n)
{action}
"""


def _node(tmp_path: Path, action: str) -> VirtualNode:
    node = VirtualNode(tmp_path)
    (node.flash / "main.py").write_text(COUNTER.format(action=action))
    return node


def _seen(node: VirtualNode) -> tuple[int, int]:
    cause, count = node.wakes[-1].output.split()[:2]
    return int(cause), int(count)


def test_deep_sleep_keeps_rtc_memory_and_power_cut_loses_it(tmp_path: Path) -> None:
    node = _node(tmp_path, "machine.deepsleep(50)")
    assert node.wake().kind == "deepsleep"
    assert _seen(node) == (PWRON_RESET, 1)
    node.wake()
    assert _seen(node) == (DEEPSLEEP_RESET, 2)
    assert node.wakes[-1].sleep_ms == 50
    node.power_cut()
    node.wake()
    assert _seen(node) == (PWRON_RESET, 1)


def test_reset_and_crash_keep_rtc_memory(tmp_path: Path) -> None:
    node = _node(tmp_path, "raise ValueError('driver bug')")
    wake = node.wake()
    assert wake.kind == "crash" and "ValueError: driver bug" in wake.output
    node.wake()
    assert _seen(node) == (HARD_RESET, 2)


@pytest.mark.slow
def test_watchdog_resets_a_hung_board(tmp_path: Path) -> None:
    node = _node(tmp_path, "w = machine.WDT(timeout=300)\nwhile True: pass")
    assert node.wake().kind == "watchdog"
    node.wake()
    assert _seen(node)[0] == WDT_RESET


def test_buses_without_a_device_behave_like_empty_hardware(tmp_path: Path) -> None:
    code = (
        "i2c = machine.I2C(0)\n"
        "try:\n"
        "    i2c.readfrom_mem(0x50, 0, 1)\n"
        "except OSError as e:\n"
        "    print('nack', e.errno)\n"
        "print('scan', i2c.scan() == sorted(i2c.scan()))\n"
    )
    node = _node(tmp_path, code)
    out = node.wake().output
    assert "nack 19" in out  # ENODEV, as the ESP32 port reports a missing ACK
