"""The air as the simulated LoRa chips see it: a UDP link to the radio medium, the LoRa time
on air, and the modem both chip simulations share (a frame takes its time on air; a
receiver hears only frames that match its settings).

Runs on the MicroPython unix port (inside the virtual board) and under CPython: the medium
uses `time_on_air_us` from here, so both sides agree on how long a frame occupies the air.

Datagrams (one JSON object each, see docs/internals.md):
  radio -> medium  {"type": "tx", "node": ID, "freq": HZ, "sf": N, "bw": KHZ, "cr": 5,
                    "data": HEX}   (+ "ipol": true if sent with inverted IQ,
                                      "sync": N if the sync word is not the public 0x34)
  medium -> radio  {"type": "rx", ...same fields..., "rssi": DBM, "snr": DB}
                    (+ optional "ipol", "sync", "crc": bool, "crc_error": bool)
"""

import json
import socket
import time

try:
    from binascii import hexlify, unhexlify
except ImportError:  # pragma: no cover
    from ubinascii import hexlify, unhexlify

PUBLIC_SYNC_WORD = 0x34  # LoRaWAN public networks (SX126x register value 0x3444)
FREQ_TOLERANCE_HZ = 1000
_MAX_DATAGRAM = 1024  # a LoRa frame is at most 255 bytes: 510 hex digits plus the envelope

# Events of Modem.poll().
TX_DONE = 1
RX_DONE = 2
RX_TIMEOUT = 3


def symbol_time_us(sf, bw_khz):
    """Duration of one LoRa symbol in microseconds (2^SF / BW)."""
    return (1 << sf) * 1000 / bw_khz


