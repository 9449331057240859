"""The gateway's normalized readings of an energy meter's uplink (FPort 3): quantities, UCUM
units, and the meter format's own flag names."""

from __future__ import annotations

import json

from allmende.firmware.app import payload
from allmende.gateway.readings import expand, record


def test_an_energy_meter_uplink_becomes_two_readings_with_its_flag_names() -> None:
    data = payload.encode(payload.FPORT_ENERGY, {"energy_import": 1234567, "power": -350,
                                                 "flags": payload.FLAG_METER_FAULT})
    text, count = record(dev_eui="00000000000000E1", session="01ab-0001", fcnt=7,
                         fport=payload.FPORT_ENERGY, data=data,
                         time_iso="2026-11-21T23:40:00.123Z", rssi=-70.0, snr=7.5, fw="0.1.0")
    readings = [json.loads(r) for r in expand(text, json.dumps("gw-a"))]
    assert count == 2
    assert [(r["quantity"], r["value"], r["unit"]) for r in readings] == [
        ("energy_import", 1234567, "W.h"), ("active_power", -350, "W")]
    assert all(r["kind"] == "energy" and r["flags"] == ["meter_fault"] for r in readings)
    assert readings[0]["key"] == "00000000000000E1/01ab-0001/7/energy_import"
