"""Application payload codec: the one definition of every uplink format, per FPort and version.

Runs unchanged on the node (MicroPython) and on the gateway (CPython): it uses only `struct`.
Each format is a table of fields; the node encodes from it, the gateway decodes and
normalizes (quantity, UCUM unit) from it, so the two sides cannot drift apart.
"""

import struct

try:
    from micropython import const
except ImportError:  # CPython (gateway, tests)

    def const(x):
        return x


# Status flags, byte `flags` of the air-quality format (FLAG_NAMES); each format names its own.
FLAG_PM_FAULT = const(0x01)  # SDS011: no valid frame, bad checksum or fan failure
FLAG_CLIMATE_FAULT = const(0x02)  # BME280: bus error, wrong chip id or implausible value
FLAG_CO2_FAULT = const(0x04)  # SCD4x fitted but did not answer or failed its CRC
FLAG_LOW_BATTERY = const(0x08)
FLAG_SAFE_MODE = const(0x10)  # node booted into safe mode after repeated failed boots
FLAG_PM_WARMUP = const(0x20)  # fan ran shorter than the warm-up time: PM less reliable
FLAG_HAS_CO2 = const(0x40)  # two more bytes follow: CO2 in ppm

FLAG_NAMES = (
    (FLAG_PM_FAULT, "pm_fault"),
    (FLAG_CLIMATE_FAULT, "climate_fault"),
    (FLAG_CO2_FAULT, "co2_fault"),
    (FLAG_LOW_BATTERY, "low_battery"),
    (FLAG_SAFE_MODE, "safe_mode"),
    (FLAG_PM_WARMUP, "pm_warmup"),
)

# Status flags of the energy-meter format (ENERGY_FLAG_NAMES): low battery and safe mode as
# above, plus:
FLAG_METER_FAULT = const(0x01)  # no valid SML telegram from the meter's optical interface

ENERGY_FLAG_NAMES = (
    (FLAG_METER_FAULT, "meter_fault"),
    (FLAG_LOW_BATTERY, "low_battery"),
    (FLAG_SAFE_MODE, "safe_mode"),
)

FPORT_AIR_QUALITY = const(1)
FPORT_ENERGY = const(3)

# A field: (name, struct code, scale, offset, missing sentinel, quantity, UCUM unit).
# wire = round((value - offset) * scale); value = wire / scale + offset.
_AQ_V1_FIELDS = (
    ("pm25", "H", 10, 0, 0xFFFF, "PM2.5", "ug/m3"),
    ("pm10", "H", 10, 0, 0xFFFF, "PM10", "ug/m3"),
    ("temperature", "h", 100, 0, -0x8000, "air_temperature", "Cel"),
    ("humidity", "B", 2, 0, 0xFF, "relative_humidity", "%"),
    ("pressure", "H", 10, 300, 0xFFFF, "air_pressure", "hPa"),
    ("battery", "B", 100, 2, 0xFF, "battery_voltage", "V"),
)
_AQ_CO2_FIELD = ("co2", "H", 1, 0, 0xFFFF, "CO2", "ppm")

# A flat's electricity meter (OBIS 1.8.0 and 16.7.0 read over its optical SML interface).
# Power is signed: negative while the flat feeds in (balcony PV).
_ENERGY_V1_FIELDS = (
    ("energy_import", "I", 1, 0, 0xFFFFFFFF, "energy_import", "W.h"),
    ("power", "i", 1, 0, -0x80000000, "active_power", "W"),
)

# fport -> (kind, {version: (fields, optional (flag, field) pairs)}, flag names)
FORMATS = {
    FPORT_AIR_QUALITY: ("air_quality", {1: (_AQ_V1_FIELDS, ((FLAG_HAS_CO2, _AQ_CO2_FIELD),))},
                        FLAG_NAMES),
    FPORT_ENERGY: ("energy", {1: (_ENERGY_V1_FIELDS, ())}, ENERGY_FLAG_NAMES),
}

_RANGES = {"B": (0, 0xFF), "H": (0, 0xFFFF), "h": (-0x8000, 0x7FFF),
           "I": (0, 0xFFFFFFFF), "i": (-0x80000000, 0x7FFFFFFF)}


class PayloadError(ValueError):
    """A payload that does not match its format; the message says which part is wrong."""


def _fmt(fields):
    return ">B" + "".join(f[1] for f in fields) + "B"


def _to_wire(field, value):
    name, code, scale, offset, missing = field[0], field[1], field[2], field[3], field[4]
    if value is None:
        return missing
    wire = int(round((value - offset) * scale))
    lo, hi = _RANGES[code]
    if wire < lo or wire > hi or wire == missing:
        raise PayloadError("%s=%r is outside the encodable range" % (name, value))
    return wire


