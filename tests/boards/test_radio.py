"""The LoRa radio, real and virtual: the firmware's SX127x/SX126x drivers on the unix port
(heap capped at 100 KB) against the simulated chips, through the radio medium."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from allmende.boards.virtual.medium import ForwarderConfig, RadioMedium, time_on_air_us
from allmende.gateway import gwmp

from tests.boards.radio_rig import (
    Compiled,
    FakeGateway,
    bench_code,
    board_state,
    compile_all,
    env_has_unix_port,
    radio_code,
    run_node,
)

pytestmark = pytest.mark.skipif(not env_has_unix_port(), reason="needs the MicroPython unix port")

BOARDS = {"sx1276": "virtual", "sx1262": "heltec-v3"}
UPLINK = bytes.fromhex("40f17dbe4900020001954378762b11ff0d")
DOWNLINK = bytes.fromhex("60f17dbe4980000001a1b2c3d4")
EUI_A = "aa555a0000000001"
EUI_B = "aa555a0000000002"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    return compile_all(tmp_path_factory.mktemp("mpy"))


# Uplink, then one RX window, as the MAC does (but with a generous window).
TX_THEN_RX = """
radio.transmit(bytes.fromhex({up!r}), 868100000, 7, 125)
report(sent=True)
data = radio.receive({rx_freq}, {rx_sf}, 125, {window})
report(data=None if data is None else data.hex(), rssi=radio.last_rssi, snr=radio.last_snr)
radio.sleep()
"""


def _tx_then_rx(
    board: dict, *, rx_freq: int = 869_525_000, rx_sf: int = 9, window: int = 4000
) -> str:
    return radio_code(board) + TX_THEN_RX.format(
        up=UPLINK.hex(), rx_freq=rx_freq, rx_sf=rx_sf, window=window
    )


@pytest.mark.parametrize("chip", sorted(BOARDS))
def test_uplink_reaches_medium_and_downlink_reaches_driver(
    compiled: Compiled, tmp_path: Path, chip: str
) -> None:
    async def scenario() -> None:
        async with RadioMedium(seed=3) as medium:
            state, board = board_state(
                tmp_path, BOARDS[chip], medium=medium.address, node_id="0242ac0000aa"
            )
            node = asyncio.create_task(run_node(compiled, _tx_then_rx(board), state=state))
            frame = await asyncio.wait_for(medium.frames.get(), 20)
            assert (frame.node, frame.freq, frame.sf, frame.bw, frame.cr) == (
                "0242ac0000aa", 868_100_000, 7, 125, 5,
            )  # fmt: skip
            assert frame.data == UPLINK and not frame.ipol and frame.sync == 0x34
            # RX2-like downlink, half a second after the uplink ended.
            medium.send_downlink(DOWNLINK, 869_525_000, 9, 125, frame.time + 0.5)
            results = await node
        assert results[0] == {"sent": True}
        rssi, snr = medium.link_quality("0242ac0000aa", "medium")
        assert results[1]["data"] == DOWNLINK.hex()
        assert results[1]["snr"] == snr
        assert abs(results[1]["rssi"] - rssi) <= 1  # SX127x reports whole dB
        assert medium.delivered[0].nodes == ("0242ac0000aa",)

    asyncio.run(scenario())


@pytest.mark.parametrize("chip", sorted(BOARDS))
def test_receiver_ignores_other_channels_and_normal_iq(
    compiled: Compiled, tmp_path: Path, chip: str
) -> None:
    """Only a frame on the window's frequency/SF with inverted IQ is received."""

    async def scenario() -> None:
        async with RadioMedium() as medium:
            state, board = board_state(tmp_path, BOARDS[chip], medium=medium.address, node_id="n1")
            code = _tx_then_rx(board, rx_freq=868_100_000, rx_sf=7, window=1500)
            node = asyncio.create_task(run_node(compiled, code, state=state))
            frame = await asyncio.wait_for(medium.frames.get(), 20)
            at = frame.time + 0.3
            medium.send_downlink(b"wrong-freq", 868_300_000, 7, 125, at)
            medium.send_downlink(b"wrong-sf", 868_100_000, 8, 125, at + 0.1)
            medium.send_downlink(b"uplink-iq", 868_100_000, 7, 125, at + 0.2, ipol=False)
            results = await node
        assert results[1]["data"] is None

    asyncio.run(scenario())


