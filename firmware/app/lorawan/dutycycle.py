"""Duty-cycle bookkeeping and channel choice: a frame goes out only on a channel whose
sub-band (and the aggregated duty cycle of DutyCycleReq) is not blocked.

Block-until times are absolute wall-clock milliseconds kept in the session, so they
hold across deep sleep.
"""

import random

from lorawan import region, session
from lorawan.errors import DutyCycleDeferred, NoChannel
from micropython import const

# Longest frame on air: 64 bytes at SF12 take 2.79 s. A block further ahead than such a
# frame can cause means the wall clock was set back: it is dropped rather than obeyed.
_MAX_AIRTIME_MS = const(2800)


def _wait(s, slot, now):
    w = s.dc_until[slot] - now
    if slot == session.DC_AGGREGATED:
        longest = _MAX_AIRTIME_MS << s.max_dcycle
    else:
        longest = _MAX_AIRTIME_MS * (region.off_factor(slot) + 1)
    if w > longest:
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
