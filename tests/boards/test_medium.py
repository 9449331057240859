"""The radio medium on its own (CPython): virtual radios are plain UDP sockets here, the
gateways fake GWMP sockets; the forwarders' Semtech UDP v2 behaviour is what is checked."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
from allmende.boards.virtual.medium import ForwarderConfig, Frame, RadioMedium
from allmende.gateway import gwmp

from tests.boards.radio_rig import FakeGateway

EUI_A = "aa555a0000000001"
EUI_B = "aa555a0000000002"
FRAME = bytes.fromhex("40f17dbe4900020001954378762b11ff0d")


class FakeRadio(asyncio.DatagramProtocol):
    """What sim_radio_link does, minus the chip: tx datagrams out, rx datagrams in."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, medium: RadioMedium) -> FakeRadio:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(cls, remote_addr=medium.address)
        proto.transport = transport
        return proto

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(json.loads(data))

    def send(self, node: str, data: bytes = FRAME, **fields: Any) -> None:
        msg = {"type": "tx", "node": node, "freq": 868_100_000, "sf": 7, "bw": 125, "cr": 5}
        msg.update(fields, data=data.hex())
        assert self.transport is not None
        self.transport.sendto(json.dumps(msg).encode())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_two_forwarders_push_one_frame_each_with_its_own_signal() -> None:
    async def scenario() -> None:
        gw_a, gw_b = await FakeGateway.open(), await FakeGateway.open()
        configs = [
            ForwarderConfig(EUI_A, "127.0.0.1", gw_a.port),
            ForwarderConfig(EUI_B, "127.0.0.1", gw_b.port),
        ]
        seen: list[Frame] = []
        async with RadioMedium(seed=7, forwarders=configs) as medium:
            medium.add_listener(seen.append)
            radio = await FakeRadio.open(medium)
            radio.send("node-1")
            frame = await medium.frames.get()
            pushes = [await gw.next(gwmp.PUSH_DATA) for gw in (gw_a, gw_b)]
            await asyncio.sleep(0.1)  # let the PUSH_ACKs arrive
            radio.close()
            for gw, eui, push in zip((gw_a, gw_b), (EUI_A, EUI_B), pushes, strict=True):
                gw.close()
                assert push.gateway_eui == bytes.fromhex(eui)
                raw = push.payload["rxpk"][0]
                assert raw["modu"] == "LORA" and raw["stat"] == 1 and raw["codr"] == "4/5"
                assert raw["datr"] == "SF7BW125" and raw["chan"] == 0 and raw["size"] == 17
                assert raw["time"].endswith("Z")
                rxpk = gwmp.parse_rxpk(raw)
                assert (rxpk.data, rxpk.freq_hz) == (FRAME, 868_100_000)
                assert (rxpk.rssi, rxpk.snr) == medium.link_quality("node-1", eui)
            assert [f.counters.push_acked for f in medium.forwarders] == [1, 1]
        assert seen == [frame] and frame.data == FRAME and frame.node == "node-1"
        # Two gateways hear the node differently, and the same way on every run.
        assert medium.link_quality("node-1", EUI_A) != medium.link_quality("node-1", EUI_B)
        assert RadioMedium(seed=7).link_quality("node-1", EUI_A) == medium.link_quality(
            "node-1", EUI_A
        )

    run(scenario())


def test_keepalive_and_stat() -> None:
    async def scenario() -> None:
        gw = await FakeGateway.open()
        config = ForwarderConfig(
            EUI_A, "127.0.0.1", gw.port, keepalive_s=0.05, stat_interval_s=0.2,
            location=(49.87, 8.65, 140),
        )  # fmt: skip
        async with RadioMedium(forwarders=[config]) as medium:
            radio = await FakeRadio.open(medium)
            radio.send("n")
            await gw.next(gwmp.PUSH_DATA, where=lambda p: "rxpk" in p.payload)
            stat = await gw.next(gwmp.PUSH_DATA, where=lambda p: "stat" in p.payload)
            await gw.next(gwmp.PULL_DATA)
            await gw.next(gwmp.PULL_DATA)
            counters = medium.forwarders[0].counters
            radio.close()
        gw.close()
        s = stat.payload["stat"]
        assert (s["rxnb"], s["rxok"], s["rxfw"], s["ackr"]) == (1, 1, 1, 100.0)
        assert (s["lati"], s["long"], s["alti"]) == (49.87, 8.65, 140)
        assert s["time"].endswith(" GMT")
        assert counters.pull_acked >= 1 and medium.forwarders[0].last_pull_ack is not None

    run(scenario())


