"""The gateway behind the radio medium's virtual packet forwarders (boards/virtual/medium.py):
two forwarders hear every frame, readings reach the broker once, an ACK comes back on air."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time

import pytest
from allmende.boards.virtual.medium import ForwarderConfig, RadioMedium
from allmende.gateway import lorawan

from tests.gateway.sim import SimNode, Subscriber, expected_values

pytestmark = pytest.mark.slow


def test_virtual_forwarders_to_broker_and_back(broker, gateway_factory):
    node = SimNode.abp(5)
    gw = gateway_factory([node], mqtt_port=broker.port).start()
    subscriber = Subscriber(broker.port, client_id="medium-subscriber")

    async def scenario() -> list[dict]:
        forwarders = [
            ForwarderConfig(eui, "127.0.0.1", gw.udp_port, keepalive_s=0.2)
            for eui in ("aa555a0000000011", "aa555a0000000012")
        ]
        async with RadioMedium(port=0, seed=3, forwarders=forwarders) as medium:
            radio = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            radio.bind(("127.0.0.1", 0))
            radio.setblocking(False)
            await asyncio.sleep(0.5)  # the forwarders' PULL_DATA gives the gateway a route
            loop = asyncio.get_running_loop()
            for i in range(5):
                phy = node.uplink(confirmed=(i == 4))
                message = {
                    "type": "tx",
                    "node": "n5",
                    "freq": 868_100_000,
                    "sf": 7,
                    "bw": 125,
                    "cr": 5,
                    "data": phy.hex(),
                }
                radio.sendto(json.dumps(message).encode(), medium.address)
                await asyncio.sleep(0.05)
            received = []
            deadline = time.monotonic() + 5
            while not received and time.monotonic() < deadline:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(radio, 4096), 0.5)
                except TimeoutError:
                    continue
                received.append(json.loads(data))
            radio.close()
            return received

    try:
        downlinks = asyncio.run(scenario())
        assert downlinks, "no downlink reached the radio"
        rx = downlinks[0]
        assert (rx["type"], rx["freq"], rx["sf"]) == ("rx", 868_100_000, 7)
        frame = lorawan.parse_data_frame(bytes.fromhex(rx["data"]))
        assert frame.ack and lorawan.check_data_mic(frame, node.nwk_s_key, 0)

        keys = {k for f in node.sent for k in node.keys_of(f)}
        assert subscriber.wait_keys(keys) == set()
        time.sleep(0.3)
        with subscriber.lock:
            readings = [r for r in subscriber.readings if r["device"] == node.dev_eui.hex()]
        assert len(readings) == len(keys)  # two forwarders, each reading once
        for r in readings:
            assert math.isclose(
                r["value"], expected_values(node.sent[r["fcnt"]])[r["quantity"]], abs_tol=1e-9
            )
        assert gw.metric("allmende_gateway_duplicate_copies_total") == 5
        assert gw.wait_metric("allmende_gateway_downlinks_total", 1, result="sent") == 1
    finally:
        subscriber.close()
