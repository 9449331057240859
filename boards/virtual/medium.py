"""Radio medium of the virtual board: the air between virtual LoRa radios and gateways.

Virtual radios (`boards/virtual/runtime/sim_radio_link.py`) send each frame they transmit
as a JSON datagram to this process. The medium hands every frame to in-process listeners
(tests) and to any number of virtual packet forwarders, each a Semtech UDP packet-forwarder
protocol v2 client with its own gateway EUI talking to a gateway's UDP address (PUSH_DATA
with rxpk, PULL_DATA keep-alives, PULL_RESP downlinks answered by TX_ACK, periodic stat).
Downlinks (from a forwarder's PULL_RESP or `RadioMedium.send_downlink`) reach every known
radio as rx datagrams at the moment they go on air. Signal strength per (node, forwarder)
and frame loss are drawn from a seed, so runs repeat and two gateways hear a frame
differently.

Run alone: python -m allmende.boards.virtual.medium --port 1700 --forwarder EUI=HOST:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from allmende.boards.virtual.unix_port import RUNTIME
from allmende.gateway import gwmp

log = logging.getLogger(__name__)

PUBLIC_SYNC_WORD = 0x34
# EU868 channels of a typical 8-channel gateway (global_conf.json of the reference
# forwarder): 868.1/868.3/868.5 MHz on radio 1, 867.1 ... 867.9 MHz on radio 0.
EU868_CHANNELS_HZ = (
    868_100_000,
    868_300_000,
    868_500_000,
    867_100_000,
    867_300_000,
    867_500_000,
    867_700_000,
    867_900_000,
)
EU868_TX_BAND_HZ = (863_000_000, 870_000_000)
TX_MIN_LEAD_S = 0.03  # reference forwarder: TX_START_DELAY + TX_JIT_DELAY (~31.5 ms)
TX_MAX_ADVANCE_S = 30.0  # further ahead than this is TOO_EARLY


def _load_airtime() -> Callable[..., int]:
    """LoRa time on air from the virtual radios' own module: one formula for both sides."""
    spec = importlib.util.spec_from_file_location(
        "allmende_vboard_sim_radio_link", RUNTIME / "sim_radio_link.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    airtime: Callable[..., int] = module.time_on_air_us
    return airtime


time_on_air_us = _load_airtime()


def _utc_iso(now: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame a virtual radio transmitted. `time` is time.monotonic() at its end."""

    node: Any
    freq: int
    sf: int
    bw: int | float
    cr: int
    data: bytes
    time: float
    ipol: bool = False
    sync: int = PUBLIC_SYNC_WORD

    def airtime_s(self) -> float:
        return time_on_air_us(self.sf, self.bw, self.cr, len(self.data)) / 1e6


@dataclass(frozen=True, slots=True)
class Downlink:
    """One downlink as it went on air; `source` is a forwarder's EUI (hex) or "medium"."""

    data: bytes
    freq: int
    sf: int
    bw: int | float
    time: float
    source: str
    ipol: bool = True
    nodes: tuple[Any, ...] = ()


@dataclass(slots=True)
class ForwarderConfig:
    """A virtual packet forwarder: gateway EUI (16 hex digits) and the gateway's UDP address.

    `uplink_loss`/`downlink_loss` are probabilities (0..1) of missing a frame, drawn from
    the medium's seed. `port_down` defaults to `port` (one UDP port for both directions).
    """

    eui: str
    host: str
    port: int
    port_down: int | None = None
    uplink_loss: float = 0.0
    downlink_loss: float = 0.0
    keepalive_s: float = 5.0
    stat_interval_s: float = 30.0
    push_timeout_s: float = 1.0
    push_retries: int = 2
    location: tuple[float, float, int] | None = None  # lati, long, alti

    def __post_init__(self) -> None:
        raw = bytes.fromhex(self.eui)
        if len(raw) != 8:
            raise ValueError(f"gateway EUI {self.eui!r} is not 8 bytes (16 hex digits)")
        self.eui = raw.hex()
        for name in ("uplink_loss", "downlink_loss"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")

    @classmethod
    def parse(cls, spec: str, **options: Any) -> ForwarderConfig:
        """ "EUI=HOST:PORT" (as on the command line) -> ForwarderConfig."""
        try:
            eui, address = spec.split("=", 1)
            host, port = address.rsplit(":", 1)
            return cls(eui.strip(), host.strip("[]"), int(port), **options)
        except ValueError as exc:
            raise ValueError(f"forwarder {spec!r}: expected EUI=HOST:PORT ({exc})") from None


@dataclass(slots=True)
class ForwarderCounters:
    """Totals since start; `stat` objects carry the same figures per interval."""

    rx_received: int = 0  # frames the radio heard (rxnb)
    rx_forwarded: int = 0  # frames sent in a PUSH_DATA (rxfw)
    rx_lost: int = 0  # frames missed by the loss setting
    push_sent: int = 0  # PUSH_DATA datagrams sent, retries included
    push_acked: int = 0
    push_failed: int = 0  # PUSH_DATA never acknowledged after all retries
    pull_sent: int = 0
    pull_acked: int = 0
    stat_sent: int = 0
    downlinks_received: int = 0  # PULL_RESP datagrams (dwnb)
    downlinks_sent: int = 0  # downlinks that went on air (txnb)
    tx_ack: dict[str, int] = field(default_factory=dict)  # TX_ACK error -> count


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None], name: str) -> None:
        self._on_datagram = on_datagram
        self._name = name

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # A connected UDP socket reports ICMP errors (gateway not listening): not fatal.
        log.debug("%s: %s", self._name, exc)


class VirtualForwarder:
    """One Semtech UDP (GWMP v2) packet forwarder fed by the medium."""

    def __init__(self, medium: RadioMedium, config: ForwarderConfig) -> None:
        self.medium = medium
        self.config = config
        self.eui = config.eui
        self.counters = ForwarderCounters()
        self._interval = ForwarderCounters()  # since the last stat
        seed = medium.seed
        self._loss_rng = random.Random(f"{seed}/loss/{self.eui}")
        # Each concentrator's counter starts somewhere else, as on real gateways.
        self._tmst_origin = (
            time.monotonic() - random.Random(f"{seed}/tmst/{self.eui}").randint(0, 2**31) / 1e6
        )
        self._up: asyncio.DatagramTransport | None = None
        self._down: asyncio.DatagramTransport | None = None
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._pull_token: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled: list[tuple[float, float, asyncio.TimerHandle]] = []
        self.last_pull_ack: float | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        self._up, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self._on_up, f"forwarder {self.eui} up"),
            remote_addr=(cfg.host, cfg.port),
        )
        self._down, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self._on_down, f"forwarder {self.eui} down"),
            remote_addr=(cfg.host, cfg.port_down or cfg.port),
        )
        self._spawn(self._keepalive())
        self._spawn(self._stats())
        log.info("forwarder %s -> %s:%s", self.eui, cfg.host, cfg.port)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, _, handle in self._scheduled:
            handle.cancel()
        self._scheduled.clear()
        for transport in (self._up, self._down):
            if transport is not None:
                transport.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- time -----------------------------------------------------------------------------

    def tmst(self, at: float | None = None) -> int:
        """The concentrator's 32-bit microsecond counter at time.monotonic() `at` (now)."""
        moment = time.monotonic() if at is None else at
        return int((moment - self._tmst_origin) * 1e6) & 0xFFFFFFFF

    def _tmst_to_monotonic(self, tmst: int, now: float) -> float:
        ahead = (tmst - self.tmst(now)) & 0xFFFFFFFF
        if ahead >= 2**31:  # the counter already passed it
            ahead -= 2**32
        return now + ahead / 1e6

    # -- uplink ---------------------------------------------------------------------------

    def hear(self, frame: Frame) -> None:
        """The medium's frame reaches this gateway's antenna."""
        if frame.ipol or frame.sync != PUBLIC_SYNC_WORD:
            return  # a concentrator does not demodulate inverted IQ or private sync words
        try:
            gwmp.datr(frame.sf, int(frame.bw))
        except ValueError:
            log.debug("forwarder %s: SF%s BW%s not receivable", self.eui, frame.sf, frame.bw)
            return
        if self._loss_rng.random() < self.config.uplink_loss:
            self.counters.rx_lost += 1
            return
        for c in (self.counters, self._interval):
            c.rx_received += 1
        rssi, snr = self.medium.link_quality(frame.node, self.eui)
        freq = frame.freq
        chan = EU868_CHANNELS_HZ.index(freq) if freq in EU868_CHANNELS_HZ else 0
        rxpk = gwmp.build_rxpk(
            frame.data,
            freq_hz=freq,
            sf=frame.sf,
            bw_khz=int(frame.bw),
            tmst=self.tmst(frame.time),
            rssi=rssi,
            snr=snr,
            codr=f"4/{frame.cr}",
            chan=chan,
            rfch=1 if freq >= 868_000_000 else 0,
            time=_utc_iso(time.time() - (time.monotonic() - frame.time)),
        )
        for c in (self.counters, self._interval):
            c.rx_forwarded += 1
        self._spawn(self._push({"rxpk": [rxpk]}))

    async def _push(self, payload: dict[str, Any]) -> None:
        """PUSH_DATA until a PUSH_ACK with its token comes back (or retries run out)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        for _ in range(1 + cfg.push_retries):
            token = secrets.randbits(16)
            waiter: asyncio.Future[None] = loop.create_future()
            self._acks[token] = waiter
            try:
                self._send_up(gwmp.push_data(token, self.eui, payload))
                for c in (self.counters, self._interval):
                    c.push_sent += 1
                await asyncio.wait_for(waiter, cfg.push_timeout_s)
                for c in (self.counters, self._interval):
                    c.push_acked += 1
                return
            except TimeoutError:
                log.info("forwarder %s: no PUSH_ACK for token %04x", self.eui, token)
            finally:
                self._acks.pop(token, None)
        self.counters.push_failed += 1
        log.warning(
            "forwarder %s: PUSH_DATA lost, gateway %s:%s never acknowledged",
            self.eui,
            cfg.host,
            cfg.port,
        )

    def _send_up(self, datagram: bytes) -> None:
        if self._up is not None and not self._up.is_closing():
            self._up.sendto(datagram)

    def _send_down(self, datagram: bytes) -> None:
        if self._down is not None and not self._down.is_closing():
            self._down.sendto(datagram)

    def _on_up(self, data: bytes, addr: Any) -> None:
        try:
            packet = gwmp.decode(data)
        except gwmp.GwmpError as exc:
            log.info("forwarder %s: bad datagram from gateway: %s", self.eui, exc)
            return
        if packet.kind != gwmp.PUSH_ACK:
            log.info("forwarder %s: unexpected %s on the uplink socket", self.eui, packet.kind_name)
            return
        waiter = self._acks.get(packet.token)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- keep-alive and status ------------------------------------------------------------

    async def _keepalive(self) -> None:
        while True:
            self._pull_token = secrets.randbits(16)
            self._send_down(gwmp.pull_data(self._pull_token, self.eui))
            self.counters.pull_sent += 1
            await asyncio.sleep(self.config.keepalive_s)

    async def _stats(self) -> None:
        while True:
            await asyncio.sleep(self.config.stat_interval_s)
            self._spawn(self._push({"stat": self.stat()}))
            self.counters.stat_sent += 1

    def stat(self) -> dict[str, Any]:
        """A `stat` object over the interval since the last one (then starts a new one)."""
        c = self._interval
        stat: dict[str, Any] = {
            "time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S GMT"),
            "rxnb": c.rx_received,
            "rxok": c.rx_received,  # the medium carries no frames with a bad CRC
            "rxfw": c.rx_forwarded,
            "ackr": round(100.0 * c.push_acked / c.push_sent, 1) if c.push_sent else 0.0,
            "dwnb": c.downlinks_received,
            "txnb": c.downlinks_sent,
        }
        if self.config.location is not None:
            stat["lati"], stat["long"], stat["alti"] = self.config.location
        self._interval = ForwarderCounters()
        return stat

    # -- downlink -------------------------------------------------------------------------

    def _on_down(self, data: bytes, addr: Any) -> None:
        try:
            packet = gwmp.decode(data)
        except gwmp.GwmpError as exc:
            log.info("forwarder %s: bad datagram from gateway: %s", self.eui, exc)
            return
        if packet.kind == gwmp.PULL_ACK:
            if packet.token == self._pull_token:
                self.counters.pull_acked += 1
                self.last_pull_ack = time.monotonic()
            return
        if packet.kind != gwmp.PULL_RESP:
            log.info(
                "forwarder %s: unexpected %s on the downlink socket", self.eui, packet.kind_name
            )
            return
        for c in (self.counters, self._interval):
            c.downlinks_received += 1
        txpk = (packet.payload or {}).get("txpk")
        if (
            isinstance(txpk, dict)
            and "tim" in txpk
            and "tmst" not in txpk
            and txpk.get("imme") is not True
        ):
            error = "GPS_UNLOCKED"  # only GPS time: this forwarder has no GPS
        else:
            try:
                error = self._schedule(gwmp.parse_txpk(txpk))
            except gwmp.GwmpError as exc:
                # Like the reference forwarder: a malformed txpk is dropped without TX_ACK.
                self.counters.tx_ack["malformed"] = self.counters.tx_ack.get("malformed", 0) + 1
                log.warning("forwarder %s: dropped malformed txpk: %s", self.eui, exc)
                return
        self.counters.tx_ack[error] = self.counters.tx_ack.get(error, 0) + 1
        self._send_down(gwmp.tx_ack(packet.token, self.eui, error))

    def _schedule(self, tx: gwmp.TxPacket) -> str:
        """Checks a downlink like the reference forwarder's JIT queue; the TX_ACK error."""
        low, high = EU868_TX_BAND_HZ
        if not low <= tx.freq_hz <= high:
            return "TX_FREQ"
        now = time.monotonic()
        at = now if tx.tmst is None else self._tmst_to_monotonic(tx.tmst, now)
        if tx.tmst is not None:
            if at - now < TX_MIN_LEAD_S:
                return "TOO_LATE"
            if at - now > TX_MAX_ADVANCE_S:
                return "TOO_EARLY"
        end = at + time_on_air_us(tx.sf, tx.bw_khz, 5, len(tx.data), 8, False) / 1e6
        self._scheduled = [s for s in self._scheduled if s[1] > now]
        if any(start < end and at < stop for start, stop, _ in self._scheduled):
            return "COLLISION_PACKET"
        handle = asyncio.get_running_loop().call_later(max(0.0, at - now), self._emit, tx)
        self._scheduled.append((at, end, handle))
        return "NONE"

    def _emit(self, tx: gwmp.TxPacket) -> None:
        for c in (self.counters, self._interval):
            c.downlinks_sent += 1
        self.medium._deliver(
            tx.data,
            tx.freq_hz,
            tx.sf,
            tx.bw_khz,
            source=self.eui,
            ipol=tx.ipol,
            loss=self.config.downlink_loss,
        )


