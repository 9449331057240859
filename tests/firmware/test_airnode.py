"""A virtual air-quality node, end to end over the radio medium, on the unix port at 100 KB.

The test is the network: it answers the OTAA join and decodes every uplink with the
gateway's CPython LoRaWAN code (the `cryptography` package), independently of the
firmware's MicroPython MAC, and compares what arrives with what the simulated world was.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from allmende.boards import load_board
from allmende.boards.virtual.medium import Frame, RadioMedium
from allmende.boards.virtual.node import VirtualNode
from allmende.firmware import build
from allmende.firmware.app import payload
from allmende.gateway import lorawan

pytestmark = pytest.mark.slow

DEV_EUI = bytes.fromhex("70b3d57ed0000a01")
JOIN_EUI = bytes.fromhex("70b3d57ed0000000")
APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
DEV_ADDR = 0x260B1234
NET_ID = 0x000013

# Tolerance per field: half the payload's step plus the sensor's own resolution.
TOLERANCE = {"pm25": 0.05, "pm10": 0.05, "temperature": 0.006, "humidity": 0.26,
             "pressure": 0.06, "battery": 0.011, "co2": 0.5}


def matches(decoded: dict[str, Any], world: dict[str, Any]) -> bool:
    """Every field of the uplink equals the simulated world within the tolerance."""
    return all(abs(decoded[name] - world[name]) <= tol for name, tol in TOLERANCE.items())


def node_config(**overrides: Any) -> dict[str, Any]:
    cfg = {
        "dev_eui": DEV_EUI.hex(),
        "join_eui": JOIN_EUI.hex(),
        "app_key": APP_KEY.hex(),
        "interval_s": 2,
        "sds011": {"warmup_s": 2, "samples": 3},
    }
    cfg.update(overrides)
    return cfg


class NetworkUnderTest:
    """Join server and uplink decoder for one device, driven by the medium's frames."""

    def __init__(self, medium: RadioMedium) -> None:
        self.medium = medium
        self.keys: tuple[bytes, bytes] | None = None
        self.dev_nonces: list[int] = []
        self.uplinks: list[dict[str, Any]] = []
        self.fcnt: int | None = None
        self.frames: list[Frame] = []

    def on_frame(self, frame: Frame, truth: list[dict[str, Any]]) -> None:
        self.frames.append(frame)
        mtype = lorawan.mtype_of(frame.data)
        if mtype == lorawan.JOIN_REQUEST:
            self._join(frame)
        elif self.keys is not None:
            self._uplink(frame, truth)

    def _join(self, frame: Frame) -> None:
        request = lorawan.parse_join_request(frame.data)
        assert lorawan.check_join_request_mic(request, APP_KEY)
        self.dev_nonces.append(request.dev_nonce)
        app_nonce = secrets.randbits(24)
        self.keys = lorawan.derive_session_keys(
            APP_KEY, app_nonce=app_nonce, net_id=NET_ID, dev_nonce=request.dev_nonce
        )
        self.fcnt = None
        accept = lorawan.build_join_accept(
            APP_KEY, app_nonce=app_nonce, net_id=NET_ID, dev_addr=DEV_ADDR
        )
        # RX1 of a join: JOIN_ACCEPT_DELAY1 = 5 s after the request, same channel and DR.
        self.medium.send_downlink(accept, frame.freq, frame.sf, frame.bw, frame.time + 5.0)

    def _uplink(self, frame: Frame, truth: list[dict[str, Any]]) -> None:
        assert self.keys is not None
        nwk_s_key, app_s_key = self.keys
        data = lorawan.parse_data_frame(frame.data)
        assert data.dev_addr == DEV_ADDR
        fcnt = lorawan.reconstruct_fcnt(self.fcnt, data.fcnt16)
        assert lorawan.check_data_mic(data, nwk_s_key, fcnt), "uplink MIC does not verify"
        assert self.fcnt is None or fcnt > self.fcnt, "frame counter reused"
        self.fcnt = fcnt
        plain = lorawan.decrypt_data_payload(data, nwk_s_key, app_s_key, fcnt)
        assert data.fport is not None
        self.uplinks.append(
            {"fcnt": fcnt, "decoded": payload.decode(data.fport, plain), "truth": list(truth)}
        )


