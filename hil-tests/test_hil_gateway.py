"""The whole uplink path with the node's own firmware: a node flashed by `allmende node
flash` on a virtual board -> the radio medium's virtual Semtech packet forwarder -> a real
gateway process -> Mosquitto. Its readings arrive decoded, with the frame counter and the
session they were sent in."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from allmende.boards.virtual.pty_board import PtyBoard

if TYPE_CHECKING:  # the fixture's type, from this suite's conftest
    from conftest import HilBoard

NODE = {
    "device": "hil-gateway-node",
    "dev_eui": "70B3D57ED000F003",
    "activation": "abp",
    "dev_addr": "26011F03",
    "nwk_s_key": "11223344556677889900AABBCCDDEEFF",
    "app_s_key": "FFEEDDCCBBAA00998877665544332211",
    "interval_s": 1,
    "sds011": {"warmup_s": 0, "samples": 1},
}


@pytest.mark.hears_the_air
@pytest.mark.slow
def test_readings_of_a_flashed_node_reach_the_broker_through_a_real_gateway(
        board: HilBoard, tmp_path: Path) -> None:
    from tests.fixtures.services import run_mosquitto
    from tests.gateway.sim import (
        GatewayProcess,
        Subscriber,
        abp_session_id,
        free_tcp_port,
        free_udp_port,
        write_config,
    )

    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps({"devices": [{
        "dev_eui": NODE["dev_eui"].lower(), "kind": "air_quality", "fw": "0.1.0",
        "dev_addr": NODE["dev_addr"].lower(), "nwk_s_key": NODE["nwk_s_key"].lower(),
        "app_s_key": NODE["app_s_key"].lower()}]}))
    bundle = tmp_path / "node.json"
    bundle.write_text(json.dumps(NODE))
    with run_mosquitto(tmp_path / "mosquitto") as broker:
        udp, metrics = free_udp_port(), free_tcp_port()
        config = write_config(tmp_path, udp_port=udp, mqtt_port=broker.port,
                              metrics_port=metrics, devices=devices)
        gateway = GatewayProcess(config, metrics, tmp_path / "gateway.log").start()
        medium_port = free_udp_port()
        medium = subprocess.Popen(
            [sys.executable, "-m", "allmende.boards.virtual.medium", "--port", str(medium_port),
             "--forwarder", f"aa555a0000000001=127.0.0.1:{udp}", "--keepalive", "0.5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subscriber = Subscriber(broker.port, client_id="hil-gateway-subscriber")
        try:
            with PtyBoard(tmp_path / "node", medium=("127.0.0.1", medium_port)) as node:
                assert node.port
                # The CO2 sensor's 5 s single-shot measurement would only slow the wakes.
                node.node.set_faults({"scd4x": "nack"})
                assert board.node("flash", "--board", "virtual", "--port", node.port,
                                  "--bundle", str(bundle)) == 0
                subprocess.run([sys.executable, "-m", "mpremote", "connect", node.port, "reset"],
                               check=True, capture_output=True, timeout=60)
                deadline = time.monotonic() + 90
                mine: list[dict[str, object]] = []
                while len({r["fcnt"] for r in mine}) < 2:
                    assert time.monotonic() < deadline, (
                        f"no readings; gateway log:\n{gateway.log()[-2000:]}")
                    time.sleep(0.1)
                    with subscriber.lock:
                        mine = [r for r in subscriber.readings
                                if str(r["device"]).upper() == NODE["dev_eui"]]
        finally:
            subscriber.close()
            medium.terminate()
            medium.wait(10)
            gateway.stop()
    quantities = {r["quantity"] for r in mine}
    assert {"PM2.5", "PM10"} <= quantities, quantities
    session = abp_session_id(int(NODE["dev_addr"], 16), bytes.fromhex(NODE["nwk_s_key"]),
                             bytes.fromhex(NODE["app_s_key"]))
    assert {r["session"] for r in mine} == {session}
    counters = sorted({int(str(r["fcnt"])) for r in mine})
    assert counters[1] == counters[0] + 1
    assert len({r["key"] for r in mine}) == len(mine)  # one reading per key, no duplicates
