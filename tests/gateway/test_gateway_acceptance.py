"""Issue 3 acceptance: real Mosquitto, real UDP, real SQLite, the gateway as a process."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections import defaultdict

import pytest
from allmende.gateway import gwmp, lorawan

from tests.fixtures.services import run_mosquitto
from tests.gateway.sim import SimForwarder, SimNode, Subscriber, expected_values, sample_reading

pytestmark = pytest.mark.slow


def check_readings(readings, nodes, *, gateway="gw-test"):
    """Every reading matches what its node sent; returns key -> reading."""
    by_addr = {n.dev_eui.hex(): n for n in nodes}
    out = {}
    for r in readings:
        node = by_addr[r["device"]]
        sent = node.sent[r["fcnt"]]
        expected = expected_values(sent)
        assert math.isclose(r["value"], expected[r["quantity"]], abs_tol=1e-9), r
        assert r["key"] == f"{r['device']}/{node.session}/{r['fcnt']}/{r['quantity']}"
        assert (r["kind"], r["gateway"], r["session"], r["fw"]) == (
            "air_quality",
            gateway,
            node.session,
            "0.1.0",
        )
        assert r["unit"] in ("ug/m3", "Cel", "%", "hPa", "V", "ppm")
        assert ("low_battery" in r["flags"]) == bool(sent["flags"] & 0x08)
        assert r["time"].endswith("Z") and "T" in r["time"]
        if r["key"] in out:
            assert out[r["key"]] == r, "two different readings under one idempotency key"
        out[r["key"]] = r
    return out


def all_keys(nodes):
    return {k for n in nodes for f in n.sent for k in n.keys_of(f)}


@pytest.mark.parametrize("forwarders", [1, 2])
def test_thousand_uplinks_reach_the_broker_exactly_once(broker, gateway_factory, forwarders):
    nodes = [SimNode.abp(i) for i in range(20)]
    gw = gateway_factory(nodes, mqtt_port=broker.port).start()
    subscriber = Subscriber(broker.port)
    fwds = [
        SimForwarder(("127.0.0.1", gw.udp_port), eui=f"aa555a000000000{i}")
        for i in range(forwarders)
    ]
    try:
        for round_ in range(50):
            for node in nodes:
                phy = node.uplink()
                order = fwds if round_ % 2 == 0 else fwds[::-1]
                for i, fwd in enumerate(order):
                    assert fwd.push([phy], rssi=-60.0 - 10 * i)
        keys = all_keys(nodes)
        assert len(keys) > 1000 * 5
        assert subscriber.wait_keys(keys, timeout=60) == set()
        time.sleep(0.3)  # anything published twice would arrive by now
        with subscriber.lock:
            readings = list(subscriber.readings)
        got = check_readings(readings, nodes)
        assert set(got) == keys
        assert len(readings) == len(keys), "a reading was published more than once"
        assert gw.metric("allmende_gateway_uplinks_total", type="data", path="gwmp") == 1000
        assert gw.metric("allmende_gateway_duplicate_copies_total") == 1000 * (forwarders - 1)
        assert gw.rejects() == {}
        assert gw.wait_metric("allmende_gateway_readings_forwarded_total", len(keys)) == len(keys)
        online = [s for s in subscriber.status() if s["state"] == "online"]
        assert online and online[-1]["gateway"] == "gw-test"
    finally:
        subscriber.close()
        for fwd in fwds:
            fwd.close()


def test_broker_outage_loses_nothing_and_keeps_order(tmp_path, gateway_factory):
    persistent = ["allow_anonymous true", "persistence true", f"persistence_location {tmp_path}/"]
    stack = run_mosquitto(tmp_path / "mq", config_lines=persistent)
    broker = stack.__enter__()
    port = broker.port
    nodes = [SimNode.abp(i) for i in range(10)]
    gw = gateway_factory(nodes, mqtt_port=port).start()
    subscriber = Subscriber(port, client_id="outage-subscriber")
    fwd = SimForwarder(("127.0.0.1", gw.udp_port))
    try:

        def send(rounds):
            for _ in range(rounds):
                for node in nodes:
                    assert fwd.push([node.uplink()])

        send(10)
        stack.__exit__(None, None, None)  # broker gone mid-run
        send(20)  # the gateway keeps accepting while the backhaul is down
        assert gw.wait_metric(
            "allmende_gateway_readings_committed_total", len(all_keys(nodes))
        ) == len(all_keys(nodes))
        # The gateway notices the lost broker on its own schedule (keepalive, socket error).
        deadline = time.monotonic() + 30
        while gw.metric("allmende_gateway_mqtt_connected") != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.metric("allmende_gateway_mqtt_connected") == 0
        assert gw.metric("allmende_gateway_outbox_depth_readings") > 0
        stack = run_mosquitto(tmp_path / "mq", config_lines=persistent, port=port)
        stack.__enter__()
        send(10)
        keys = all_keys(nodes)
        assert subscriber.wait_keys(keys, timeout=60) == set()
        with subscriber.lock:
            readings = list(subscriber.readings)
        check_readings(readings, nodes)
        first_seen: dict[str, list[int]] = defaultdict(list)
        seen = set()
        for r in readings:
            if r["key"] not in seen:
                seen.add(r["key"])
                first_seen[r["device"]].append(r["fcnt"])
        for device, fcnts in first_seen.items():
            assert fcnts == sorted(fcnts), f"{device} delivered out of order"
        assert gw.wait_metric("allmende_gateway_mqtt_connected", 1) == 1
        assert gw.metric("allmende_gateway_mqtt_connects_total") >= 2
    finally:
        subscriber.close()
        fwd.close()
        gw.stop()
        stack.__exit__(None, None, None)


def test_sigkill_during_burst_delivers_every_committed_reading(
    broker, gateway_factory, record_property
):
    nodes = [SimNode.abp(i) for i in range(25)]
    gw = gateway_factory(nodes, mqtt_port=broker.port).start()
    subscriber = Subscriber(broker.port, client_id="kill-subscriber")
    fwd = SimForwarder(("127.0.0.1", gw.udp_port))
    sent: dict[int, tuple[SimNode, int]] = {}  # PUSH_DATA token -> (node, fcnt)
    acked: set[int] = set()  # tokens the gateway acknowledged: the frames it received
    stop = threading.Event()

    def burst():
        # Fire without waiting for each PUSH_ACK, as a busy concentrator does; one frame per
        # datagram, tokens never repeat within the burst.
        for _ in range(200):
            for node in nodes:
                if stop.is_set() or len(sent) >= 0xFFFF:
                    return
                fwd.push([node.uplink()], wait_ack=False)
                sent[fwd.token] = (node, node.fcnt)
            time.sleep(0.001)

    def count_acks():
        # Read while sending: the socket buffer would drop the ACKs otherwise.
        fwd.sock.settimeout(0.2)
        quiet_since = None
        while True:
            try:
                data, _ = fwd.sock.recvfrom(1024)
            except TimeoutError:
                if stop.is_set():
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 0.5:
                        return
                continue
            packet = gwmp.decode(data)
            if packet.kind == gwmp.PUSH_ACK:
                acked.add(packet.token)

    sender = threading.Thread(target=burst)
    receiver = threading.Thread(target=count_acks)
    sender.start()
    receiver.start()
    try:
        gw.wait_metric("allmende_gateway_readings_committed_total", 3000)
        gw.kill()
        stop.set()
        sender.join()
        receiver.join()
        # The session table commits with the readings: a device's fcnt_up is its newest
        # committed frame, and every frame up to it that the gateway received is committed.
        db = sqlite3.connect(f"file:{gw.directory / 'data' / 'outbox.sqlite'}?mode=ro", uri=True)
        fcnt_up = {
            bytes.fromhex(eui): up
            for eui, up in db.execute("SELECT dev_eui, fcnt_up FROM sessions")
        }
        db.close()
        received = [sent[t] for t in acked]
        committed_frames = [(n, f) for n, f in received if f <= (fcnt_up.get(n.dev_eui) or 0)]
        committed = {key for n, f in committed_frames for key in n.keys_of(f)}
        # Upper bound of what may be delivered: a frame whose PUSH_ACK got lost is still fine.
        allowed = {
            key
            for n, f in sent.values()
            if f <= (fcnt_up.get(n.dev_eui) or 0)
            for key in n.keys_of(f)
        }
        window = len(received) - len(committed_frames)
        record_property("frames_sent", len(sent))
        record_property("frames_received_by_gateway", len(received))
        record_property("frames_committed", len(committed_frames))
        record_property("received_not_committed", window)
        print(
            f"SIGKILL: sent {len(sent)}, received {len(received)}, "
            f"committed {len(committed_frames)}, received but not committed {window}"
        )

        gw.start()
        assert subscriber.wait_keys(committed, timeout=60) == set()
        time.sleep(0.5)
        with subscriber.lock:
            readings = list(subscriber.readings)
        got = check_readings(readings, nodes)  # also: no key with two different readings
        assert committed <= set(got) <= allowed, "only committed readings may appear, each of them"
        record_property("duplicate_deliveries", len(readings) - len(got))
    finally:
        stop.set()
        subscriber.close()
        fwd.close()


def test_bad_input_is_rejected_and_counted_by_reason(gateway_factory):
    nodes = [SimNode.abp(i) for i in range(3)]
    gw = gateway_factory(nodes, mqtt_port=None, network="dedupe_window_ms = 300.0").start()
    fwd = SimForwarder(("127.0.0.1", gw.udp_port))
    try:
        node = nodes[0]
        frames = [node.uplink() for _ in range(5)]
        assert fwd.push(frames)
        # Replays: an old frame (after the dedupe window), the newest with other content.
        time.sleep(0.5)
        assert fwd.push([frames[1], frames[2]])
        other = node.uplink(sample_reading(777), fcnt=5)  # counter of frames[4], other payload
        assert fwd.push([other])
        assert fwd.push([frames[4]])  # the newest frame again: a repeat
        bad_mic = bytearray(node.uplink())
        bad_mic[-1] ^= 0xFF
        assert fwd.push([bytes(bad_mic)])
        stranger = SimNode.abp(99)
        assert fwd.push([stranger.uplink()])
        fwd.send_raw(b"\x02\x00")  # truncated
        fwd.send_raw(b"\x02\x00\x01\x00" + bytes(8) + b"{" + b" " * 40_000 + b"}")  # oversized
        fwd.send_raw(b"\x02\x00\x01\x00" + bytes(8) + b'{"rxpk": [')  # bad JSON
        fwd.send_raw(b"\x07\x00\x01\x00")  # bad version
        fwd.send_raw(gwmp.push_data(9, fwd.eui, {"rxpk": [{"data": "!!", "datr": "SF7BW125"}]}))
        crc = gwmp.build_rxpk(
            node.uplink(),
            freq_hz=868_100_000,
            sf=7,
            bw_khz=125,
            tmst=1,
            rssi=-100,
            snr=-5,
            crc_ok=False,
        )
        fwd.send_raw(gwmp.push_data(10, fwd.eui, {"rxpk": [crc]}))
        downlink = lorawan.build_data_frame(
            mtype=lorawan.UNCONFIRMED_DATA_DOWN,
            dev_addr=node.dev_addr,
            fcnt=1,
            nwk_s_key=node.nwk_s_key,
        )
        assert fwd.push([downlink, b"\x40\x01"])
        expected = {
            "replay": 3,
            "repeat": 1,
            "mic": 1,
            "unknown_device": 1,
            "truncated": 1,
            "oversized": 1,
            "bad_json": 1,
            "bad_version": 1,
            "bad_rxpk": 1,
            "crc": 1,
            "not_uplink": 1,
            "bad_frame": 1,
        }
        deadline = time.monotonic() + 10
        while gw.rejects() != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.rejects() == expected
        assert gw.metric("allmende_gateway_uplinks_total", type="data", path="gwmp") == 5
        assert fwd.pull(), "the gateway stopped answering"
    finally:
        fwd.close()
