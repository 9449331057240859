"""The daemon as a process: OTAA join and downlinks over GWMP, device reloads, secrets in
logs, hostile datagrams, the CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from allmende.gateway import gwmp, lorawan
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.sim import (
    REPO,
    SimForwarder,
    SimNode,
    Subscriber,
    expected_values,
    write_devices,
)

pytestmark = pytest.mark.slow


def test_otaa_join_downlinks_and_tx_ack(broker, gateway_factory):
    node = SimNode.otaa(1)
    gw = gateway_factory([node], mqtt_port=broker.port).start()
    subscriber = Subscriber(broker.port, client_id="otaa-subscriber")
    fwd = SimForwarder(("127.0.0.1", gw.udp_port))
    try:
        assert fwd.pull()  # the downlink route
        assert fwd.push([node.join_request(0x2A2A)], tmst=1_000_000)
        resp = fwd.wait_for(gwmp.PULL_RESP)
        assert resp is not None, gw.log()[-2000:]
        tx = gwmp.parse_txpk(resp.payload["txpk"])
        assert (tx.tmst, tx.freq_hz, tx.sf, tx.bw_khz, tx.ipol) == (
            6_000_000,
            868_100_000,
            7,
            125,
            True,
        )
        accept = node.accept(tx.data)
        fwd.tx_ack(resp.token)

        # A confirmed uplink on another sub-band is ACKed in RX1, one second after it.
        assert fwd.push([node.uplink(confirmed=True)], tmst=3_000_000, freq_hz=867_100_000)
        resp = fwd.wait_for(gwmp.PULL_RESP)
        tx = gwmp.parse_txpk(resp.payload["txpk"])
        assert (tx.tmst, tx.freq_hz) == (4_000_000, 867_100_000)
        frame = lorawan.parse_data_frame(tx.data)
        assert frame.ack and frame.dev_addr == accept.dev_addr
        assert lorawan.check_data_mic(frame, node.nwk_s_key, 0)
        # The forwarder refuses RX1: the gateway tries RX2 (869.525 MHz, DR0).
        fwd.tx_ack(resp.token, "TOO_LATE")
        resp = fwd.wait_for(gwmp.PULL_RESP)
        assert resp is not None
        tx = gwmp.parse_txpk(resp.payload["txpk"])
        assert (tx.tmst, tx.freq_hz, tx.sf) == (5_000_000, 869_525_000, 12)
        assert lorawan.parse_data_frame(tx.data).ack
        fwd.tx_ack(resp.token, "NONE")

        keys = set(node.keys_of(1))
        assert subscriber.wait_keys(keys) == set()
        readings = [r for r in subscriber.readings if r["key"] in keys]
        assert {r["session"] for r in readings} == {f"{accept.dev_addr:08x}-2a2a"}
        for r in readings:
            assert math.isclose(
                r["value"], expected_values(node.sent[1])[r["quantity"]], abs_tol=1e-9
            )

        # The same join-request again is a replay of its DevNonce.
        time.sleep(1.1)
        assert fwd.push([node.join_request(0x2A2A)])
        deadline = time.monotonic() + 10
        while gw.rejects().get("devnonce_reuse") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.rejects() == {"devnonce_reuse": 1}
        assert gw.metric("allmende_gateway_downlinks_total", result="refused_too_late") == 1
        assert gw.wait_metric("allmende_gateway_downlinks_total", 2, result="sent") == 2
    finally:
        subscriber.close()
        fwd.close()


def test_device_list_reload_and_no_key_in_any_log(gateway_factory):
    known, newcomer = SimNode.abp(1), SimNode.otaa(2)
    gw = gateway_factory([known], mqtt_port=None, extra='[log]\nlevel = "debug"\n').start()
    fwd = SimForwarder(("127.0.0.1", gw.udp_port))
    try:
        assert fwd.push([newcomer.join_request(1)])
        deadline = time.monotonic() + 10
        while gw.rejects().get("unknown_device") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.rejects().get("unknown_device") == 1
        # A broken file is reported and the running list kept.
        devices = gw.directory / "devices.json"
        devices.write_text('{"devices": [{"dev_eui": "zz"')
        assert gw.wait_metric("allmende_gateway_device_list_errors_total", 1) == 1
        write_devices(devices, [known, newcomer])  # picked up on change, no restart
        assert gw.wait_metric("allmende_gateway_devices", 2) == 2
        assert fwd.push([newcomer.join_request(2)])
        assert gw.wait_metric("allmende_gateway_joins_total", 1) == 1
        assert fwd.push([known.uplink()])
        assert gw.wait_metric("allmende_gateway_readings_committed_total", 6) >= 6
        # A bad key in the file: the error names the field, not the value.
        entry = known.device_entry()
        entry["nwk_s_key"] = "00112233445566778899aabbccddee"  # one byte short
        devices.write_text(json.dumps({"devices": [entry]}))
        assert gw.wait_metric("allmende_gateway_device_list_errors_total", 2) == 2
    finally:
        fwd.close()
        gw.stop()
    log = gw.log()
    secrets = [
        known.nwk_s_key.hex(),
        known.app_s_key.hex(),
        newcomer.app_key.hex(),
        "00112233445566778899aabbccddee",
    ]
    for secret in secrets:
        assert secret not in log.lower()
    assert "nwk_s_key must be 32 hex digits" in log


def test_hostile_datagrams_are_counted_and_the_gateway_keeps_running(gateway_factory):
    gw = gateway_factory([SimNode.abp(1)], mqtt_port=None).start()
    fwd = SimForwarder(("127.0.0.1", gw.udp_port))
    expected: dict[str, int] = {}

    @settings(
        max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(
        st.one_of(
            st.binary(max_size=300),
            st.binary(max_size=200).map(
                lambda b: b"\x02" + b[:2] + b"\x00" + bytes(8) + b
            ),  # PUSH_DATA
        )
    )
    def send(data):
        try:
            packet = gwmp.decode(data)
        except gwmp.GwmpError as exc:
            expected[exc.reason] = expected.get(exc.reason, 0) + 1
        else:
            if packet.kind in (gwmp.PUSH_ACK, gwmp.PULL_ACK, gwmp.PULL_RESP):
                expected["unexpected_kind"] = expected.get("unexpected_kind", 0) + 1
            elif packet.kind == gwmp.PUSH_DATA and "rxpk" in packet.payload:
                return  # a valid JSON object with an rxpk key: not what this test is about
        fwd.send_raw(data)

    try:
        send()
        total = sum(expected.values())
        assert total > 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rejects = gw.rejects()
            if sum(rejects.values()) >= total:
                break
            time.sleep(0.05)
        assert gw.rejects() == expected
        assert fwd.pull(), "the gateway stopped answering"
        assert gw.proc.poll() is None
    finally:
        fwd.close()


def test_datagrams_the_kernel_dropped_while_the_gateway_stalled_are_counted_and_logged(
        gateway_factory):
    gw = gateway_factory([SimNode.abp(1)], mqtt_port=None).start()
    fwd = SimForwarder(("127.0.0.1", gw.udp_port))
    try:
        assert gw.metric("allmende_gateway_udp_receive_drops_total") == 0
        os.kill(gw.proc.pid, signal.SIGSTOP)  # a stalled gateway: its receive buffer fills up
        try:
            for token in range(30_000):  # far more than a 4 MB receive buffer holds
                fwd.send_raw(gwmp.pull_data(token & 0xFFFF, bytes(8)))
        finally:
            os.kill(gw.proc.pid, signal.SIGCONT)
        assert gw.wait_metric("allmende_gateway_udp_receive_drops_total", 1) >= 1
        assert "udp_receive_overflow" in gw.log()
        assert fwd.pull(), "the gateway stopped answering"
    finally:
        fwd.close()


def test_cli_check_and_bad_config(tmp_path, gateway_factory):
    gw = gateway_factory([SimNode.abp(1), SimNode.otaa(2)], mqtt_port=1883)
    out = subprocess.run(
        [sys.executable, "-m", "allmende.cli", "gateway", "check", "--config", str(gw.config)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert "2 (1 OTAA, 1 ABP)" in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nid = "gw 1"\ndata_dir = "x"\ndevices = "y"\n[udp]\n')
    out = subprocess.run(
        [sys.executable, "-m", "allmende.cli", "gateway", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 2 and "gateway.id" in out.stderr
    bad.write_text('[gateway]\nid = "gw1"\ndata_dir = "x"\ndevices = "y"\n[udp]\nlisen = "1"\n')
    out = subprocess.run(
        [sys.executable, "-m", "allmende.cli", "gateway", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 2 and "unknown key 'lisen'" in out.stderr
