"""The serial LoRa modem path: the bridge firmware under MicroPython, and the gateway talking
to a bridge over a pty through pyserial."""

from __future__ import annotations

import json
import os
import select
import time
from pathlib import Path

import pytest
from allmende.boards.virtual import unix_port
from allmende.firmware.bridge import protocol
from allmende.gateway import lorawan

from tests.gateway.sim import REPO, SimNode

BRIDGE = REPO / "firmware" / "bridge"
APP = REPO / "firmware" / "app"

# Runs in MicroPython: the real bridge with a scripted radio and a hand-driven clock.
BRIDGE_SCRIPT = r"""
import json
import bridge

class Radio:
    def __init__(self):
        self.frames = [b"\x40\x01\x02\x03\x04\x00\x01\x00\xaa\xbb\xcc\xdd"]
        self.sent = []
        self.configured = []
        self.last_rssi = -70.5
        self.last_snr = 6.25
        self.tx_power_dbm = 14
    def _configure(self, freq, sf, bw, rx):
        self.configured.append(rx)
    def receive(self, freq, sf, bw, timeout_ms):
        self._configure(freq, sf, bw, True)
        clock.t += timeout_ms * 1000
        return self.frames.pop(0) if self.frames else None
    def transmit(self, data, freq, sf, bw):
        self._configure(freq, sf, bw, False)
        self.sent.append([clock.t, data.hex(), freq, sf, bw, self.tx_power_dbm])

class Clock:
    t = 1000000
    def now(self):
        return self.t & 0xFFFFFFFF
    def wait_until(self, tmst):
        self.t = max(self.t, tmst)

clock = Clock()
radio = bridge.gateway_mode(Radio())
out = []
b = bridge.Bridge(radio, out.append, chip="sx1276", clock=clock)
b.hello()
b.feed("CFG 868300000 9 125\nPING\n")
b.step()
b.feed("TX 7 %d 868300000 9 125 16 a0b1\n" % (clock.t + 1000000))
b.feed("TX 8 %d 868300000 9 125 16 a0b1\n" % (clock.t - 10))
b.feed("TX 9 %d 868300000 9 125 16 a0b1\n" % (clock.t + 60000000))
b.feed("TX 10 %d 868300000 9 125 16 a0b1\n" % (clock.t + 1000100))
b.feed("TX 11 now 869525000 12 125 27 c0\nBOGUS line\nTX 12 1 2 3\n")
for _ in range(60):
    b.step()
print(json.dumps({"out": out, "sent": radio.sent, "configured": radio.configured}))
"""


def test_bridge_firmware_speaks_the_protocol_under_micropython():
    proc = unix_port.run(BRIDGE_SCRIPT, path=[BRIDGE, APP])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = [line.rstrip("\n") for line in result["out"]]
    assert lines[0] == "HELLO allmende-bridge 1 sx1276"
    assert lines[1] == "OK CFG"
    assert protocol.parse(lines[2])[0] == "PONG"
    verb, rx = protocol.parse(lines[3])  # the CPython side reads what MicroPython wrote
    assert verb == "RX" and rx[1:6] == (868_300_000, 9, 125, -70.5, 6.25)
    assert rx[6] == b"\x40\x01\x02\x03\x04\x00\x01\x00\xaa\xbb\xcc\xdd"
    results = dict(protocol.parse(line)[1] for line in lines if line.startswith("TXD"))
    assert results == {7: "NONE", 8: "TOO_LATE", 9: "TOO_EARLY", 10: "COLLISION_PACKET", 11: "NONE"}
    assert sum(line.startswith("ERR") for line in lines) == 2  # BOGUS, and TX with 4 fields
    sent = {(s[1], s[2], s[3], s[5]) for s in result["sent"]}
    assert sent == {("a0b1", 868_300_000, 9, 16), ("c0", 869_525_000, 12, 27)}
    # gateway_mode: receives configured as "not rx" for the node driver (normal IQ), sends as "rx".
    assert set(result["configured"]) == {False, True}


class PtyBridge:
    """The test's side of a pty: plays the bridge board for the gateway."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self.buffer = b""

    def write(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def read_line(self, timeout: float = 10.0) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                self.buffer += os.read(self.master, 4096)
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode().strip()

    def expect(self, verb: str, timeout: float = 10.0) -> tuple:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.read_line(deadline - time.monotonic())
            if line and line.split(" ")[0] == verb:
                return protocol.parse(line)[1]
        raise AssertionError(f"no {verb} line from the gateway")

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.mark.slow
def test_gateway_over_a_serial_bridge(gateway_factory):
    node = SimNode.abp(3)
    bridge = PtyBridge()
    serial_section = (
        f'[[serial]]\nport = "{bridge.path}"\nfrequency = 868300000\nsf = 9\nname = "usb0"\n'
    )
    gw = gateway_factory([node], mqtt_port=None, extra=serial_section).start()
    try:
        assert bridge.expect("CFG") == (868_300_000, 9, 125)
        bridge.write("HELLO allmende-bridge 1 sx1276")
        bridge.write("some REPL noise >>>")
        for _ in range(3):
            bridge.write(
                protocol.rx_line(2_000_000, 868_300_000, 9, 125, -80.0, 4.5, node.uplink())
            )
        bridge.write(
            protocol.rx_line(
                3_000_000, 868_300_000, 9, 125, -80.0, 4.5, node.uplink(confirmed=True)
            )
        )
        token, tmst, freq, sf, bw, power, data = bridge.expect("TX")
        assert (tmst, freq, sf, bw) == (4_000_000, 868_300_000, 9, 125)
        frame = lorawan.parse_data_frame(data)
        assert frame.ack and lorawan.check_data_mic(frame, node.nwk_s_key, 0)
        bridge.write(f"TXD {token} NONE")
        assert gw.wait_metric("allmende_gateway_uplinks_total", 4, type="data", path="serial") == 4
        assert gw.wait_metric("allmende_gateway_downlinks_total", 1, result="sent") == 1
        assert gw.wait_metric("allmende_gateway_readings_committed_total", 4 * 6) >= 4 * 6
        assert gw.metric("allmende_gateway_serial_lines_total", verb="ignored") == 1
    finally:
        gw.stop()
        bridge.close()
    assert "serial_bridge" in gw.log()


def test_protocol_round_trip_and_errors():
    line = protocol.tx_line(513, None, 869_525_000, 12, 125, 27, b"\x01\xff")
    assert protocol.parse(line) == ("TX", (513, None, 869_525_000, 12, 125, 27, b"\x01\xff"))
    for bad in (
        "RX 1 2",
        "TX 1 now 868100000 13 125 14 00",
        "RX 1 868100000 7 125 x 1 00",
        "CFG 868100000 7 125 9",
        "RX 1 868100000 7 125 1 1 0g",
        "HELLO a b",
    ):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse(bad)
    assert Path(protocol.__file__).parent == BRIDGE