async def collect(node: VirtualNode, network: NetworkUnderTest, wanted: int) -> None:
    """Lets the node live until the network has `wanted` uplinks in all; fails on a crash."""
    node.start()
    deadline = time.monotonic() + 240
    try:
        while len(network.uplinks) < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            crashed = [w for w in node.wakes if w.kind != "deepsleep" or "Traceback" in w.output]
            assert not crashed, crashed[0].output
    finally:
        await asyncio.to_thread(node.stop)


async def run_node(
    tmp_path: Path, wanted_uplinks: int, **sim: Any
) -> tuple[NetworkUnderTest, VirtualNode]:
    async with RadioMedium(seed=3) as medium:
        node = VirtualNode(tmp_path, medium=medium.address, seed=42, **sim)
        build.stage(node.flash, board=load_board("virtual"), config=node_config())
        network = NetworkUnderTest(medium)
        medium.add_listener(lambda frame: network.on_frame(frame, node.truth()))
        await collect(node, network, wanted_uplinks)
    return network, node


def test_node_joins_and_its_uplinks_carry_the_simulated_values(tmp_path: Path) -> None:
    network, node = asyncio.run(run_node(tmp_path, 3))
    # One join is the rule; a join-accept missed on a loaded machine means another request,
    # and then its DevNonce must be new.
    assert network.dev_nonces and network.dev_nonces == sorted(set(network.dev_nonces))
    assert len(network.uplinks) >= 3, [w.output for w in node.wakes]
    for uplink in network.uplinks:
        decoded = uplink["decoded"]
        assert all(decoded[name] is not None for name in TOLERANCE), decoded
        # The world of the wake that measured: usually the latest, but an uplink the duty
        # cycle deferred goes out in a later wake, after that wake's world was drawn.
        assert any(matches(decoded, world) for world in uplink["truth"]), (decoded, uplink["truth"])
        faults = payload.FLAG_PM_FAULT | payload.FLAG_CLIMATE_FAULT | payload.FLAG_CO2_FAULT
        assert decoded["flags"] & faults == 0
    fcnts = [u["fcnt"] for u in network.uplinks]
    assert fcnts == sorted(set(fcnts))
    # The interval (2 s) asks for more than the duty cycle allows: the three default
    # channels share one 1 % sub-band, so after each frame the node holds back 99 times its
    # airtime before the next one starts.
    frames = network.frames
    for before, after in zip(frames, frames[1:], strict=False):
        quiet = (after.time - after.airtime_s()) - before.time
        assert quiet >= 99 * before.airtime_s() * 0.98, (before, after, quiet)


def test_frame_counter_survives_a_power_cut_without_a_new_join(tmp_path: Path) -> None:
    async def scenario() -> NetworkUnderTest:
        async with RadioMedium(seed=5) as medium:
            node = VirtualNode(tmp_path, medium=medium.address, seed=7)
            build.stage(node.flash, board=load_board("virtual"), config=node_config())
            network = NetworkUnderTest(medium)
            medium.add_listener(lambda frame: network.on_frame(frame, node.truth()))
            await collect(node, network, 2)
            joins_before = len(network.dev_nonces)
            await asyncio.to_thread(node.power_cut)  # RTC memory lost: only flash remains
            await collect(node, network, 3)
            assert len(network.dev_nonces) == joins_before, "the session came back from flash"
        return network

    network = asyncio.run(scenario())
    fcnts = [u["fcnt"] for u in network.uplinks]
    assert fcnts == sorted(set(fcnts)), f"a frame counter was reused: {fcnts}"


def test_faulty_sensors_give_flags_not_values(tmp_path: Path) -> None:
    network, node = asyncio.run(
        run_node(tmp_path, 1, faults={"sds011": "bad_checksum", "bme280": "nack"})
    )
    decoded = network.uplinks[0]["decoded"]
    assert decoded["flags"] & payload.FLAG_PM_FAULT
    assert decoded["flags"] & payload.FLAG_CLIMATE_FAULT
    assert decoded["pm25"] is None and decoded["pm10"] is None
    assert decoded["temperature"] is None and decoded["pressure"] is None
    assert any(abs(decoded["co2"] - w["co2"]) <= 0.5 for w in network.uplinks[0]["truth"])
    assert json.dumps(decoded)  # plain data for the gateway
