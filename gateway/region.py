"""EU868 rules the gateway's network server needs: data rates, RX windows, duty cycle, ADR.

From the LoRaWAN Regional Parameters (RP002-1.0.x, EU863-870) and ETSI EN 300 220 sub-bands.
"""

from __future__ import annotations

import math

# DR -> (spreading factor, bandwidth kHz). DR7 (FSK) is not supported by this gateway.
DATA_RATES: dict[int, tuple[int, int]] = {
    0: (12, 125),
    1: (11, 125),
    2: (10, 125),
    3: (9, 125),
    4: (8, 125),
    5: (7, 125),
    6: (7, 250),
}
DR_BY_SF_BW = {v: k for k, v in DATA_RATES.items()}
MAX_ADR_DR = 5  # ADR stays on 125 kHz channels

# Max MACPayload size M per DR (repeater-compatible), the FRMPayload limit is M - 8 - FOpts.
MAX_MAC_PAYLOAD = {0: 59, 1: 59, 2: 59, 3: 123, 4: 230, 5: 230, 6: 230}

DEFAULT_CHANNELS_HZ = (868_100_000, 868_300_000, 868_500_000)
DEFAULT_CH_MASK = 0x0007

RECEIVE_DELAY1_S = 1
RECEIVE_DELAY2_S = 2
JOIN_ACCEPT_DELAY1_S = 5
JOIN_ACCEPT_DELAY2_S = 6
RX2_FREQUENCY_HZ = 869_525_000
RX2_DR = 0

MAX_EIRP_DBM = 16
# TXPower index -> EIRP offset: index 0 is max EIRP, each step is -2 dB, up to index 7.
MAX_TX_POWER_INDEX = 7

# Demodulation floor (dB SNR) per spreading factor, the reference of the ADR margin.
REQUIRED_SNR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}

# ETSI EN 300 220 sub-bands of the 863-870 MHz band as LoRaWAN uses them: (low, high, duty).
SUB_BANDS: tuple[tuple[int, int, float], ...] = (
    (863_000_000, 865_000_000, 0.001),
    (865_000_000, 868_000_000, 0.01),
    (868_000_000, 868_600_000, 0.01),  # g1: the three default channels
    (868_700_000, 869_200_000, 0.001),  # g2
    (869_400_000, 869_650_000, 0.10),  # g3: RX2
    (869_700_000, 870_000_000, 0.01),  # g4
)


def data_rate(sf: int, bw_khz: int) -> int:
    """EU868 DR index of a LoRa modulation; KeyError if the region has no such DR."""
    return DR_BY_SF_BW[(sf, bw_khz)]


def rx1_data_rate(uplink_dr: int, rx1_dr_offset: int = 0) -> int:
    """EU868: RX1 DR = uplink DR - RX1DROffset, not below DR0."""
    return max(0, uplink_dr - rx1_dr_offset)


def sub_band(freq_hz: int) -> int | None:
    """Index into SUB_BANDS of the sub-band holding this frequency, None if outside all."""
    for i, (low, high, _) in enumerate(SUB_BANDS):
        if low <= freq_hz < high:
            return i
    return None


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

    Uplinks carry a payload CRC, LoRaWAN downlinks do not (crc=False). Low data-rate
    optimisation is on by default when a symbol lasts 16 ms or longer (SF11/SF12 at 125 kHz).
    """
    t_sym = (1 << sf) / (bw_khz * 1000.0)
    if low_dr_optimize is None:
        low_dr_optimize = t_sym >= 0.016
    de = 1 if low_dr_optimize else 0
    h = 0 if explicit_header else 1
    numerator = 8 * phy_len - 4 * sf + 28 + (16 if crc else 0) - 20 * h
    n_payload = 8 + max(math.ceil(numerator / (4 * (sf - 2 * de))) * (coding_rate + 4), 0)
    return (preamble + 4.25) * t_sym + n_payload * t_sym


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
        return None if band is None else (band, SUB_BANDS[band][2])

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
