"""Normalized readings (docs/internals.md) from decrypted uplinks, via the shared payload codec.

An uplink becomes one compact outbox record (`record`), a JSON array holding the decoded
application reading; `expand` turns a record into the normalized reading objects of the
gateway -> fleet contract, one per quantity. Both sides live here so the record format has
one definition. The codec (`allmende.firmware.app.payload`) is the only place that knows
units and quantities.
"""

from __future__ import annotations

import json
import math
import time
from functools import lru_cache
from typing import Any

from allmende.firmware.app import payload

PayloadError = payload.PayloadError

# Record layout (JSON array); index constants keep `expand` readable.
_DEVICE, _SESSION, _FCNT, _TIME, _RSSI, _SNR, _KIND, _FLAGS, _FW, _VALUES = range(10)


class TimeFormatter:
    """ISO 8601 UTC with milliseconds ("2026-11-21T23:40:00.123Z"), the per-second part cached."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((t - second) * 1000):03d}Z"


_FIELD_CACHE: dict[tuple[int, int], list[tuple[str, str]]] = {}


def _fields(fport: int, version: int) -> list[tuple[str, str]]:
    """(field name, %-template of its [quantity, value, unit] entry) of a format, cached."""
    key = (fport, version)
    cached = _FIELD_CACHE.get(key)
    if cached is None:
        cached = []
        for name, quantity, unit, resolution in payload.fields(fport, version):
            # Print at the codec's resolution: 1/10 -> 1 digit, 1/100 -> 2; the wire value
            # is exact at that resolution, the float division is not.
            digits = max(0, math.ceil(-math.log10(resolution) - 1e-9))
            q, u = (json.dumps(x).replace("%", "%%") for x in (quantity, unit))
            cached.append((name, f"[{q},%.{digits}f,{u}]"))
        _FIELD_CACHE[key] = cached
    return cached


@lru_cache(maxsize=65536)
def _js(value: str | None) -> str:
    return json.dumps(value)


@lru_cache(maxsize=1024)
def _flags_json(fport: int, flags: int) -> str:
    return json.dumps(payload.flag_names(flags, fport))


def record(
    *,
    dev_eui: str,
    session: str,
    fcnt: int,
    fport: int,
    data: bytes,
    time_iso: str,
    rssi: float,
    snr: float,
    fw: str | None,
) -> tuple[str, int]:
    """Decodes an application payload into an outbox record: (JSON text, number of readings).

    Raises PayloadError when the codec rejects the payload. Quantities whose value the node
    marked as missing produce no reading.
    """
    decoded = payload.decode(fport, data)
    values = [
        template % value
        for name, template in _fields(fport, decoded["version"])
        if (value := decoded.get(name)) is not None
    ]
    # Hand-built JSON (this runs for every uplink): strings from outside go through json.dumps,
    # numbers are finite floats/ints (gwmp.parse_rxpk refuses NaN and infinities), the time
    # is TimeFormatter's plain ASCII.
    text = (
        f'[{_js(dev_eui)},{_js(session)},{int(fcnt)},"{time_iso}",{float(rssi)!r},'
        f"{float(snr)!r},{_js(decoded['kind'])},{_flags_json(fport, decoded['flags'])},{_js(fw)},"
        f"[{','.join(values)}]]"
    )
    return text, len(values)


def expand(record_text: str, gateway_json: str) -> list[str]:
    """The normalized readings of one record, each a JSON object text, in quantity order.

    `gateway_json` is the gateway id already JSON-encoded (it is the same for every record).
    """
    r: list[Any] = json.loads(record_text)
    dev_json = json.dumps(r[_DEVICE])
    common = (
        f'"device":{dev_json},"kind":{json.dumps(r[_KIND])},"time":"{r[_TIME]}","fcnt":{r[_FCNT]},'
        f'"session":{json.dumps(r[_SESSION])},"gateway":{gateway_json},"rssi":{r[_RSSI]!r},'
        f'"snr":{r[_SNR]!r},"flags":{json.dumps(r[_FLAGS])},"fw":{json.dumps(r[_FW])}'
    )
    key_prefix = f"{r[_DEVICE]}/{r[_SESSION]}/{r[_FCNT]}/"
    return [
        f'{{"key":{json.dumps(key_prefix + quantity)},"quantity":{json.dumps(quantity)},'
        f'"value":{value!r},"unit":{json.dumps(unit)},{common}}}'
        for quantity, value, unit in r[_VALUES]
    ]


def record_key_prefix(record_text: str) -> str:
    """`<dev_eui>/<session>/<fcnt>/`: the part of the idempotency keys shared by a record."""
    r = json.loads(record_text)
    return f"{r[_DEVICE]}/{r[_SESSION]}/{r[_FCNT]}/"