def _from_wire(field, wire):
    if wire == field[4]:
        return None
    value = wire / field[2] + field[3]
    return value


def _schema(fport, version):
    try:
        kind, versions = FORMATS[fport][0], FORMATS[fport][1]
    except KeyError:
        raise PayloadError("unknown FPort %d" % fport)
    try:
        fields, optional = versions[version]
    except KeyError:
        raise PayloadError("FPort %d (%s): unsupported version %d" % (fport, kind, version))
    return kind, fields, optional


def max_size(fport, version):
    """Bytes of the longest payload of this format (all optional parts present)."""
    kind, fields, optional = _schema(fport, version)
    return struct.calcsize(_fmt(fields)) + sum(struct.calcsize(">" + f[1]) for _, f in optional)


def encode_into(buf, fport, reading, version=1):
    """Encodes `reading` (a dict: field name -> value or None, plus "flags") into `buf`.

    Returns the number of bytes written. Optional parts are sent when their value is not None.
    """
    kind, fields, optional = _schema(fport, version)
    flags = reading.get("flags", 0) & 0xFF
    for flag, field in optional:
        if reading.get(field[0]) is None:
            flags &= ~flag
        else:
            flags |= flag
    fmt = _fmt(fields)
    wires = [_to_wire(f, reading.get(f[0])) for f in fields]
    struct.pack_into(fmt, buf, 0, version, *wires, flags)
    size = struct.calcsize(fmt)
    for flag, field in optional:
        if flags & flag:
            code = ">" + field[1]
            struct.pack_into(code, buf, size, _to_wire(field, reading[field[0]]))
            size += struct.calcsize(code)
    return size


def encode(fport, reading, version=1):
    buf = bytearray(max_size(fport, version))
    return bytes(buf[: encode_into(buf, fport, reading, version)])


_LAYOUTS = {}  # (fport, version) -> what decode needs, worked out once per format


def _layout(fport, version):
    key = (fport, version)
    layout = _LAYOUTS.get(key)
    if layout is None:
        kind, fields, optional = _schema(fport, version)
        fmt = _fmt(fields)
        known = 0
        for flag, _ in FORMATS[fport][2]:
            known |= flag
        extra = []
        for flag, field in optional:
            known |= flag
            code = ">" + field[1]
            extra.append((flag, field, code, struct.calcsize(code)))
        layout = (kind, fields, fmt, struct.calcsize(fmt), tuple(extra), known)
        _LAYOUTS[key] = layout
    return layout


def decode(fport, data):
    """Decodes one uplink payload into a dict: kind, version, field values, flags.

    Raises PayloadError for an unknown FPort or version, a wrong length, or set reserved bits.
    """
    if not data:
        raise PayloadError("FPort %d: empty payload" % fport)
    kind, fields, fmt, size, optional, known = _layout(fport, data[0])
    if len(data) < size:
        raise PayloadError(
            "FPort %d (%s): %d bytes, need at least %d" % (fport, kind, len(data), size))
    values = struct.unpack_from(fmt, data, 0)
    flags = values[-1]
    if flags & ~known & 0xFF:
        raise PayloadError(
            "FPort %d (%s): reserved flag bits 0x%02x set" % (fport, kind, flags & ~known))
    out = {"kind": kind, "version": data[0], "flags": flags}
    for field, wire in zip(fields, values[1:-1]):
        out[field[0]] = _from_wire(field, wire)
    for flag, field, code, width in optional:
        if flags & flag:
            if len(data) < size + width:
                raise PayloadError(
                    "FPort %d (%s): flag for %s set but payload ends" % (fport, kind, field[0]))
            out[field[0]] = _from_wire(field, struct.unpack_from(code, data, size)[0])
            size += width
        else:
            out[field[0]] = None
    if len(data) != size:
        raise PayloadError("FPort %d (%s): %d bytes, expected %d" % (fport, kind, len(data), size))
    return out


def fields(fport, version):
    """(name, quantity, unit, resolution) of every field of a format, optional ones included."""
    kind, base, optional = _schema(fport, version)
    return [(f[0], f[5], f[6], 1 / f[2]) for f in tuple(base) + tuple(f for _, f in optional)]


def flag_names(flags, fport=FPORT_AIR_QUALITY):
    """The names of the status flags set in `flags`, as the format of `fport` defines them."""
    return [name for bit, name in FORMATS[fport][2] if flags & bit]
