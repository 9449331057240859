"""The payload codec: round trips within resolution, size bound, malformed input rejected,
and the same bytes from the node (MicroPython) and the gateway (CPython)."""

from __future__ import annotations

import json

import pytest
from allmende.boards.virtual import unix_port
from allmende.firmware.app import payload
from hypothesis import given
from hypothesis import strategies as st

AQ = payload.FPORT_AIR_QUALITY
ENERGY = payload.FPORT_ENERGY


def _value(low: float, high: float) -> st.SearchStrategy[float | None]:
    return st.none() | st.floats(low, high, allow_nan=False)


readings = st.fixed_dictionaries(
    {
        "pm25": _value(0, 999.9),
        "pm10": _value(0, 999.9),
        "temperature": _value(-40, 85),
        "humidity": _value(0, 100),
        "pressure": _value(300, 1100),
        "battery": _value(2.0, 4.5),
        "co2": _value(0, 40000),
        "flags": st.integers(0, 0x3F),
    }
)


energy_readings = st.fixed_dictionaries(
    {
        "energy_import": st.none() | st.integers(0, 0xFFFFFFFE),  # Wh
        "power": st.none() | st.floats(-0x7FFFFFFF, 0x7FFFFFFF, allow_nan=False),  # W
        "flags": st.sampled_from([0, payload.FLAG_METER_FAULT, payload.FLAG_LOW_BATTERY,
                                  payload.FLAG_SAFE_MODE | payload.FLAG_LOW_BATTERY]),
    }
)


def assert_round_trip(fport: int, reading: dict, flag_mask: int) -> None:
    decoded = payload.decode(fport, payload.encode(fport, reading))
    assert decoded["flags"] & flag_mask == reading["flags"]
    for name, _quantity, _unit, resolution in payload.fields(fport, 1):
        if reading[name] is None:
            assert decoded[name] is None
        else:
            assert abs(decoded[name] - reading[name]) <= resolution / 2 + 1e-9


@given(readings)
def test_round_trip_within_resolution(reading: dict) -> None:
    assert_round_trip(AQ, reading, 0x3F)


@given(energy_readings)
def test_energy_meter_round_trip_within_resolution(reading: dict) -> None:
    assert_round_trip(ENERGY, reading, 0xFF)


def test_energy_meter_reading_is_10_bytes_with_named_flags() -> None:
    data = payload.encode(ENERGY, {"energy_import": 1234567, "power": -350,
                                   "flags": payload.FLAG_METER_FAULT})
    assert len(data) == 10 == payload.max_size(ENERGY, 1)
    decoded = payload.decode(ENERGY, data)
    assert (decoded["kind"], decoded["energy_import"], decoded["power"]) == \
        ("energy", 1234567, -350)
    assert payload.flag_names(decoded["flags"], ENERGY) == ["meter_fault"]
    assert payload.flag_names(payload.FLAG_PM_FAULT, AQ) == ["pm_fault"]


def test_air_quality_reading_fits_12_bytes_without_the_optional_co2() -> None:
    full = {"pm25": 12.3, "pm10": 20.1, "temperature": 21.5, "humidity": 45.5,
            "pressure": 1013.2, "battery": 3.7, "flags": payload.FLAG_LOW_BATTERY}
    assert len(payload.encode(AQ, full)) == 12
    assert len(payload.encode(AQ, dict(full, co2=650))) == 14


@given(st.binary(max_size=40), st.integers(0, 255))
def test_random_bytes_never_crash_the_decoder(data: bytes, fport: int) -> None:
    try:
        payload.decode(fport, data)
    except payload.PayloadError:
        pass


@pytest.mark.parametrize(
    ("fport", "data", "message"),
    [
        (1, b"", "empty"),
        (1, bytes([9]) + bytes(11), "unsupported version 9"),
        (1, bytes([1, 0, 0]), "need at least 12"),
        (1, payload.encode(AQ, {}) + b"\x00", "expected 12"),
        (1, payload.encode(AQ, {})[:-1] + bytes([payload.FLAG_HAS_CO2]), "payload ends"),
        (1, payload.encode(AQ, {})[:-1] + b"\x80", "reserved flag bits"),
        (99, bytes(12), "unknown FPort 99"),
        (3, bytes([1]) + bytes(8), "need at least 10"),
        (3, payload.encode(ENERGY, {}) + b"\x00", "expected 10"),
        (3, payload.encode(ENERGY, {})[:-1] + b"\x40", "reserved flag bits"),
        (3, bytes([2]) + bytes(9), "unsupported version 2"),
    ],
)
def test_malformed_payloads_are_rejected_with_a_specific_error(fport, data, message) -> None:
    with pytest.raises(payload.PayloadError, match=message):
        payload.decode(fport, data)


def test_values_the_format_cannot_carry_are_refused_not_clamped() -> None:
    with pytest.raises(payload.PayloadError, match="temperature"):
        payload.encode(AQ, {"temperature": 400.0})
    with pytest.raises(payload.PayloadError, match="pm25"):
        payload.encode(AQ, {"pm25": -1})
    with pytest.raises(payload.PayloadError, match="energy_import"):
        payload.encode(ENERGY, {"energy_import": -1})
    with pytest.raises(payload.PayloadError, match="energy_import"):
        payload.encode(ENERGY, {"energy_import": 2**32})
    with pytest.raises(payload.PayloadError, match="power"):
        payload.encode(ENERGY, {"power": 2**31})


@pytest.mark.parametrize(("fport", "reading"), [
    (AQ, {"pm25": 7.4, "pm10": 11.0, "temperature": -3.25, "humidity": 81.5,
          "pressure": 998.7, "battery": 3.61, "co2": 912, "flags": 1}),
    (ENERGY, {"energy_import": 4294967294, "power": -2147483647, "flags": 8}),
    (ENERGY, {"energy_import": 15, "power": None, "flags": 1}),
])
def test_node_and_gateway_encode_the_same_bytes(fport: int, reading: dict) -> None:
    code = (
        "import json, payload\n"
        f"r = json.loads({json.dumps(json.dumps(reading))})\n"
        f"buf = bytearray(payload.max_size({fport}, 1))\n"
        f"n = payload.encode_into(buf, {fport}, r)\n"
        "print(bytes(buf[:n]).hex())\n"
        f"print(json.dumps(payload.decode({fport}, bytes(buf[:n]))))\n"
    )
    proc = unix_port.run(code)
    assert proc.returncode == 0, proc.stderr
    hex_line, decoded_line = proc.stdout.splitlines()
    assert bytes.fromhex(hex_line) == payload.encode(fport, reading)
    assert json.loads(decoded_line) == payload.decode(fport, payload.encode(fport, reading))


def test_fields_carry_ucum_units() -> None:
    units = {name: unit for name, _q, unit, _r in payload.fields(AQ, 1)}
    assert units == {"pm25": "ug/m3", "pm10": "ug/m3", "temperature": "Cel", "humidity": "%",
                     "pressure": "hPa", "battery": "V", "co2": "ppm"}
    assert {q: u for _n, q, u, _r in payload.fields(ENERGY, 1)} == {
        "energy_import": "W.h", "active_power": "W"}
