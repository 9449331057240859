"""LoRaWAN 1.0.3 MAC commands (EU868): applies the network's requests, queues the answers.

Handled: LinkCheckAns, LinkADRReq, DutyCycleReq, RXParamSetupReq, DevStatusReq,
NewChannelReq, RXTimingSetupReq. An unknown or truncated command ends parsing: its length
is unknown, so nothing after it can be read safely.
"""

from lorawan import region, session
from micropython import const

LINK_CHECK = const(0x02)
_LINK_ADR = const(0x03)
_DUTY_CYCLE = const(0x04)
_RX_PARAM_SETUP = const(0x05)
_DEV_STATUS = const(0x06)
_NEW_CHANNEL = const(0x07)
_RX_TIMING_SETUP = const(0x08)

# Payload length of each downlink command (network -> device), by CID; 0xFF = unknown.
_DOWN_LEN = b"\xff\xff\x02\x04\x01\x04\x00\x05\x01"
# Payload length of each uplink command (device -> network), by CID.
_UP_LEN = b"\x00\x00\x00\x01\x00\x01\x02\x01\x00"

BATTERY_UNKNOWN = const(255)


def _freq(cmds, at):
    # 24-bit frequency in units of 100 Hz, little-endian.
    return (cmds[at] | cmds[at + 1] << 8 | cmds[at + 2] << 16) * 100


def _usable_mask(s, mask, dr):
    # True when some channel in `mask` is defined and allows `dr`.
    for i in range(region.MAX_CHANNELS):
        if mask >> i & 1 and s.ch_freq[i]:
            r = s.ch_dr[i]
            if r & 15 <= dr <= r >> 4:
                return True
    return False


def _defined_mask(s):
    mask = 0
    for i in range(region.MAX_CHANNELS):
        if s.ch_freq[i]:
            mask |= 1 << i
    return mask


def _link_adr(s, cmds, at):
    dr = cmds[at] >> 4
    power = cmds[at] & 15
    mask = cmds[at + 1] | cmds[at + 2] << 8
    control = cmds[at + 3] >> 4 & 7
    nb_trans = cmds[at + 3] & 15
    defined = _defined_mask(s)
    if control == 6:
        mask = defined
    mask_ok = control in (0, 6) and mask and not mask & ~defined
    if not mask_ok:
        mask = s.ch_mask
    if dr == 15:  # 0xF: keep the current value (LoRaWAN 1.0.4 wording, harmless in 1.0.3)
        dr = s.dr
    dr_ok = dr <= region.MAX_DR and _usable_mask(s, mask, dr)
    if power == 15:
        power = s.tx_power
    power_ok = power <= region.MAX_TX_POWER
    status = (4 if power_ok else 0) | (2 if dr_ok else 0) | (1 if mask_ok else 0)
    if status == 7:  # all or nothing
        s.ch_mask = mask
        s.dr = dr
        s.tx_power = power
        if nb_trans:
            s.nb_trans = nb_trans
    s.add_answer(bytes((_LINK_ADR, status)))


def _rx_param_setup(s, cmds, at):
    offset = cmds[at] >> 4 & 7
    rx2_dr = cmds[at] & 15
    freq = _freq(cmds, at + 1)
    status = (
        (4 if offset <= region.MAX_DR else 0)
        | (2 if rx2_dr <= region.MAX_DR else 0)
        | (1 if region.in_band(freq) else 0)
    )
    if status == 7:
        s.rx1_offset = offset
        s.rx2_dr = rx2_dr
        s.rx2_freq = freq
    s.add_answer(bytes((_RX_PARAM_SETUP, status)), sticky=True)


def _new_channel(s, cmds, at):
    index = cmds[at]
    freq = _freq(cmds, at + 1)
    dr_range = cmds[at + 4]
    low = dr_range & 15
    high = dr_range >> 4
    settable = region.DEFAULT_CHANNELS <= index < region.MAX_CHANNELS
    freq_ok = settable and (freq == 0 or region.sub_band(freq) >= 0)
    dr_ok = freq == 0 or (low <= high <= region.MAX_DR_DEFINED and low <= region.MAX_DR)
    if freq_ok and dr_ok:
        s.ch_freq[index] = freq
        s.ch_dr[index] = dr_range if freq else 0
        if freq:
            s.ch_mask |= 1 << index
        else:
            s.ch_mask &= ~(1 << index)
    s.add_answer(bytes((_NEW_CHANNEL, (2 if dr_ok else 0) | (1 if freq_ok else 0))))


def apply(s, cmds, battery, snr):
    """Applies the commands in `cmds` to session `s`, queuing answers in it.

    `battery` is the DevStatusAns battery byte (0 external power, 1..254, 255 unknown),
    `snr` the SNR in dB of this downlink, or None. Returns the (margin dB, gateway count)
    of a LinkCheckAns, or None.
    """
    link_check = None
    at = 0
    n = len(cmds)
    while at < n:
        cid = cmds[at]
        size = _DOWN_LEN[cid] if cid < len(_DOWN_LEN) else 0xFF
        if size == 0xFF or at + 1 + size > n:
            break
        at += 1
        if cid == LINK_CHECK:
            link_check = (cmds[at], cmds[at + 1])
        elif cid == _LINK_ADR:
            _link_adr(s, cmds, at)
        elif cid == _DUTY_CYCLE:
            s.max_dcycle = cmds[at] & 15
            s.add_answer(bytes((_DUTY_CYCLE,)))
        elif cid == _RX_PARAM_SETUP:
            _rx_param_setup(s, cmds, at)
        elif cid == _DEV_STATUS:
            margin = 0 if snr is None else max(-32, min(31, round(snr)))
            s.add_answer(bytes((_DEV_STATUS, battery & 0xFF, margin & 0x3F)))
        elif cid == _NEW_CHANNEL:
            _new_channel(s, cmds, at)
        elif cid == _RX_TIMING_SETUP:
            s.rx_delay = cmds[at] & 15 or 1
            s.add_answer(bytes((_RX_TIMING_SETUP,)), sticky=True)
        at += size
    return link_check


def write_fopts(s, buf, at, room):
    """Copies queued answers (sticky first) and a LinkCheckReq into buf[at:], whole commands
    only, at most `room` bytes. Returns the length written."""
    n = 0
    for src in (s.sticky, s.ans):
        i = 0
        while i < len(src):
            cid = src[i]
            size = 1 + (_UP_LEN[cid] if cid < len(_UP_LEN) else 0)
            if n + size > room or i + size > len(src):
                break
            buf[at + n : at + n + size] = src[i : i + size]
            n += size
            i += size
    if s.flags & session.F_LINK_CHECK and n < room:
        buf[at + n] = LINK_CHECK
        n += 1
    return n
