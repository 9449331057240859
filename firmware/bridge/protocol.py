"""The serial line protocol between the gateway and the LoRa bridge: the one definition.

Runs unchanged on the bridge (MicroPython) and in the gateway (CPython, imported as
`allmende.firmware.bridge.protocol`); it uses only `binascii`. One command or event per line,
ASCII, fields separated by one space, "\\n" at the end. Frames travel as lowercase hex.
Timestamps are the bridge's free-running 32-bit microsecond counter (like a concentrator's
`tmst`): an RX carries the counter at the end of the frame, a TX names the counter value at
which to start sending (or "now").

Bridge -> gateway
    HELLO allmende-bridge <version> <chip>     after boot and as the answer to HELLO
    RX <tmst> <freq_hz> <sf> <bw_khz> <rssi> <snr> <hex>
    TXD <token> <result>                       result: NONE or a GWMP TX_ACK error code
    OK <command>                               CFG accepted
    PONG <tmst>
    ERR <text>                                 a line the bridge could not use
Gateway -> bridge
    HELLO
    CFG <freq_hz> <sf> <bw_khz>                the channel to listen on
    TX <token> <tmst|now> <freq_hz> <sf> <bw_khz> <power_dbm> <hex>
    PING

Any other line from the bridge (a REPL banner, a traceback) is not protocol: the gateway
ignores it.
"""

import binascii

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


VERSION = const(1)
MAX_LINE = const(600)  # "RX" + fields + 255 bytes as hex < 600 characters

TX_RESULTS = ("NONE", "TOO_LATE", "TOO_EARLY", "COLLISION_PACKET", "TX_FREQ", "TX_POWER")


class ProtocolError(ValueError):
    """A line that is not valid protocol; the message says which part is wrong."""


def _int(text, name, low, high):
    try:
        value = int(text)
    except ValueError:
        raise ProtocolError("%s %r is not an integer" % (name, text))
    if value < low or value > high:
        raise ProtocolError("%s %d outside %d..%d" % (name, value, low, high))
    return value


def _num(text, name):
    try:
        return float(text)
    except ValueError:
        raise ProtocolError("%s %r is not a number" % (name, text))


def _hex(text):
    if len(text) % 2 or len(text) > 510:
        raise ProtocolError("frame hex of %d characters" % len(text))
    try:
        return binascii.unhexlify(text)
    except ValueError:
        raise ProtocolError("frame is not hex")


def _radio(fields, at):
    freq = _int(fields[at], "freq_hz", 100000000, 1000000000)
    sf = _int(fields[at + 1], "sf", 5, 12)
    bw = _int(fields[at + 2], "bw_khz", 125, 500)
    return freq, sf, bw


def hexlify(data):
    return binascii.hexlify(data).decode()


def rx_line(tmst, freq_hz, sf, bw_khz, rssi, snr, data):
    return "RX %d %d %d %d %s %s %s" % (
        tmst & 0xFFFFFFFF,
        freq_hz,
        sf,
        bw_khz,
        _fmt(rssi),
        _fmt(snr),
        hexlify(data),
    )


def _fmt(x):
    # Same text on both ports: at most two decimals, no exponent.
    return ("%.2f" % x).rstrip("0").rstrip(".")


def tx_line(token, tmst, freq_hz, sf, bw_khz, power_dbm, data):
    when = "now" if tmst is None else "%d" % (tmst & 0xFFFFFFFF)
    return "TX %d %s %d %d %d %d %s" % (token, when, freq_hz, sf, bw_khz, power_dbm, hexlify(data))


def parse(line):
    """Splits one line into (verb, values): a tuple whose shape depends on the verb.

    RX -> (tmst, freq, sf, bw, rssi, snr, data); TX -> (token, tmst or None, freq, sf, bw,
    power, data); CFG -> (freq, sf, bw); TXD -> (token, result); HELLO -> (name, version,
    chip) or (); OK/ERR -> (text,); PING -> (); PONG -> (tmst,).
    Raises ProtocolError for a known verb with bad fields, or an unknown verb.
    """
    line = line.strip()
    if len(line) > MAX_LINE:
        raise ProtocolError("line of %d characters" % len(line))
    fields = line.split(" ")
    verb = fields[0]
    n = len(fields)
    if verb == "RX" and n == 8:
        freq, sf, bw = _radio(fields, 2)
        return verb, (
            _int(fields[1], "tmst", 0, 0xFFFFFFFF),
            freq,
            sf,
            bw,
            _num(fields[5], "rssi"),
            _num(fields[6], "snr"),
            _hex(fields[7]),
        )
    if verb == "TX" and n == 8:
        tmst = None if fields[2] == "now" else _int(fields[2], "tmst", 0, 0xFFFFFFFF)
        freq, sf, bw = _radio(fields, 3)
        return verb, (
            _int(fields[1], "token", 0, 0xFFFF),
            tmst,
            freq,
            sf,
            bw,
            _int(fields[6], "power_dbm", -10, 30),
            _hex(fields[7]),
        )
    if verb == "CFG" and n == 4:
        return verb, _radio(fields, 1)
    if verb == "TXD" and n == 3:
        return verb, (_int(fields[1], "token", 0, 0xFFFF), fields[2])
    if verb == "HELLO" and n in (1, 4):
        return verb, tuple(fields[1:])
    if verb in ("OK", "ERR"):
        return verb, (line[len(verb) + 1 :],)
    if verb == "PING" and n == 1:
        return verb, ()
    if verb == "PONG" and n == 2:
        return verb, (_int(fields[1], "tmst", 0, 0xFFFFFFFF),)
    raise ProtocolError("not a protocol line: %r" % line[:40])