def test_pull_resp_scheduling_and_tx_ack_errors() -> None:
    async def scenario() -> None:
        gw = await FakeGateway.open()
        config = ForwarderConfig(EUI_A, "127.0.0.1", gw.port, keepalive_s=0.1)
        async with RadioMedium(forwarders=[config]) as medium:
            radio = await FakeRadio.open(medium)
            radio.send("n1")  # the medium learns where the radio is
            rxpk = gwmp.parse_rxpk((await gw.next(gwmp.PUSH_DATA)).payload["rxpk"][0])
            await gw.next(gwmp.PULL_DATA)

            async def answer(token: int, txpk: dict[str, Any]) -> str:
                gw.send_down(gwmp.pull_resp(token, txpk))
                ack = await gw.next(gwmp.TX_ACK, where=lambda p: p.token == token)
                assert ack.gateway_eui == bytes.fromhex(EUI_A)
                return gwmp.tx_ack_error(ack)

            def txpk(tmst: int | None, freq: int = 869_525_000) -> dict[str, Any]:
                return gwmp.build_txpk(b"\x60down", freq_hz=freq, sf=9, bw_khz=125, tmst=tmst)

            rx1 = rxpk.tmst + 1_000_000
            assert await answer(1, txpk(rx1)) == "NONE"
            assert await answer(2, txpk(rx1 + 10_000)) == "COLLISION_PACKET"
            assert await answer(3, txpk(rxpk.tmst - 1_000_000)) == "TOO_LATE"
            assert await answer(4, txpk(rxpk.tmst + 60_000_000)) == "TOO_EARLY"
            assert await answer(5, txpk(rx1 + 500_000, freq=915_000_000)) == "TX_FREQ"
            gps = dict(txpk(None), tim=1_400_000_000.0)
            del gps["imme"]
            assert await answer(6, gps) == "GPS_UNLOCKED"
            gw.send_down(gwmp.pull_resp(7, {"freq": 869.525}))  # no data, no datr
            assert await answer(8, txpk(None, freq=869_100_000)) == "NONE"  # imme

            first = await radio.received.get()  # imme goes out at once
            second = await radio.received.get()  # then the one for RX1
            counters = medium.forwarders[0].counters
            radio.close()
        gw.close()
        assert (first["type"], first["freq"], first["sf"], first["bw"]) == (
            "rx",
            869_100_000,
            9,
            125,
        )
        assert (second["freq"], bytes.fromhex(second["data"])) == (869_525_000, b"\x60down")
        assert second["ipol"] is True and second["node"] == "n1"
        assert (second["rssi"], second["snr"]) == medium.link_quality("n1", EUI_A)
        assert counters.tx_ack == {
            "NONE": 2, "COLLISION_PACKET": 1, "TOO_LATE": 1, "TOO_EARLY": 1, "TX_FREQ": 1,
            "GPS_UNLOCKED": 1, "malformed": 1,
        }  # fmt: skip
        assert counters.downlinks_sent == 2 and [d.source for d in medium.delivered] == [EUI_A] * 2

    run(scenario())


def test_unacknowledged_push_is_retried_then_counted_lost() -> None:
    async def scenario() -> None:
        gw = await FakeGateway.open(ack=False)
        config = ForwarderConfig(EUI_A, "127.0.0.1", gw.port, push_timeout_s=0.05, push_retries=2)
        async with RadioMedium(forwarders=[config]) as medium:
            radio = await FakeRadio.open(medium)
            radio.send("n")
            for _ in range(3):
                await gw.next(gwmp.PUSH_DATA)
            while not medium.forwarders[0].counters.push_failed:
                await asyncio.sleep(0.02)
            counters = medium.forwarders[0].counters
            radio.close()
        gw.close()
        assert (counters.push_sent, counters.push_acked, counters.push_failed) == (3, 0, 1)

    run(scenario())


