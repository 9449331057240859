"""Simulated Nova Fitness SDS011 for the virtual board's UART: real frames, commands and timing.

Power-on state as a real sensor: working (fan on), active reporting. While working in active
mode it emits a data frame every `frame_ms` (1 s on the real sensor), on a grid that starts
when the fan starts; in query mode it answers each query command with a fresh measurement.
It answers the set/get commands for reporting mode (0x02) and sleep/work (0x06), the query
(0x04) and the firmware version (0x07); while asleep any command wakes it (as the protocol
says). Frames the host has not collected for a long time are dropped (an RX buffer overruns),
at most `backlog` frames are delivered at once.

Fault modes (`env.fault("sds011")`), deterministic through the seeded generator:
"bad_checksum" (every data frame's checksum is wrong), "garbage" (1..8 random bytes, biased
towards the protocol's own header and tail bytes, before every frame), "corrupt" (one frame
in three has a byte flipped or lost), "silent" (nothing is ever sent), "out_of_range" (well-formed
data frames carrying 6553.5 ug/m3, beyond the sensor's 999.9: a plausibility check's test).
"""

import time

_HEAD = 0xAA
_TAIL = 0xAB
_CMD = 0xB4
_DATA = 0xC0
_REPLY = 0xC5
_CMD_LEN = 19
_FIRMWARE = (25, 1, 31)  # yy, mm, dd as the version reply reports it


class XorShift:
    """A tiny seeded generator (xorshift32): the sim's only source of randomness."""

    def __init__(self, seed):
        self.state = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def below(self, n):
        return self.next() % n


def frame(kind, b2, b3, b4, b5, id1, id2, bad_checksum=False):
    """One 10-byte sensor frame (data 0xC0 or reply 0xC5)."""
    f = bytearray((_HEAD, kind, b2, b3, b4, b5, id1, id2, 0, _TAIL))
    s = (b2 + b3 + b4 + b5 + id1 + id2) & 0xFF
    f[8] = (s + 1) & 0xFF if bad_checksum else s
    return f


class SDS011Sim:
    """UART device (see machine.UART of the virtual board): host_write / host_read_available."""

    def __init__(self, env, *, seed=None, frame_ms=1000, device_id=0xC1D2, backlog=25):
        self.env = env
        if seed is None:  # draw from the world's seeded generator: each wake gets its own noise
            rand = getattr(env, "rand", None)
            seed = int(rand() * 0xFFFFFFFF) if rand else 1
        self.rng = XorShift(seed)
        self.frame_ms = frame_ms
        self.id1 = device_id >> 8
        self.id2 = device_id & 0xFF
        self.backlog = backlog
        self.working = True
        self.query_mode = False
        self.work_started = time.ticks_ms()
        self._frames_sent = 0  # data frames emitted since work_started (active mode)
        self._rx = bytearray()  # command bytes from the host, not yet parsed
        self._out = bytearray()  # bytes for the host
        self.commands = []  # (cmd, arg1, arg2) of every valid command: for tests
        self.data_frames = 0

    # -- host side -------------------------------------------------------------------------

    def host_write(self, data):
        self._rx.extend(data)
        self._parse_commands()

    def host_read_available(self):
        self._emit_due_frames()
        out = bytes(self._out)
        self._out = bytearray()
        return out

    # -- device side -----------------------------------------------------------------------

    def _fault(self):
        return self.env.fault("sds011")

    def _send(self, f, data=False):
        fault = self._fault()
        if fault == "silent":
            return
        if fault == "garbage":
            for _ in range(1 + self.rng.below(8)):
                pick = self.rng.below(4)
                self._out.append((_HEAD, _DATA, _TAIL, self.rng.below(256))[pick])
        if data and fault == "corrupt" and self.rng.below(3) == 0:
            i = self.rng.below(10)
            if self.rng.below(2):
                f[i] ^= 1 << self.rng.below(8)
            else:
                f = f[:i] + f[i + 1:]
        self._out.extend(f)

    def _measurement(self):
        env = self.env
        pm25 = min(9999, max(0, int(round(env.value("pm25") * 10))))
        pm10 = min(9999, max(0, int(round(env.value("pm10") * 10))))
        if self._fault() == "out_of_range":
            pm25 = pm10 = 0xFFFF
        self.data_frames += 1
        return frame(_DATA, pm25 & 0xFF, pm25 >> 8, pm10 & 0xFF, pm10 >> 8, self.id1, self.id2,
                     bad_checksum=self._fault() == "bad_checksum")

    def _emit_due_frames(self):
        if not self.working or self.query_mode:
            return
        due = time.ticks_diff(time.ticks_ms(), self.work_started) // self.frame_ms
        missed = due - self._frames_sent - self.backlog
        if missed > 0:  # the host's receive buffer would have overrun: those frames are gone
            self._frames_sent += missed
        while self._frames_sent < due:
            self._frames_sent += 1
            self._send(self._measurement(), data=True)

    def _start_work(self):
        self._emit_due_frames()  # what was due before the state changes
        if not self.working:
            self.working = True
            self.work_started = time.ticks_ms()
            self._frames_sent = 0

    def _parse_commands(self):
        rx = self._rx
        while True:
            start = rx.find(bytes((_HEAD, _CMD)))
            if start < 0:
                # keep a trailing AA: it may be the start of the next command
                self._rx = rx[-1:] if rx and rx[-1] == _HEAD else bytearray()
                return
            if len(rx) - start < _CMD_LEN:
                self._rx = rx[start:]
                return
            c = rx[start:start + _CMD_LEN]
            if c[18] == _TAIL and sum(c[2:17]) & 0xFF == c[17]:
                self._handle(c)
                rx = rx[start + _CMD_LEN:]
            else:
                rx = rx[start + 1:]

    def _reply(self, b2, b3, b4, b5=0):
        self._send(frame(_REPLY, b2, b3, b4, b5, self.id1, self.id2))

    def _handle(self, c):
        cmd, arg1, arg2 = c[2], c[3], c[4]
        if not ((c[15] == 0xFF and c[16] == 0xFF) or (c[15] == self.id1 and c[16] == self.id2)):
            return  # addressed to another sensor on the line
        self.commands.append((cmd, arg1, arg2))
        if cmd == 0x06 and arg1 == 1 and arg2 == 0:
            self._emit_due_frames()
            self.working = False
        else:
            self._start_work()  # any command wakes a sleeping sensor
        if cmd == 0x02:
            if arg1 == 1:
                self._emit_due_frames()
                self.query_mode = arg2 == 1
                self.work_started = time.ticks_ms()
                self._frames_sent = 0
            self._reply(0x02, arg1, 1 if self.query_mode else 0)
        elif cmd == 0x04:
            self._send(self._measurement(), data=True)
        elif cmd == 0x06:
            self._reply(0x06, arg1, 1 if self.working else 0)
        elif cmd == 0x07:
            self._reply(0x07, _FIRMWARE[0], _FIRMWARE[1], _FIRMWARE[2])
