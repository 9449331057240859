"""The LoRa bridge: listens on one channel, reports every frame over the serial line, and sends
the gateway's downlinks at the microsecond it asks for (see protocol.py for the wire format).

A single-channel receiver: fine for a few nodes that all use the configured channel and
data rate, no replacement for an 8-channel concentrator. It uses the node radio drivers
(`drivers.sx127x`, `drivers.sx126x`) with their roles swapped by `gateway_mode`.
"""

import time

import protocol
from micropython import const

_MAX_QUEUE = const(8)  # downlinks waiting to be sent
_MAX_ADVANCE_US = const(10000000)  # a join-accept's RX2 is 6 s away; beyond 10 s: TOO_EARLY
_MIN_LEAD_US = const(3000)  # closer than this: TOO_LATE
_RX_SLICE_MS = const(50)  # longest receive call between looks at the serial input
_TX_GUARD_US = const(20000)  # stop receiving this long before a downlink is due
_HALF = const(0x80000000)
_MASK = const(0xFFFFFFFF)


class Clock:
    """A 32-bit microsecond counter (wraps after 71 minutes, like a concentrator's tmst),
    extended from ticks_us, which may wrap sooner; `now` must run at least every few minutes."""

    def __init__(self):
        self._last = time.ticks_us()
        self._now = 0

    def now(self):
        t = time.ticks_us()
        self._now = (self._now + time.ticks_diff(t, self._last)) & _MASK
        self._last = t
        return self._now

    def wait_until(self, tmst):
        """Returns at `tmst` (at once if it passed). Sleeps most of the way, then spins:
        a node's RX window opens for a few symbols only."""
        left = (tmst - self.now()) & _MASK
        if left >= _HALF or left > _MAX_ADVANCE_US:
            return
        if left > 2000:
            time.sleep_us(left - 2000)
        while ((tmst - self.now()) & _MASK) < _HALF and (tmst - self._now) & _MASK:
            pass


def gateway_mode(radio):
    """Swaps a node driver's directions: receive uplinks (normal IQ) and send downlinks
    (inverted IQ, no payload CRC). Both drivers configure the modem in `_configure(...,
    rx)`, the last argument saying "node receives"; a gateway wants the opposite."""
    configure = radio._configure

    def swapped(*args):
        return configure(*(args[:-1] + (not args[-1],)))

    radio._configure = swapped
    return radio


def airtime_us(length, sf, bw_khz):
    """Upper bound of a downlink's air time (CR 4/5, explicit header, no CRC)."""
    sym_us = (1 << sf) * 1000 // bw_khz
    de = 1 if sym_us >= 16000 else 0
    bits = 8 * length - 4 * sf + 28
    step = 4 * (sf - 2 * de)
    blocks = (bits + step - 1) // step if bits > 0 else 0
    return (8 + 5 + 8 + blocks * 5) * sym_us


class Bridge:
    def __init__(self, radio, write, chip="sx127x", clock=None):
        self.radio = radio
        self.write = write
        self.chip = chip
        self.clock = clock or Clock()
        self.freq = 868100000
        self.sf = 7
        self.bw = 125
        self.queue = []  # [tmst, end_tmst, token, freq, sf, bw, power, data]
        self._partial = ""
        self.missed = 0

    def send(self, line):
        self.write(line + "\n")

    def hello(self):
        self.send("HELLO allmende-bridge %d %s" % (protocol.VERSION, self.chip))

    def feed(self, text):
        """Takes characters from the serial line; runs every complete command."""
        data = self._partial + text
        while True:
            i = data.find("\n")
            if i < 0:
                break
            line = data[:i].strip()
            data = data[i + 1 :]
            if line:
                self.command(line)
        self._partial = data[-protocol.MAX_LINE :]

    def command(self, line):
        try:
            verb, v = protocol.parse(line)
        except protocol.ProtocolError as e:
            self.send("ERR %s" % e)
            return
        if verb == "CFG":
            self.freq, self.sf, self.bw = v
            self.send("OK CFG")
        elif verb == "TX":
            self.send("TXD %d %s" % (v[0], self.enqueue(v)))
        elif verb == "PING":
            self.send("PONG %d" % self.clock.now())
        elif verb == "HELLO":
            self.hello()
        else:
            self.send("ERR unexpected %s" % verb)

    def _until(self, tmst, now):
        """Microseconds from now to tmst; negative when it has passed."""
        d = (tmst - now) & _MASK
        return d - 0x100000000 if d >= _HALF else d

    def enqueue(self, v):
        token, tmst, freq, sf, bw, power, data = v
        now = self.clock.now()
        if tmst is None:
            tmst = (now + 2 * _MIN_LEAD_US) & _MASK
        ahead = self._until(tmst, now)
        if ahead < _MIN_LEAD_US:
            return "TOO_LATE"
        if ahead > _MAX_ADVANCE_US:
            return "TOO_EARLY"
        if len(self.queue) >= _MAX_QUEUE:
            return "COLLISION_PACKET"
        end = (tmst + airtime_us(len(data), sf, bw)) & _MASK
        for other in self.queue:
            if self._until(other[0], end) < 0 and self._until(tmst, other[1]) < 0:
                return "COLLISION_PACKET"
        self.queue.append([tmst, end, token, freq, sf, bw, power, data])
        return "NONE"

    def step(self):
        """One round: send a downlink that is due, or listen for at most one slice."""
        now = self.clock.now()
        timeout = _RX_SLICE_MS
        if self.queue:
            self.queue.sort(key=lambda item: self._until(item[0], now))
            item = self.queue[0]
            wait = self._until(item[0], now)
            if wait < -_MIN_LEAD_US:
                self.queue.pop(0)
                self.missed += 1
                self.send("ERR missed %d" % item[2])
                return
            if wait <= _TX_GUARD_US:
                self.queue.pop(0)
                self._transmit(item)
                return
            timeout = min(timeout, (wait - _TX_GUARD_US) // 1000)
        frame = self.radio.receive(self.freq, self.sf, self.bw, timeout)
        if frame:
            tmst = self.clock.now()
            rssi = getattr(self.radio, "last_rssi", None) or 0
            snr = getattr(self.radio, "last_snr", None) or 0
            self.send(protocol.rx_line(tmst, self.freq, self.sf, self.bw, rssi, snr, frame))

    def _transmit(self, item):
        tmst, _end, token, freq, sf, bw, power, data = item
        self.clock.wait_until(tmst)
        try:
            self.radio.tx_power_dbm = power
            self.radio.transmit(data, freq, sf, bw)
        except (OSError, ValueError) as e:
            self.send("ERR tx %d %s" % (token, e))

    def run(self, read_available):
        """Forever: serial input, then one radio step. `read_available()` returns whatever
        characters have arrived, without blocking."""
        self.hello()
        while True:
            text = read_available()
            if text:
                self.feed(text)
            self.step()