@pytest.mark.parametrize("chip", sorted(BOARDS))
def test_pull_resp_from_gateway_reaches_radio_and_is_acked(
    compiled: Compiled, tmp_path: Path, chip: str
) -> None:
    """Driver -> medium -> forwarder PUSH_DATA; gateway PULL_RESP at tmst+0.5 s -> driver."""

    async def scenario() -> None:
        gateway = await FakeGateway.open()
        config = ForwarderConfig(EUI_A, "127.0.0.1", gateway.port, keepalive_s=0.2)
        async with RadioMedium(forwarders=[config]) as medium:
            state, board = board_state(tmp_path, BOARDS[chip], medium=medium.address, node_id="n2")
            node = asyncio.create_task(run_node(compiled, _tx_then_rx(board), state=state))
            push = await gateway.next(gwmp.PUSH_DATA)
            rxpk = gwmp.parse_rxpk(push.payload["rxpk"][0])
            assert (rxpk.data, rxpk.freq_hz, rxpk.sf, rxpk.bw_khz) == (UPLINK, 868_100_000, 7, 125)
            await gateway.next(gwmp.PULL_DATA)
            txpk = gwmp.build_txpk(
                DOWNLINK, freq_hz=869_525_000, sf=9, bw_khz=125, tmst=rxpk.tmst + 500_000
            )
            gateway.send_down(gwmp.pull_resp(0x4242, txpk))
            ack = await gateway.next(gwmp.TX_ACK)
            results = await node
        gateway.close()
        assert ack.token == 0x4242 and gwmp.tx_ack_error(ack) == "NONE"
        assert results[1]["data"] == DOWNLINK.hex()
        assert results[1]["snr"] == medium.link_quality("n2", EUI_A)[1]

    asyncio.run(scenario())


@pytest.mark.parametrize("chip", sorted(BOARDS))
def test_chip_absent_raises_radio_error(compiled: Compiled, tmp_path: Path, chip: str) -> None:
    # No medium in sim.json: the virtual board wires no radio, MISO floats high.
    state, board = board_state(tmp_path, BOARDS[chip], medium=None, node_id="n3")
    results = asyncio.run(run_node(compiled, radio_code(board), state=state))
    assert results[0]["error"] == "RadioError"
    assert "not found" in results[0]["message"]


def test_sx127x_wrong_version_names_the_chip(compiled: Compiled) -> None:
    code = bench_code("sx127x", "sim_sx127x.SX127xSim(None, version=0x22)")
    results = asyncio.run(run_node(compiled, code, bench=True))
    assert results[0]["error"] == "RadioError"
    assert "0x22" in results[0]["message"] and "SX1272" in results[0]["message"]


def test_sx126x_tcxo_not_powered_is_reported(compiled: Compiled) -> None:
    """A TCXO board driven as if it had a crystal: the oscillator error surfaces at init."""
    code = bench_code("sx126x", "sim_sx126x.SX126xSim(None, tcxo=True)", driver_tcxo=False)
    results = asyncio.run(run_node(compiled, code, bench=True))
    assert results[0]["error"] == "RadioError"
    assert "oscillator" in results[0]["message"]


BENCH_CYCLE = """
for i in range(3):
    radio.transmit(bytes([i]) * 20, 868100000, 7, 125)
    radio.sleep()
radio.tx_power_dbm = 20
radio.transmit(b"max power", 868500000, 12, 125)
report(nothing=radio.receive(869525000, 12, 125, 50))
report(sent=chip.modem.frames_sent, ignored=getattr(chip, "ignored_commands", 0))
"""


@pytest.mark.parametrize(
    ("chip", "args", "tcxo"),
    [
        ("sx127x", "sim_sx127x.SX127xSim(None)", False),
        ("sx126x", "sim_sx126x.SX126xSim(None, tcxo=True)", True),
    ],
)
def test_driver_cycles_respect_the_chip(
    compiled: Compiled, chip: str, args: str, tcxo: bool
) -> None:
    """TX/sleep/RX cycles; the SX126x saw no command while BUSY was high."""
    code = bench_code(chip, args, driver_tcxo=tcxo) + BENCH_CYCLE
    results = asyncio.run(run_node(compiled, code, bench=True))
    assert results == [{"nothing": None}, {"sent": 4, "ignored": 0}]


def test_time_on_air_matches_the_semtech_formula() -> None:
    # 13-byte LoRaWAN frame: 46.336 ms at SF7/125 kHz, 1155.072 ms at SF12 (LDRO on).
    assert time_on_air_us(7, 125, 5, 13) == 46_336
    assert time_on_air_us(12, 125, 5, 13) == 1_155_072
    assert time_on_air_us(9, 125, 5, 13, 8, False) < time_on_air_us(9, 125, 5, 13)
