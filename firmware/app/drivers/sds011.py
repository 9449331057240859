"""Nova Fitness SDS011 particulate-matter sensor (PM2.5, PM10) over a UART.

Protocol: "Laser Dust Sensor Control Protocol V1.3", 9600 8N1. The sensor sends 10-byte
frames `AA C0 pm25_lo pm25_hi pm10_lo pm10_hi id1 id2 sum AB` (data) and
`AA C5 cmd d1 d2 d3 id1 id2 sum AB` (replies); the host sends 19-byte commands
`AA B4 cmd d1..d12 FF FF sum AB`. `sum` is the low byte of the sum of the bytes between the
command byte and the checksum.

The fan is duty-cycled: each reading wakes the sensor, waits out the warm-up, collects
`samples` frames and puts it back to sleep. The sensor stays in *active reporting* (one frame
per second while the fan runs): it is the factory default and the setting persists in the
sensor, so the driver only changes it when it finds the sensor in query mode, instead of
rewriting the sensor's setting on every wake; the sensor paces the samples at its own 1 Hz
update rate (the protocol asks for at least 3 s between queries in query mode); and frames
buffered during the warm-up are flushed before sampling, so no stale frame is counted.
Like sensor.community's airrohr, the reported value is the mean of the samples without the
highest and the lowest one.
"""

import time
from array import array

try:
    from micropython import const
except ImportError:  # CPython: the host tests exercise the pure functions

    def const(x):
        return x


from payload import FLAG_PM_FAULT, FLAG_PM_WARMUP

_HEAD = const(0xAA)
_TAIL = const(0xAB)
_CMD = const(0xB4)  # host -> sensor command frame
_DATA = const(0xC0)  # sensor -> host measurement frame
_REPLY = const(0xC5)  # sensor -> host command reply
_FRAME_LEN = const(10)
_CMD_LEN = const(19)

_CMD_REPORTING_MODE = const(0x02)
_CMD_SLEEP_WORK = const(0x06)
_GET = const(0)
_SET = const(1)
_MODE_ACTIVE = const(0)  # 1 would be query mode
_SLEEP = const(0)
_WORK = const(1)

_TRIES = const(3)  # a sleeping sensor may miss the command that wakes it
_POLL_MS = const(20)  # ~20 bytes arrive in that time at 9600 baud
_RX_LEN = const(32)
_DRAIN_MAX = const(64)  # bounds the flush loop even if bytes keep coming
_PM_MAX_RAW = const(9999)  # 999.9 ug/m3: the sensor's measuring range

# Results of FrameParser.feed
FRAME_NONE = const(0)
FRAME_DATA = const(1)
FRAME_REPLY = const(2)
FRAME_BAD = const(3)

# The datasheet says the readings are stable after the fan has run for 30 s.
STABLE_MS = const(30000)


def checksum(buf, start, end):
    """Low byte of the sum of buf[start:end] (the SDS011 checksum), without slicing."""
    s = 0
    for i in range(start, end):
        s += buf[i]
    return s & 0xFF


def trimmed_mean(values, n):
    """Mean of values[:n] without one highest and one lowest value (plain mean when n < 3)."""
    if n <= 0:
        return None
    total = 0
    lo = hi = values[0]
    for i in range(n):
        v = values[i]
        total += v
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    if n < 3:
        return total / n
    return (total - lo - hi) / (n - 2)


class FrameParser:
    """Finds checksummed frames in a byte stream, resynchronising on the AA header.

    `feed(byte)` returns FRAME_DATA or FRAME_REPLY when `frame` holds a complete valid frame,
    FRAME_BAD when a header-aligned frame failed its tail or checksum (the search then restarts
    at the next AA after that header, so a frame hidden behind garbage is still found), and
    FRAME_NONE otherwise. Allocates nothing.
    """

    def __init__(self):
        self.frame = bytearray(_FRAME_LEN)
        self._n = 0
        self.bad_frames = 0
        self.dropped = 0  # bytes skipped while hunting for a header

    def reset(self):
        self._n = 0

    def feed(self, byte):
        f = self.frame
        f[self._n] = byte
        self._n += 1
        if self._n < _FRAME_LEN:
            self._resync(0)
            return FRAME_NONE
        if f[9] == _TAIL and checksum(f, 2, 8) == f[8]:
            self._n = 0
            return FRAME_DATA if f[1] == _DATA else FRAME_REPLY
        self.bad_frames += 1
        self._resync(1)
        return FRAME_BAD

    def _resync(self, start):
        # Drop leading bytes until what is buffered can still be the start of a frame.
        f = self.frame
        n = self._n
        k = start
        while k < n:
            if f[k] == _HEAD and (n - k < 2 or f[k + 1] == _DATA or f[k + 1] == _REPLY):
                break
            k += 1
        if k:
            for i in range(n - k):
                f[i] = f[i + k]
            self._n = n - k
            self.dropped += k


