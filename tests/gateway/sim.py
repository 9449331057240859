"""Test doubles that speak the real protocols: LoRaWAN nodes (built with gateway.lorawan),
packet forwarders (UDP + gateway.gwmp), an MQTT subscriber, and the gateway as a process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from allmende.firmware.app import payload
from allmende.gateway import gwmp, lorawan
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample_reading(i: int) -> dict[str, Any]:
    """A plausible air-quality reading, different for every i."""
    return {
        "pm25": (i % 500) / 10,
        "pm10": (i % 900) / 10 + 1,
        "temperature": -10 + (i % 4000) / 100,
        "humidity": (i % 200) / 2,
        "pressure": 950 + (i % 1000) / 10,
        "battery": 3.0 + (i % 120) / 100,
        "co2": 400 + i % 1000 if i % 3 else None,
        "flags": payload.FLAG_LOW_BATTERY if i % 7 == 0 else 0,
    }


def expected_values(reading: dict[str, Any]) -> dict[str, float]:
    """quantity -> value after the codec's round trip (compare with math.isclose)."""
    decoded = payload.decode(1, payload.encode(1, reading))
    return {
        quantity: decoded[name]
        for name, quantity, _unit, _res in payload.fields(1, decoded["version"])
        if decoded.get(name) is not None
    }


def abp_session_id(dev_addr: int, nwk_s_key: bytes, app_s_key: bytes) -> str:
    """The session name readings of an ABP device carry (docs/internals.md), derived here
    with cryptography's CMAC, independently of the gateway."""
    mac = cmac.CMAC(algorithms.AES(nwk_s_key))
    mac.update(b"allmende/session" + app_s_key)
    return f"{dev_addr:08x}-k{mac.finalize()[:4].hex()}"


@dataclass
class SimNode:
    """An ABP node, or an OTAA node once `accept` took its join-accept."""

    index: int
    dev_eui: bytes = b""
    dev_addr: int = 0
    nwk_s_key: bytes = b""
    app_s_key: bytes = b""
    app_key: bytes | None = None
    join_eui: bytes = bytes(8)
    fcnt: int = 0
    dev_nonce: int | None = None
    sent: dict[int, dict[str, Any]] = field(default_factory=dict)  # fcnt -> reading

    @classmethod
    def abp(cls, index: int) -> SimNode:
        return cls(
            index=index,
            dev_eui=bytes.fromhex(f"70b3d57ed0{index:06x}"),
            dev_addr=0x26000000 | index,
            nwk_s_key=bytes([1, index & 0xFF]) + bytes(14),
            app_s_key=bytes([2, index & 0xFF]) + bytes(14),
        )

    @classmethod
    def otaa(cls, index: int) -> SimNode:
        return cls(
            index=index,
            dev_eui=bytes.fromhex(f"70b3d57ed1{index:06x}"),
            app_key=bytes([3, index & 0xFF]) + bytes(14),
            join_eui=bytes.fromhex("0000000000000001"),
        )

    def device_entry(self, fw: str = "0.1.0") -> dict[str, Any]:
        entry: dict[str, Any] = {"dev_eui": self.dev_eui.hex(), "kind": "air_quality", "fw": fw}
        if self.app_key is not None:
            entry.update(join_eui=self.join_eui.hex(), app_key=self.app_key.hex())
        else:
            entry.update(
                dev_addr=f"{self.dev_addr:08x}",
                nwk_s_key=self.nwk_s_key.hex(),
                app_s_key=self.app_s_key.hex(),
            )
        return entry

    @property
    def session(self) -> str:
        if self.dev_nonce is None:
            return abp_session_id(self.dev_addr, self.nwk_s_key, self.app_s_key)
        return f"{self.dev_addr:08x}-{self.dev_nonce:04x}"

    def uplink(
        self,
        reading: dict[str, Any] | None = None,
        *,
        confirmed: bool = False,
        fcnt: int | None = None,
        fopts: bytes = b"",
        adr: bool = False,
    ) -> bytes:
        if fcnt is None:
            self.fcnt += 1
            fcnt = self.fcnt
        reading = reading if reading is not None else sample_reading(self.index * 100_000 + fcnt)
        self.sent[fcnt] = reading
        return lorawan.build_data_frame(
            mtype=lorawan.CONFIRMED_DATA_UP if confirmed else lorawan.UNCONFIRMED_DATA_UP,
            dev_addr=self.dev_addr,
            fcnt=fcnt,
            nwk_s_key=self.nwk_s_key,
            app_s_key=self.app_s_key,
            fport=1,
            payload=payload.encode(1, reading),
            fopts=fopts,
            fctrl_flags=lorawan.FCTRL_ADR if adr else 0,
        )

    def join_request(self, dev_nonce: int) -> bytes:
        assert self.app_key is not None
        self._pending_nonce = dev_nonce
        return lorawan.build_join_request(
            self.app_key, join_eui=self.join_eui, dev_eui=self.dev_eui, dev_nonce=dev_nonce
        )

    def accept(self, phy: bytes) -> lorawan.JoinAccept:
        assert self.app_key is not None
        accept = lorawan.decrypt_join_accept(self.app_key, phy)
        self.dev_nonce = self._pending_nonce
        self.dev_addr = accept.dev_addr
        self.nwk_s_key, self.app_s_key = lorawan.derive_session_keys(
            self.app_key, app_nonce=accept.app_nonce, net_id=accept.net_id, dev_nonce=self.dev_nonce
        )
        self.fcnt = 0
        return accept

    def keys_of(self, fcnt: int) -> list[str]:
        return [
            f"{self.dev_eui.hex()}/{self.session}/{fcnt}/{q}"
            for q in expected_values(self.sent[fcnt])
        ]


