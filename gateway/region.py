"""EU868 rules the gateway's network server needs: data rates, RX windows, duty cycle, ADR.

The regional parameters themselves (RP002-1.0.x EU863-870, ETSI EN 300 220 sub-bands, time
on air) are defined once, in firmware/app/lorawan/region.py, which the nodes run too; this
module adds what only a network server needs: duty-cycle bookings ahead of time and ADR.
"""

from __future__ import annotations

from allmende.firmware.app.lorawan import region as eu868

# DR -> (spreading factor, bandwidth kHz): DR0-5 from the shared EU868 definition, plus
# DR6 (SF7/250 kHz), which gateways hear. DR7 (FSK) is not supported by this gateway.
DATA_RATES: dict[int, tuple[int, int]] = {
    dr: (eu868.spreading_factor(dr), eu868.BW_KHZ) for dr in range(eu868.MAX_DR + 1)
} | {6: (7, 250)}
DR_BY_SF_BW = {v: k for k, v in DATA_RATES.items()}
MAX_ADR_DR = eu868.MAX_DR  # ADR stays on 125 kHz channels

# Max MACPayload size M per DR; the FRMPayload limit is M - 8 - FOpts.
MAX_MAC_PAYLOAD = {dr: eu868.max_mac_payload(dr) for dr in range(eu868.MAX_DR + 1)}
MAX_MAC_PAYLOAD[6] = MAX_MAC_PAYLOAD[5]

DEFAULT_CHANNELS_HZ = tuple(eu868.default_freq(i) for i in range(eu868.DEFAULT_CHANNELS))
DEFAULT_CH_MASK = (1 << eu868.DEFAULT_CHANNELS) - 1

RECEIVE_DELAY1_S = eu868.RECEIVE_DELAY1_S
RECEIVE_DELAY2_S = RECEIVE_DELAY1_S + 1
JOIN_ACCEPT_DELAY1_S = eu868.JOIN_ACCEPT_DELAY1_S
JOIN_ACCEPT_DELAY2_S = JOIN_ACCEPT_DELAY1_S + 1
RX2_FREQUENCY_HZ = eu868.RX2_FREQ
RX2_DR = eu868.RX2_DR

MAX_EIRP_DBM = eu868.MAX_EIRP_DBM
# TXPower index -> EIRP offset: index 0 is max EIRP, each step is -2 dB, up to index 7.
MAX_TX_POWER_INDEX = eu868.MAX_TX_POWER

# Demodulation floor (dB SNR) per spreading factor, the reference of the ADR margin.
REQUIRED_SNR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}


def data_rate(sf: int, bw_khz: int) -> int:
    """EU868 DR index of a LoRa modulation; KeyError if the region has no such DR."""
    return DR_BY_SF_BW[(sf, bw_khz)]


def rx1_data_rate(uplink_dr: int, rx1_dr_offset: int = 0) -> int:
    """EU868: RX1 DR = uplink DR - RX1DROffset, not below DR0."""
    return max(0, uplink_dr - rx1_dr_offset)


def sub_band(freq_hz: int) -> int | None:
    """Index of the ETSI sub-band holding this frequency (shared EU868 table), None if none."""
    band: int = eu868.sub_band(freq_hz)
    return None if band < 0 else band


def duty_cycle(band: int) -> float:
    """Allowed fraction of air time in a sub-band (1 %, 0.1 %, 10 %)."""
    return 1.0 / (eu868.off_factor(band) + 1)


def time_on_air_s(
    phy_len: int,
    sf: int,
    bw_khz: int,
    *,
    coding_rate: int = 1,
    preamble: int = 8,
    crc: bool = True,
    explicit_header: bool = True,
    low_dr_optimize: bool | None = None,
) -> float:
    """Air time of a LoRa frame in seconds (Semtech AN1200.13). `coding_rate` 1..4 is 4/5..4/8.

    Uplinks carry a payload CRC, LoRaWAN downlinks do not (crc=False).
    """
    us: int = eu868.time_on_air_us(phy_len, sf, bw_khz, cr=coding_rate, preamble=preamble,
                                   crc=crc, implicit_header=not explicit_header,
                                   ldro=low_dr_optimize)
    return us / 1e6


class DutyCycle:
    """The duty cycle of one transmitter (a packet forwarder's radio, a serial modem).

    ETSI's off-time rule, per sub-band: a transmission of `toa` seconds starting at `start`
    occupies the sub-band until start + toa / duty. Downlinks are booked ahead of time (RX1
    is a second or five away), so each sub-band keeps its bookings and a new one must not
    overlap any of them, before or after.
    """

    def __init__(self) -> None:
        self.bookings: dict[int, list[tuple[float, float]]] = {}

    def _band(self, freq_hz: int) -> tuple[int, float] | None:
        band = sub_band(freq_hz)
        return None if band is None else (band, duty_cycle(band))

    def can_send(self, freq_hz: int, start: float, toa_s: float) -> bool:
        found = self._band(freq_hz)
        if found is None:
            return False
        band, duty = found
        end = start + toa_s / duty
        return all(end <= s or start >= e for s, e in self.bookings.get(band, ()))

    def book(self, freq_hz: int, start: float, toa_s: float) -> tuple[int, float, float] | None:
        """Books the air time; returns a handle for `release`."""
        found = self._band(freq_hz)
        if found is None:
            return None
        band, duty = found
        booking = (start, start + toa_s / duty)
        bookings = self.bookings.setdefault(band, [])
        # Bookings whose off-time is long over cannot collide with anything new.
        bookings[:] = [b for b in bookings if b[1] > start - 3600.0]
        bookings.append(booking)
        return (band, *booking)

    def release(self, handle: tuple[int, float, float] | None) -> None:
        """Gives the air time back (a transmission the radio refused to send)."""
        if handle is None:
            return
        band, start, end = handle
        bookings = self.bookings.get(band, [])
        if (start, end) in bookings:
            bookings.remove((start, end))


def adr_step(
    *,
    max_snr_db: float,
    sf: int,
    dr: int,
    tx_power_index: int,
    installation_margin_db: float = 10.0,
) -> tuple[int, int]:
    """Semtech's basic ADR: (new DR, new TXPower index) from the best SNR of recent uplinks.

    Each 3 dB of margin above the demodulation floor plus the installation margin raises
    the DR by one (up to DR5), then lowers the power by one step; a negative margin raises
    the power again (the DR is never lowered: the node's ADR back-off does that).
    """
    margin = max_snr_db - REQUIRED_SNR_DB.get(sf, -7.5) - installation_margin_db
    steps = int(margin // 3)
    while steps > 0 and dr < MAX_ADR_DR:
        dr += 1
        steps -= 1
    while steps > 0 and tx_power_index < MAX_TX_POWER_INDEX:
        tx_power_index += 1
        steps -= 1
    while steps < 0 and tx_power_index > 0:
        tx_power_index -= 1
        steps += 1
    return dr, tx_power_index
