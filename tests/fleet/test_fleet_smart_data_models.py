"""FIWARE Smart Data Models mapping of normalized readings (the NGSI-LD entities)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from allmende.fleet.forward.smart_data_models import (
    Observation,
    air_quality_observed,
    parking_spot,
    upsert_body,
)

T = datetime(2026, 11, 21, 23, 40, tzinfo=UTC)


def test_air_quality_observed_uses_model_names_units_and_latest_values() -> None:
    obs = [Observation("00000000000000A1", "air_quality", "PM2.5", 12.3, "ug/m3", T),
           Observation("00000000000000A1", "air_quality", "PM2.5", 14.0, "ug/m3",
                       T + timedelta(minutes=5)),
           Observation("00000000000000A1", "air_quality", "relative_humidity", 45.5, "%", T),
           Observation("00000000000000A1", "air_quality", "air_temperature", 21.25, "Cel", T),
           Observation("00000000000000A1", "air_quality", "unknown_thing", 1, "1", T)]
    e = air_quality_observed("00000000000000A1", obs, latitude=49.87, longitude=8.65)
    assert e["id"] == "urn:ngsi-ld:AirQualityObserved:00000000000000A1"
    assert e["type"] == "AirQualityObserved"
    assert e["pm25"] == {"type": "Property", "value": 14.0, "unitCode": "GQ",
                         "observedAt": "2026-11-21T23:45:00Z"}
    assert e["relativeHumidity"]["value"] == pytest.approx(0.455)
    assert e["temperature"]["unitCode"] == "CEL"
    assert e["dateObserved"]["value"]["@value"] == "2026-11-21T23:45:00Z"
    assert e["location"]["value"] == {"type": "Point", "coordinates": [8.65, 49.87]}
    assert "unknown_thing" not in str(e)
    assert all("@context" in x for x in upsert_body([e]))


def test_parking_spot_status() -> None:
    e = parking_spot("00000000000000B1", True, T)
    assert e["status"]["value"] == "occupied" and e["type"] == "ParkingSpot"
    assert parking_spot("00000000000000B1", False, T)["status"]["value"] == "free"


def test_no_air_quality_quantity_is_an_error() -> None:
    with pytest.raises(ValueError, match="no air-quality quantity"):
        air_quality_observed("X", [Observation("X", "energy", "power", 1, "W", T)])
