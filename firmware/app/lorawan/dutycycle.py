"""Duty-cycle bookkeeping and channel choice: a frame goes out only on a channel whose
sub-band (and the aggregated duty cycle of DutyCycleReq) is not blocked.

Block-until times are absolute wall-clock milliseconds kept in the session, so they
hold across deep sleep.
"""

import random

from lorawan import region, session
from lorawan.errors import DutyCycleDeferred, NoChannel
from micropython import const

# Longest block a legal TX can cause (about 2.8 s at SF12 in the 0.1 % sub-band): a block
# further ahead means the wall clock was set back, so it is dropped rather than obeyed.
_MAX_BLOCK_MS = const(3000000)


def _wait(s, slot, now):
    w = s.dc_until[slot] - now
    if w > _MAX_BLOCK_MS:
        s.dc_until[slot] = 0
        return 0
    return w if w > 0 else 0


def _scan(s, now, dr, join):
    # (mask of channels free now, shortest wait in ms among blocked ones or -1).
    free = 0
    best = -1
    aggregated = _wait(s, session.DC_AGGREGATED, now)
    count = region.DEFAULT_CHANNELS if join else region.MAX_CHANNELS
    for i in range(count):
        freq = s.ch_freq[i]
        if not freq or not (join or s.ch_mask >> i & 1):
            continue
        r = s.ch_dr[i]
        if not r & 15 <= dr <= r >> 4:
            continue
        band = region.sub_band(freq)
        if band < 0:
            continue
        w = max(_wait(s, band, now), aggregated)
        if w == 0:
            free |= 1 << i
        elif best < 0 or w < best:
            best = w
    return free, best


def wait_ms(s, now, dr, join=False):
    """Milliseconds until a frame at `dr` may go out (0 = now); raises NoChannel if never."""
    free, best = _scan(s, now, dr, join)
    if free:
        return 0
    if best < 0:
        raise NoChannel(dr)
    return best


def pick(s, now, dr, join=False):
    """Index of a random free channel for `dr` (joins: default channels only).

    Raises DutyCycleDeferred(wait_ms) when every candidate is blocked, NoChannel when no
    channel allows `dr` at all.
    """
    free, best = _scan(s, now, dr, join)
    if not free:
        if best < 0:
            raise NoChannel(dr)
        raise DutyCycleDeferred(best)
    n = 0
    for i in range(region.MAX_CHANNELS):
        n += free >> i & 1
    k = random.getrandbits(8) % n
    for i in range(region.MAX_CHANNELS):
        if free >> i & 1:
            if not k:
                return i
            k -= 1
    return -1  # not reached


def note_tx(s, start, freq, airtime_ms):
    """Blocks the sub-band of `freq` (and the aggregated budget) after a TX from `start`."""
    band = region.sub_band(freq)
    s.dc_until[band] = start + airtime_ms * (region.off_factor(band) + 1)
    if s.max_dcycle:
        s.dc_until[session.DC_AGGREGATED] = start + airtime_ms * (1 << s.max_dcycle)
