"""Class A downlink scheduling for EU868: RX1 or RX2, through the best receiver, within duty cycle.

A transmitter is whatever can put a frame on air at a receiver's timestamp: a packet
forwarder (PULL_RESP to the address of its last PULL_DATA) or a serial modem. Each has its
own duty-cycle budget: the gateway's radios, not the nodes', are limited here.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from . import region
from .config import NetworkConfig
from .gwmp import TxPacket
from .metrics import Metrics
from .network import Reception, Uplink

log = logging.getLogger("allmende.gateway.downlink")

MIN_LEAD_S = 0.05  # a transmitter needs the frame at least this long before it goes on air
ATTEMPT_TTL_S = 30.0  # forget attempts whose TX_ACK never came (GWMP v1 forwarders)


class Transmitter(Protocol):
    name: str

    def send(self, token: int, tx: TxPacket) -> bool:
        """Hands one downlink to the radio; False when there is no route to it right now."""
        ...


@dataclass(frozen=True)
class Window:
    name: str  # "rx1" / "rx2"
    delay_s: int
    freq_hz: int
    sf: int
    bw_khz: int


@dataclass
class Attempt:
    phy: bytes = field(repr=False)
    reception: Reception
    remaining: list[Window]
    window: Window
    created: float
    booking: tuple[int, float, float] | None = None
    dev: str = ""


class DownlinkScheduler:
    def __init__(
        self, config: NetworkConfig, metrics: Metrics, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.transmitters: dict[str, Transmitter] = {}
        self.duty: dict[str, region.DutyCycle] = {}
        self.pending: dict[tuple[str, int], Attempt] = {}

    def register(self, transmitter: Transmitter) -> None:
        self.transmitters[transmitter.name] = transmitter
        self.duty.setdefault(transmitter.name, region.DutyCycle())

    def windows(self, uplink: Uplink, reception: Reception) -> list[Window]:
        rx = reception.rx
        try:
            up_dr = region.data_rate(rx.sf, rx.bw_khz)
        except KeyError:
            up_dr = None
        if uplink.kind == "join":
            d1, offset = region.JOIN_ACCEPT_DELAY1_S, 0
            rx2_dr, rx2_freq = region.RX2_DR, region.RX2_FREQUENCY_HZ  # defaults until joined
        else:
            session = uplink.session
            d1, offset = max(1, session.rx1_delay_s), session.rx1_dr_offset
            rx2_dr, rx2_freq = session.rx2_dr, self.config.rx2_frequency
        out = []
        if up_dr is not None:
            sf, bw = region.DATA_RATES[region.rx1_data_rate(up_dr, offset)]
            out.append(Window("rx1", d1, rx.freq_hz, sf, bw))
        sf2, bw2 = region.DATA_RATES[rx2_dr]
        out.append(Window("rx2", d1 + 1, rx2_freq, sf2, bw2))
        return out

    def schedule(self, phy: bytes, uplink: Uplink) -> str:
        """Sends `phy` in the first window that is still ahead, has a route and duty-cycle
        budget. Returns the outcome, also counted in allmende_gateway_downlinks_total."""
        now = self.clock()
        self._expire(now)
        # Best copy first; a receiver without a downlink route gives way to the next one.
        ranked = sorted(uplink.receptions, key=lambda r: (r.rx.snr, r.rx.rssi), reverse=True)
        result = "dropped_no_route"
        for reception in ranked:
            windows = self.windows(uplink, reception)
            result = self._try(phy, reception, windows, now, uplink.device.dev_eui_hex)
            if result != "dropped_no_route":
                break
        self.metrics.inc(self.metrics.downlinks, result)
        return result

    def _try(
        self, phy: bytes, reception: Reception, windows: list[Window], now: float, dev: str
    ) -> str:
        transmitter = self.transmitters.get(reception.transmitter)
        if transmitter is None:
            return "dropped_no_route"
        duty = self.duty[transmitter.name]
        result = "dropped_too_late"
        for i, window in enumerate(windows):
            start = reception.received_at + window.delay_s
            if start - now < MIN_LEAD_S:
                continue
            toa = region.time_on_air_s(len(phy), window.sf, window.bw_khz, crc=False)
            if not duty.can_send(window.freq_hz, start, toa):
                result = "dropped_duty_cycle"
                continue
            token = secrets.randbits(16)
            tx = TxPacket(
                data=phy,
                freq_hz=window.freq_hz,
                sf=window.sf,
                bw_khz=window.bw_khz,
                tmst=(reception.rx.tmst + window.delay_s * 1_000_000) & 0xFFFFFFFF,
                power_dbm=self.config.tx_power_dbm,
            )
            if not transmitter.send(token, tx):
                return "dropped_no_route"
            booking = duty.book(window.freq_hz, start, toa)
            self.pending[(transmitter.name, token)] = Attempt(
                phy, reception, windows[i + 1 :], window, now, booking, dev
            )
            log.debug(
                "downlink_scheduled",
                extra={"fields": {"device": dev, "window": window.name, "via": transmitter.name}},
            )
            return f"scheduled_{window.name}"
        return result

    def on_tx_ack(self, transmitter: str, token: int, error: str) -> None:
        """The transmitter's verdict on a downlink; on refusal the next window is tried."""
        attempt = self.pending.pop((transmitter, token), None)
        if attempt is None:
            self.metrics.inc(self.metrics.downlinks, "tx_ack_unknown")
            return
        if error in ("NONE", ""):
            self.metrics.inc(self.metrics.downlinks, "sent")
            return
        self.metrics.inc(self.metrics.downlinks, "refused_" + error.lower()[:24])
        self.duty[transmitter].release(attempt.booking)
        log.info(
            "downlink_refused",
            extra={
                "fields": {"device": attempt.dev, "window": attempt.window.name, "error": error}
            },
        )
        if attempt.remaining:
            result = self._try(
                attempt.phy, attempt.reception, attempt.remaining, self.clock(), attempt.dev
            )
            self.metrics.inc(self.metrics.downlinks, result)

    def _expire(self, now: float) -> None:
        if len(self.pending) < 64:
            return
        for key in [k for k, a in self.pending.items() if now - a.created > ATTEMPT_TTL_S]:
            del self.pending[key]