def time_on_air_us(sf, bw_khz, cr, length, preamble=8, crc=True, implicit=False, ldro=None):
    """Time on air of a LoRa frame in microseconds (SX1276 datasheet, section 4.1.1.7).

    `cr` is the coding-rate denominator (5 for 4/5 ... 8 for 4/8); `ldro` None applies
    the usual rule (on when a symbol lasts 16 ms or more: SF11/SF12 at 125 kHz).
    """
    tsym = symbol_time_us(sf, bw_khz)
    if ldro is None:
        ldro = tsym >= 16000
    de = 1 if ldro else 0
    numerator = 8 * length - 4 * sf + 28 + (16 if crc else 0) - (20 if implicit else 0)
    blocks = -(-numerator // (4 * (sf - 2 * de)))  # ceil for integers of either sign
    return int((preamble + 4.25 + 8 + max(blocks * cr, 0)) * tsym)


def snap_hz(hz):
    """A synthesizer setting back to its channel: LoRaWAN frequencies are 100 Hz multiples."""
    return (int(hz) + 50) // 100 * 100


def bw_value(bw):
    """Bandwidth in kHz as the datagrams carry it: 125 (int) or 62.5 (float)."""
    bw = float(bw)
    return int(bw) if bw == int(bw) else bw


class RadioLink:
    """Non-blocking UDP socket of one virtual radio towards the medium at (host, port)."""

    def __init__(self, host, port, node):
        self.node = node
        self._medium = socket.getaddrinfo(host, port)[0][-1]
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(socket.getaddrinfo("0.0.0.0", 0)[0][-1])
        self._sock.setblocking(False)
        self._rx = bytearray(_MAX_DATAGRAM)
        self._rx_mv = memoryview(self._rx)
        self.send_errors = 0

    def send_tx(self, freq, sf, bw, cr, data, ipol=False, sync=PUBLIC_SYNC_WORD):
        """Puts one frame on the air; a missing medium only means nobody hears it."""
        msg = {"type": "tx", "node": self.node, "freq": freq, "sf": sf, "bw": bw, "cr": cr,
               "data": hexlify(data).decode()}
        if ipol:
            msg["ipol"] = True
        if sync != PUBLIC_SYNC_WORD:
            msg["sync"] = sync
        try:
            self._sock.sendto(json.dumps(msg).encode(), self._medium)
        except OSError:
            self.send_errors += 1  # a radio never knows whether anyone listens

    def receive(self):
        """Next well-formed rx message (`data` as bytes), or None if none is waiting."""
        while True:
            # Into one preallocated buffer: the radio is polled every few milliseconds, and a
            # fresh 1 KB per poll would churn and fragment the heap the firmware lives in.
            try:
                n = self._sock.readinto(self._rx)
            except OSError:
                return None
            if not n:
                return None
            try:
                msg = json.loads(bytes(self._rx_mv[:n]))
                if msg.get("type") != "rx":
                    continue
                msg["data"] = unhexlify(msg["data"])
                msg["freq"] = int(msg["freq"])
                msg["sf"] = int(msg["sf"])
                msg["bw"] = bw_value(msg["bw"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # noise on the air: ignore what is not a frame
            return msg

    def drain(self):
        """Drops every datagram already waiting (frames sent before the receiver was on)."""
        while self.receive() is not None:
            pass

    def close(self):
        self._sock.close()


class Modem:
    """The LoRa modem of a simulated chip: what is on air, when it ends, what is heard.

    The chip simulations translate registers or commands into `start_tx`/`start_rx` and
    turn the events of `poll` into their IRQ flags. Time is the real monotonic clock.
    """

    def __init__(self, link):
        self.link = link
        self.frames_sent = 0
        self.frames_received = 0
        self.stop()

    def stop(self):
        self._tx = None
        self._tx_end = 0
        self._rx = None  # receiver settings while listening
        self._rx_since = 0
        self._rx_timeout = None
        self.frame = None  # the frame being received (a dict from RadioLink.receive)
        self.received = None  # the last frame completely received
        self._header_at = 0
        self._frame_end = 0

    def start_tx(self, freq, sf, bw, cr, payload, airtime_us, ipol=False,
                 sync=PUBLIC_SYNC_WORD):
        self.stop()
        self._tx = (freq, sf, bw, cr, bytes(payload), ipol, sync)
        self._tx_end = time.ticks_add(time.ticks_us(), airtime_us)

    def start_rx(self, freq, sf, bw, ipol, sync, preamble, timeout_us=None):
        """Listens; `timeout_us` (None: forever) stops counting once a header is seen."""
        self.stop()
        if self.link is not None:
            self.link.drain()
        self._rx = (freq, sf, bw, ipol, sync, preamble)
        self._rx_since = time.ticks_us()
        self._rx_timeout = timeout_us

    def transmitting(self):
        return self._tx is not None

    def receiving(self):
        """Listening and a frame has begun to arrive."""
        return self._rx is not None and self.frame is not None

    def header_seen(self):
        return self.receiving() and time.ticks_diff(time.ticks_us(), self._header_at) >= 0

    def _hears(self, msg):
        freq, sf, bw, ipol, sync, _ = self._rx
        if msg.get("sync", PUBLIC_SYNC_WORD) != sync:
            return False
        if "ipol" in msg and bool(msg["ipol"]) != ipol:
            return False
        return abs(msg["freq"] - freq) <= FREQ_TOLERANCE_HZ and msg["sf"] == sf and msg["bw"] == bw

    def poll(self):
        """Advances to now; returns TX_DONE, RX_DONE (frame in `received`), RX_TIMEOUT or None."""
        now = time.ticks_us()
        if self._tx is not None:
            if time.ticks_diff(now, self._tx_end) < 0:
                return None
            freq, sf, bw, cr, payload, ipol, sync = self._tx
            if self.link is not None:
                self.link.send_tx(freq, sf, bw, cr, payload, ipol, sync)
            self.frames_sent += 1
            self._tx = None
            return TX_DONE
        if self._rx is None:
            return None
        if self.link is None:
            pass  # an antenna into the void: nothing to hear
        elif self.frame is None:
            while True:
                msg = self.link.receive()
                if msg is None:
                    break
                if self._hears(msg):
                    # The datagram arrives when the frame starts; it ends after its airtime.
                    preamble = self._rx[5]
                    tsym = symbol_time_us(msg["sf"], msg["bw"])
                    self._header_at = time.ticks_add(now, int((preamble + 12.25) * tsym))
                    airtime = time_on_air_us(msg["sf"], msg["bw"], int(msg.get("cr", 5)),
                                             len(msg["data"]), preamble,
                                             bool(msg.get("crc", True)))
                    self._frame_end = time.ticks_add(now, airtime)
                    self.frame = msg
                    break
        else:
            self.link.drain()  # overlapping frames collide with the one being received
        if self.frame is None:
            timeout = self._rx_timeout
            if timeout is not None and time.ticks_diff(now, self._rx_since) >= timeout:
                self._rx = None
                return RX_TIMEOUT
            return None
        if time.ticks_diff(now, self._frame_end) < 0:
            return None
        self.frames_received += 1
        self.received = self.frame
        self.frame = None  # a continuous receiver listens on
        return RX_DONE
