"""EU868 regional parameters: channels, data rates, RX defaults, duty cycle, time on air.

The one definition for both sides: the node's MAC (MicroPython) and the gateway's network
server (CPython, `allmende.firmware.app.lorawan.region`) read them from here.
"""

try:
    from micropython import const
except ImportError:  # CPython: the gateway

    def const(x):
        return x


MAX_CHANNELS = const(16)
DEFAULT_CHANNELS = const(3)  # 868.1, 868.3, 868.5 MHz; the network may not change them
MAX_DR = const(5)  # DR0..DR5 = SF12..SF7 at 125 kHz (DR6 SF7/250 and DR7 FSK unsupported)
MAX_DR_DEFINED = const(7)  # highest data rate EU868 defines (channel DR ranges may name it)
BW_KHZ = const(125)
MAX_TX_POWER = const(7)  # TXPower index: EIRP = MAX_EIRP_DBM - 2 * index
MAX_EIRP_DBM = const(16)
RX2_FREQ = const(869525000)
RX2_DR = const(0)
RECEIVE_DELAY1_S = const(1)
JOIN_ACCEPT_DELAY1_S = const(5)
ADR_ACK_LIMIT = const(64)
ADR_ACK_DELAY = const(32)
SUB_BANDS = const(5)

_FREQ_MIN = const(863000000)
_FREQ_MAX = const(870000000)
_DEFAULT_FREQ0 = const(868100000)
_DEFAULT_STEP = const(200000)

# Largest MACPayload (M) per data rate, no repeater: DR0-2 59, DR3 123, DR4-5 250 bytes.
_MAX_MAC_PAYLOAD = b"\x3b\x3b\x3b\x7b\xfa\xfa"

# Sub-bands (ETSI EN 300 220 as used by LoRaWAN EU868): [low, high) in Hz, and the
# off-time factor 1/dc - 1 (after a TX of T ms the sub-band is blocked for T * factor).
_BAND_LOW = (865000000, 868000000, 868700000, 869400000, 869700000)
_BAND_HIGH = (868000000, 868600000, 869200000, 869650000, 870000000)
_BAND_OFF_FACTOR = (99, 99, 999, 9, 99)  # 1 %, 1 % (g), 0.1 % (g1), 10 % (g2), 1 % (g3)


def default_freq(index):
    """Frequency (Hz) of default channel 0, 1 or 2."""
    return _DEFAULT_FREQ0 + _DEFAULT_STEP * index


def spreading_factor(dr):
    """Spreading factor of data rate `dr` (0..MAX_DR), all at BW_KHZ."""
    return 12 - dr


def max_mac_payload(dr):
    """Largest MACPayload (FHDR + FPort + FRMPayload) in bytes at data rate `dr`."""
    return _MAX_MAC_PAYLOAD[dr]


def rx1_dr(dr, offset):
    """Data rate of RX1 for an uplink at `dr` with RX1DROffset `offset`."""
    return dr - offset if dr > offset else 0


def tx_power_dbm(index):
    """EIRP in dBm of TXPower `index` (0 = 16 dBm, 7 = 2 dBm)."""
    return MAX_EIRP_DBM - 2 * index


def in_band(freq):
    """True when `freq` (Hz) lies in the EU 863-870 MHz band."""
    return _FREQ_MIN <= freq <= _FREQ_MAX


def sub_band(freq):
    """Index of the duty-cycle sub-band holding `freq` (Hz), or -1 when no sub-band does."""
    for i in range(SUB_BANDS):
        if _BAND_LOW[i] <= freq < _BAND_HIGH[i]:
            return i
    return -1


def off_factor(band):
    """Off-time factor of sub-band `band`: blocked for T * factor after a TX of T ms."""
    return _BAND_OFF_FACTOR[band]


def time_on_air_us(
    phy_len, sf, bw_khz=BW_KHZ, cr=1, preamble=8, crc=True, implicit_header=False, ldro=None
):
    """Time on air in microseconds of a LoRa frame of `phy_len` bytes (Semtech AN1200.13).

    `cr` 1..4 means 4/5..4/8. `ldro` (low data rate optimisation) defaults to on for
    symbols longer than 16 ms (SF11 and SF12 at 125 kHz). Exact for 125/250/500 kHz.
    """
    if ldro is None:
        ldro = (1 << sf) > 16 * bw_khz
    num = 8 * phy_len - 4 * sf + 28 + (16 if crc else 0) - (20 if implicit_header else 0)
    den = 4 * (sf - (2 if ldro else 0))
    blocks = (num + den - 1) // den if num > 0 else 0
    payload_symbols = 8 + blocks * (cr + 4)
    # In quarter symbols, so the preamble's 4.25 extra symbols stay integral.
    quarters = 4 * preamble + 17 + 4 * payload_symbols
    symbol_us = (1000 << sf) // bw_khz
    return symbol_us * quarters // 4


def symbol_ms(sf, bw_khz=BW_KHZ):
    """Length of one symbol in whole milliseconds, rounded up."""
    return ((1000 << sf) // bw_khz + 999) // 1000