class RadioMedium:
    """The medium: a UDP port for virtual radios, listeners, and virtual forwarders.

    Use `async with RadioMedium(port=0, forwarders=[...]) as medium:` then read
    `medium.address` (for sim.json), await `medium.frames.get()` for uplinks, call
    `medium.send_downlink(...)` to put a frame on air towards the radios.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        forwarders: list[ForwarderConfig] | tuple[ForwarderConfig, ...] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.delivered: list[Downlink] = []
        self.nodes: dict[Any, Any] = {}  # node id -> UDP address of its radio
        self.forwarders: list[VirtualForwarder] = []
        self.rejected = 0  # datagrams from radios that were not valid tx messages
        self._configs = list(forwarders)
        self._listeners: list[Callable[[Frame], None]] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._downlink_loss: dict[str, random.Random] = {}
        self._timers: set[asyncio.TimerHandle] = set()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the virtual radios send to."""
        if self._transport is None:
            raise RuntimeError("the radio medium is not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self._on_radio, "medium"), local_addr=(self.host, self.port)
        )
        self.port = self.address[1]
        for config in self._configs:
            await self.add_forwarder(config)
        log.info("radio medium listening on %s:%s", *self.address)

    async def stop(self) -> None:
        for forwarder in self.forwarders:
            await forwarder.stop()
        for handle in self._timers:
            handle.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> RadioMedium:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def add_forwarder(self, config: ForwarderConfig) -> VirtualForwarder:
        forwarder = VirtualForwarder(self, config)
        await forwarder.start()
        self.forwarders.append(forwarder)
        return forwarder

    def add_listener(self, callback: Callable[[Frame], None]) -> Callable[[], None]:
        """Calls `callback(frame)` for every uplink; returns a function that removes it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def link_quality(self, node: Any, source: str) -> tuple[float, float]:
        """(RSSI dBm, SNR dB) between a node and a forwarder (or "medium"), fixed per seed."""
        rng = random.Random(f"{self.seed}/link/{node}/{source}")
        rssi = float(rng.randint(-118, -50))
        snr = min(13.5, max(-17.5, (rssi + 112) / 3 + rng.uniform(-2.0, 2.0)))
        return rssi, round(snr * 4) / 4

    # -- radios -> medium -------------------------------------------------------------------

    def _on_radio(self, data: bytes, addr: Any) -> None:
        now = time.monotonic()
        try:
            msg = json.loads(data)
            if msg.get("type") != "tx":
                raise ValueError(f"type {msg.get('type')!r}")
            bw = float(msg["bw"])
            frame = Frame(
                node=msg["node"],
                freq=int(msg["freq"]),
                sf=int(msg["sf"]),
                bw=int(bw) if bw.is_integer() else bw,
                cr=int(msg.get("cr", 5)),
                data=bytes.fromhex(msg["data"]),
                time=now,
                ipol=bool(msg.get("ipol", False)),
                sync=int(msg.get("sync", PUBLIC_SYNC_WORD)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.rejected += 1
            log.info("radio medium: ignored datagram from %s: %s", addr, exc)
            return
        self.nodes[frame.node] = addr
        log.debug("uplink from %s: %s", frame.node, frame.data.hex())
        self.frames.put_nowait(frame)
        for callback in list(self._listeners):
            try:
                callback(frame)
            except Exception:  # a broken test listener must not silence the air
                log.exception("radio medium listener failed")
        for forwarder in self.forwarders:
            forwarder.hear(frame)

    # -- medium -> radios -------------------------------------------------------------------

    def send_downlink(
        self,
        data: bytes,
        freq: int,
        sf: int,
        bw: int | float,
        at_monotonic: float | None = None,
        *,
        ipol: bool = True,
        crc_error: bool = False,
    ) -> None:
        """Puts a downlink on air at time.monotonic() `at_monotonic` (None: now), towards
        every radio the medium has heard. Call from the medium's event loop."""
        delay = 0.0 if at_monotonic is None else max(0.0, at_monotonic - time.monotonic())
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._timers.discard(handle)
            self._deliver(data, freq, sf, bw, source="medium", ipol=ipol, crc_error=crc_error)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _deliver(
        self,
        data: bytes,
        freq: int,
        sf: int,
        bw: int | float,
        *,
        source: str,
        ipol: bool = True,
        loss: float = 0.0,
        crc_error: bool = False,
    ) -> None:
        reached = []
        rng = self._downlink_loss.setdefault(source, random.Random(f"{self.seed}/down/{source}"))
        for node, addr in self.nodes.items():
            if loss and rng.random() < loss:
                continue
            rssi, snr = self.link_quality(node, source)
            msg: dict[str, Any] = {
                "type": "rx",
                "node": node,
                "freq": freq,
                "sf": sf,
                "bw": bw,
                "cr": 5,
                "data": data.hex(),
                "rssi": rssi,
                "snr": snr,
                "ipol": ipol,
                "crc": False,  # LoRaWAN downlinks carry no payload CRC
            }
            if crc_error:
                msg["crc_error"] = True
            if self._transport is not None:
                self._transport.sendto(json.dumps(msg).encode(), addr)
                reached.append(node)
        self.delivered.append(
            Downlink(data, freq, sf, bw, time.monotonic(), source, ipol, tuple(reached))
        )
        log.debug("downlink from %s to %s: %s", source, reached, data.hex())


