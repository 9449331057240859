"""Frame counters survive deep sleep, a hard reset and a power cut: the node's uplinks, heard
on the virtual radio medium, never reuse a counter and continue across deep sleep and reset."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the fixture's type, from this suite's conftest
    from conftest import HilBoard

ABP = {
    "device": "hil-abp-node",
    "dev_eui": "70B3D57ED000F002",
    "activation": "abp",
    "dev_addr": "26011F02",
    "nwk_s_key": "2B7E151628AED2A6ABF7158809CF4F3C",
    "app_s_key": "3C4FCF098815F7ABA6D2AE2816157E2B",
    "interval_s": 1,
    "sds011": {"warmup_s": 0, "samples": 1},
}


def _uplinks(air: socket.socket, count: int, timeout: float = 90) -> list[int]:
    """Frame counters of the next `count` data uplinks the node puts on the air."""
    counters: list[int] = []
    deadline = time.monotonic() + timeout
    air.settimeout(0.2)
    while len(counters) < count:
        assert time.monotonic() < deadline, f"heard only {counters}"
        try:
            datagram, _ = air.recvfrom(4096)
        except TimeoutError:
            continue
        message = json.loads(datagram)
        frame = bytes.fromhex(message.get("data", ""))
        if message.get("type") == "tx" and len(frame) >= 8 and frame[0] >> 5 in (2, 4):
            assert frame[1:5] == bytes.fromhex(ABP["dev_addr"])[::-1]
            counters.append(int.from_bytes(frame[6:8], "little"))
    return counters


def _drain(air: socket.socket) -> None:
    air.settimeout(0)
    try:
        while True:
            air.recvfrom(4096)
    except BlockingIOError:
        pass


@pytest.mark.hears_the_air
@pytest.mark.fault_injection
def test_frame_counter_continues_across_deep_sleep_reset_and_power_cut(
        board: HilBoard, tmp_path: Path) -> None:
    virtual, air = board.virtual, board.air
    assert virtual is not None and air is not None
    # The CO2 sensor's 5 s single-shot measurement would only make each wake slower.
    virtual.node.set_faults({"scd4x": "nack"})  # type: ignore[attr-defined]
    bundle = tmp_path / "abp.json"
    bundle.write_text(json.dumps(ABP))
    try:
        assert board.node("flash", "--board", board.type, "--port", board.port, "--bundle",
                          str(bundle), "--reprovision") == 0
        _drain(air)
        board.mpremote("reset")  # the firmware runs: wake, measure, uplink, deep sleep
        first, after_sleep = _uplinks(air, 2)
        assert after_sleep == first + 1  # across deep sleep (RTC memory)
        board.mpremote("reset")
        (after_reset,) = _uplinks(air, 1)
        assert after_reset == after_sleep + 1  # across a hard reset
        virtual.power_cut()  # type: ignore[attr-defined]
        (after_cut,) = _uplinks(air, 1)
        assert after_cut > after_reset  # RTC memory lost: the flash mirror still never reuses
    finally:
        virtual.node.set_faults({})  # type: ignore[attr-defined]