def test_loss_and_what_a_gateway_cannot_hear() -> None:
    async def scenario() -> None:
        gw_a, gw_b = await FakeGateway.open(), await FakeGateway.open()
        configs = [
            ForwarderConfig(EUI_A, "127.0.0.1", gw_a.port, uplink_loss=1.0),
            ForwarderConfig(EUI_B, "127.0.0.1", gw_b.port),
        ]
        async with RadioMedium(forwarders=configs) as medium:
            radio = await FakeRadio.open(medium)
            radio.send("n", b"inverted", ipol=True)  # a node's bug: no gateway decodes it
            radio.send("n", b"private", sync=0x12)  # private network sync word
            radio.send("n", b"narrow", bw=62.5)  # not a LoRaWAN EU868 bandwidth
            radio.send("n", b"garbage", freq="x")
            radio.send("n", b"heard")
            frames = [await medium.frames.get() for _ in range(4)]
            push = await gw_b.next(gwmp.PUSH_DATA)
            await asyncio.sleep(0.1)
            radio.close()
            counters = [f.counters for f in medium.forwarders]
        gw_a.close()
        gw_b.close()
        assert [f.data for f in frames] == [b"inverted", b"private", b"narrow", b"heard"]
        assert (frames[0].ipol, frames[1].sync, frames[2].bw) == (True, 0x12, 62.5)
        assert medium.rejected == 1
        assert gwmp.parse_rxpk(push.payload["rxpk"][0]).data == b"heard"
        assert (counters[0].rx_lost, counters[0].push_sent) == (1, 0)
        assert (counters[1].rx_forwarded, counters[1].push_acked) == (1, 1)

    run(scenario())


def test_send_downlink_reaches_every_known_radio() -> None:
    async def scenario() -> None:
        async with RadioMedium() as medium:
            radios = [await FakeRadio.open(medium) for _ in range(2)]
            for i, radio in enumerate(radios):
                radio.send(f"n{i}")
            for _ in radios:
                await medium.frames.get()
            medium.send_downlink(b"all", 869_525_000, 12, 125, crc_error=True)
            got = [await r.received.get() for r in radios]
            for radio in radios:
                radio.close()
        assert [g["node"] for g in got] == ["n0", "n1"]
        assert all(bytes.fromhex(g["data"]) == b"all" and g["crc_error"] for g in got)
        assert medium.delivered[0].nodes == ("n0", "n1")

    run(scenario())


def test_forwarder_spec_parsing() -> None:
    config = ForwarderConfig.parse("AA555A0000000001=localhost:1700")
    assert (config.eui, config.host, config.port) == (EUI_A, "localhost", 1700)
    with pytest.raises(ValueError, match="EUI=HOST:PORT"):
        ForwarderConfig.parse("aa555a0000000001")
    with pytest.raises(ValueError, match="8 bytes"):
        ForwarderConfig("aa55", "h", 1)


def test_command_line_runs_a_forwarder() -> None:
    async def scenario() -> None:
        gw = await FakeGateway.open()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "allmende.boards.virtual.medium", "--port", "0",
            "--forwarder", f"{EUI_A}=127.0.0.1:{gw.port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            hello = json.loads(await proc.stdout.readline())
            assert hello["forwarders"] == [EUI_A]
            host, port = hello["medium"]
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=(host, port)
            )
            msg = {"type": "tx", "node": "cli", "freq": 868_300_000, "sf": 12, "bw": 125,
                   "cr": 5, "data": FRAME.hex()}  # fmt: skip
            transport.sendto(json.dumps(msg).encode())
            push = await gw.next(gwmp.PUSH_DATA)
            printed = json.loads(await proc.stdout.readline())
            transport.close()
        finally:
            proc.terminate()
            await proc.wait()
            gw.close()
        rxpk = gwmp.parse_rxpk(push.payload["rxpk"][0])
        assert (rxpk.data, rxpk.freq_hz, rxpk.sf, rxpk.chan) == (FRAME, 868_300_000, 12, 1)
        assert printed["node"] == "cli" and printed["data"] == FRAME.hex()

    run(scenario())


def test_forwarder_cli_failures_are_plain_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "allmende.boards.virtual.medium", "--forwarder", "nonsense"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and "EUI=HOST:PORT" in proc.stdout