# -- command line ---------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m allmende.boards.virtual.medium",
        description="Radio medium for virtual LoRa nodes, feeding gateways as virtual "
        "Semtech UDP packet forwarders.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the radios send to")
    parser.add_argument("--port", type=int, default=0, help="UDP port for the radios (0: any)")
    parser.add_argument("--seed", type=int, default=0, help="seed for signal strength and loss")
    parser.add_argument(
        "--forwarder",
        action="append",
        default=[],
        metavar="EUI=HOST:PORT",
        help="a virtual packet forwarder with this gateway EUI towards this gateway "
        "(repeat for several)",
    )
    parser.add_argument(
        "--loss",
        action="append",
        default=[],
        metavar="EUI=P",
        help="uplink loss probability 0..1 of one forwarder",
    )
    parser.add_argument("--keepalive", type=float, default=5.0, help="PULL_DATA every S seconds")
    parser.add_argument("--stat-interval", type=float, default=30.0, help="stat every S seconds")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every frame")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    losses = {}
    for spec in args.loss:
        eui, _, value = spec.partition("=")
        losses[bytes.fromhex(eui).hex()] = float(value)
    configs = []
    for spec in args.forwarder:
        config = ForwarderConfig.parse(
            spec, keepalive_s=args.keepalive, stat_interval_s=args.stat_interval
        )
        config.uplink_loss = losses.get(config.eui, 0.0)
        configs.append(config)
    medium = RadioMedium(host=args.host, port=args.port, seed=args.seed, forwarders=configs)
    async with medium:
        host, port = medium.address
        print(
            json.dumps({"medium": [host, port], "forwarders": [c.eui for c in configs]}), flush=True
        )
        while True:
            frame = await medium.frames.get()
            print(
                json.dumps(
                    {
                        "node": frame.node,
                        "freq": frame.freq,
                        "sf": frame.sf,
                        "bw": frame.bw,
                        "data": frame.data.hex(),
                    }
                ),
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