class SDS011:
    """SDS011 over a machine.UART (9600 baud); see the module docstring for the cycle.

    `warmup_ms` and `samples` may be changed between readings. `frame_ms` is the sensor's
    report interval (it bounds how long sampling may take); readings taken after less than
    `stable_ms` of fan time are flagged FLAG_PM_WARMUP.
    """

    def __init__(self, uart, *, warmup_ms=30000, samples=5, frame_ms=1000, reply_ms=1000,
                 stable_ms=STABLE_MS):
        self.uart = uart
        self.warmup_ms = warmup_ms
        self.samples = samples
        self.frame_ms = frame_ms
        self.reply_ms = reply_ms
        self.stable_ms = stable_ms
        self.parser = FrameParser()
        self.implausible = 0  # checksummed frames rejected by range or device id
        self.device_id = None  # (id1, id2) from the sensor's replies
        self._started = None  # ticks_ms when the fan was switched on
        self._cmd = bytearray(_CMD_LEN)
        self._rx = bytearray(_RX_LEN)
        self._rx_pos = 0
        self._rx_len = 0
        self._pm25 = self._pm10 = None

    @property
    def bad_frames(self):
        return self.parser.bad_frames

    def start(self):
        """Wakes fan and laser (ahead of read_into, to overlap the warm-up with other work).

        Returns False when the sensor did not answer.
        """
        if not self._command(_CMD_SLEEP_WORK, _SET, _WORK):
            return False
        self._started = time.ticks_ms()
        if not self._command(_CMD_REPORTING_MODE, _GET, 0):
            return False
        if self.parser.frame[4] != _MODE_ACTIVE:
            return self._command(_CMD_REPORTING_MODE, _SET, _MODE_ACTIVE)
        return True

    def sleep(self):
        """Stops fan and laser; returns whether the sensor confirmed."""
        self._started = None
        return self._command(_CMD_SLEEP_WORK, _SET, _SLEEP, tries=2)

    def read_into(self, reading):
        """Stores pm25 and pm10 (ug/m3, None when not valid) into `reading`; returns flags."""
        reading["pm25"] = None
        reading["pm10"] = None
        try:
            if self._started is None and not self.start():
                return FLAG_PM_FAULT
            return self._collect(reading)
        except OSError:
            return FLAG_PM_FAULT
        finally:
            if self._started is not None:  # the fan may be running: stop it
                try:
                    self.sleep()
                except OSError:
                    pass

    def _collect(self, reading):
        n = self.samples
        if n < 1:
            return FLAG_PM_FAULT
        if self._pm25 is None or len(self._pm25) < n:
            self._pm25 = array("H", bytes(2 * n))
            self._pm10 = array("H", bytes(2 * n))
        wait = time.ticks_diff(time.ticks_add(self._started, self.warmup_ms), time.ticks_ms())
        if wait > 0:
            time.sleep_ms(wait)
        fan_ms = time.ticks_diff(time.ticks_ms(), self._started)
        flags = FLAG_PM_WARMUP if fan_ms < self.stable_ms else 0
        self._drain()
        # Room for every other frame being bad before giving up.
        deadline = time.ticks_add(time.ticks_ms(), (n + n // 2 + 1) * self.frame_ms)
        f = self.parser.frame
        count = 0
        while count < n:
            kind = self._next_frame(deadline)
            if kind == FRAME_NONE:
                break
            if kind != FRAME_DATA:
                continue
            pm25 = f[2] | (f[3] << 8)
            pm10 = f[4] | (f[5] << 8)
            if pm25 > _PM_MAX_RAW or pm10 > _PM_MAX_RAW or not self._same_device(f):
                self.implausible += 1
                continue
            self._pm25[count] = pm25
            self._pm10[count] = pm10
            count += 1
        if count < (n + 1) // 2:
            return FLAG_PM_FAULT
        reading["pm25"] = trimmed_mean(self._pm25, count) / 10
        reading["pm10"] = trimmed_mean(self._pm10, count) / 10
        return flags

    def _same_device(self, f):
        # A frame whose id differs from the one in the sensor's replies is line noise that
        # happened to pass the 8-bit checksum.
        ident = self.device_id
        return ident is None or (f[6] == ident[0] and f[7] == ident[1])

    def _command(self, cmd, arg1, arg2, tries=_TRIES):
        c = self._cmd
        c[0] = _HEAD
        c[1] = _CMD
        c[2] = cmd
        c[3] = arg1
        c[4] = arg2
        for i in range(5, 15):
            c[i] = 0
        c[15] = 0xFF  # device id FFFF: whichever sensor is on the line
        c[16] = 0xFF
        c[17] = checksum(c, 2, 17)
        c[18] = _TAIL
        f = self.parser.frame
        for _ in range(tries):
            self.uart.write(c)
            deadline = time.ticks_add(time.ticks_ms(), self.reply_ms)
            while True:
                kind = self._next_frame(deadline)
                if kind == FRAME_NONE:
                    break
                if kind == FRAME_REPLY and f[2] == cmd and (arg1 == _GET or f[4] == arg2):
                    ident = self.device_id
                    if ident is None or ident[0] != f[6] or ident[1] != f[7]:
                        self.device_id = (f[6], f[7])
                    return True
        return False

    def _next_frame(self, deadline):
        # Feeds received bytes to the parser until it reports something or the deadline passes.
        p = self.parser
        rx = self._rx
        while True:
            while self._rx_pos < self._rx_len:
                kind = p.feed(rx[self._rx_pos])
                self._rx_pos += 1
                if kind != FRAME_NONE:
                    return kind
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return FRAME_NONE
            n = self.uart.any()
            if n:
                self._rx_pos = 0
                self._rx_len = self.uart.readinto(rx, min(n, _RX_LEN)) or 0
            else:
                time.sleep_ms(_POLL_MS)

    def _drain(self):
        # Discards frames queued during the warm-up: only fresh frames count as samples.
        for _ in range(_DRAIN_MAX):
            n = self.uart.any()
            if not n:
                break
            self.uart.readinto(self._rx, min(n, _RX_LEN))
        self._rx_pos = self._rx_len = 0
        self.parser.reset()