class SimForwarder:
    """A packet forwarder on a UDP socket, towards the gateway at `server`."""

    def __init__(self, server: tuple[str, int], eui: str = "aa555a0000000001") -> None:
        self.server = server
        self.eui = bytes.fromhex(eui)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.token = 0
        self.tmst = 1_000_000
        self.acked = 0
        self.other: list[gwmp.Packet] = []

    def close(self) -> None:
        self.sock.close()

    def _next_token(self) -> int:
        self.token = (self.token + 1) & 0xFFFF
        return self.token

    def push(
        self,
        frames: list[bytes],
        *,
        rssi: float = -60.0,
        snr: float = 9.5,
        wait_ack: bool = True,
        freq_hz: int = 868_100_000,
        sf: int = 7,
        tmst: int | None = None,
    ) -> bool:
        rxpk = []
        for phy in frames:
            self.tmst = tmst if tmst is not None else self.tmst + 50_000
            rxpk.append(
                gwmp.build_rxpk(
                    phy, freq_hz=freq_hz, sf=sf, bw_khz=125, tmst=self.tmst, rssi=rssi, snr=snr
                )
            )
        token = self._next_token()
        self.sock.sendto(gwmp.push_data(token, self.eui, {"rxpk": rxpk}), self.server)
        return self.wait_for(gwmp.PUSH_ACK, token) is not None if wait_ack else True

    def send_raw(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.server)

    def pull(self) -> bool:
        token = self._next_token()
        self.sock.sendto(gwmp.pull_data(token, self.eui), self.server)
        return self.wait_for(gwmp.PULL_ACK, token) is not None

    def wait_for(
        self, kind: int, token: int | None = None, timeout: float = 5.0
    ) -> gwmp.Packet | None:
        deadline = time.monotonic() + timeout
        for i, packet in enumerate(self.other):
            if packet.kind == kind and (token is None or packet.token == token):
                return self.other.pop(i)
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, _ = self.sock.recvfrom(65535)
            except (TimeoutError, ConnectionRefusedError):
                continue
            packet = gwmp.decode(data)
            if packet.kind == kind and (token is None or packet.token == token):
                if kind == gwmp.PUSH_ACK:
                    self.acked += 1
                return packet
            self.other.append(packet)
        return None

    def tx_ack(self, token: int, error: str | None = None) -> None:
        self.sock.sendto(gwmp.tx_ack(token, self.eui, error), self.server)


class Subscriber:
    """Collects every reading published below allmende/gw/+/up (QoS 1, persistent session,
    so readings published while it reconnects are kept for it by the broker)."""

    def __init__(
        self, port: int, *, client_id: str = "test-subscriber", topic: str = "allmende/gw/+/#"
    ) -> None:
        self.readings: list[dict[str, Any]] = []
        self.messages: list[tuple[str, dict[str, Any], bool]] = []  # (topic, body, retained)
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("test subscriber did not connect")

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        client.subscribe(self.topic, qos=1)
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        with self.lock:
            self.messages.append((msg.topic, body, bool(msg.retain)))
            if msg.topic.endswith("/up"):
                self.readings.extend(body["readings"])

    def keys(self) -> set[str]:
        with self.lock:
            return {r["key"] for r in self.readings}

    def wait_keys(self, keys: set[str], timeout: float = 30.0) -> set[str]:
        """Waits until every key arrived; returns the missing ones."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            missing = keys - self.keys()
            if not missing:
                return set()
            time.sleep(0.05)
        return keys - self.keys()

    def status(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for topic, body, _ in self.messages if topic.endswith("/status")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def write_devices(path: Path, nodes: list[SimNode]) -> Path:
    path.write_text(json.dumps({"devices": [n.device_entry() for n in nodes]}, indent=1))
    return path


def write_config(
    directory: Path,
    *,
    udp_port: int,
    mqtt_port: int | None,
    metrics_port: int,
    devices: Path,
    gateway_id: str = "gw-test",
    extra: str = "",
    network: str = "",
) -> Path:
    mqtt_section = (
        ""
        if mqtt_port is None
        else (
            f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nreconnect_min_s = 0.2\n'
            "reconnect_max_s = 1.0\nstats_interval_s = 5.0\n"
        )
    )
    text = (
        f'[gateway]\nid = "{gateway_id}"\ndata_dir = "{directory / "data"}"\n'
        f'devices = "{devices}"\n'
        "devices_reload_s = 0.5\n\n"
        f'[udp]\nlisten = "127.0.0.1:{udp_port}"\n\n{mqtt_section}\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n\n'
        f"[network]\ndownlink_collect_ms = 50.0\n{network}\n\n"
        f"{extra}\n"
    )
    path = directory / "gateway.toml"
    path.write_text(text)
    return path


class GatewayProcess:
    """`allmende gateway run --config FILE` as a child process."""

    def __init__(self, config: Path, metrics_port: int, log_path: Path) -> None:
        self.config = config
        self.metrics_port = metrics_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "allmende.cli", "gateway", "run", "--config", str(self.config)],
            stdout=log,
            stderr=log,
            cwd=REPO,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text()[-3000:]
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{tail}")
            try:
                self.metrics()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"gateway did not start:\n{self.log_path.read_text()[-3000:]}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as resp:
            text = resp.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def rejects(self) -> dict[str, float]:
        return {
            dict(labels)["reason"]: value
            for (name, labels), value in self.metrics().items()
            if name == "allmende_gateway_rejects_total"
        }

    def wait_metric(
        self, name: str, at_least: float, timeout: float = 30.0, **labels: str
    ) -> float:
        deadline = time.monotonic() + timeout
        value = 0.0
        while time.monotonic() < deadline:
            value = self.metric(name, **labels)
            if value >= at_least:
                return value
            time.sleep(0.05)
        return value

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text()
