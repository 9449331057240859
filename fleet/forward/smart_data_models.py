"""NGSI-LD entities (FIWARE Smart Data Models) from normalized readings.

One entity per device and observation time, its properties the values of one uplink, and one
ThreePhaseAcMeasurement per building and interval from the flats' energy aggregates, for an
upsert (`ngsi_ld.py` sends them). Units are UN/CEFACT common codes, as the models ask
(`unitCode`); times are ISO 8601 UTC (`observedAt`); a location is a GeoProperty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..models import iso_utc

CONTEXT = [
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Energy/master/context.jsonld",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
]

# quantity -> (AirQualityObserved attribute, UN/CEFACT unit code, factor to the model's unit)
AIR_QUALITY: dict[str, tuple[str, str, float]] = {
    "PM2.5": ("pm25", "GQ", 1.0),  # microgram per cubic metre
    "PM10": ("pm10", "GQ", 1.0),
    "air_temperature": ("temperature", "CEL", 1.0),
    "relative_humidity": ("relativeHumidity", "C62", 0.01),  # the model wants 0..1
    "air_pressure": ("atmosphericPressure", "A97", 1.0),  # hectopascal
    "CO2": ("co2", "59", 1.0),  # ppm
    "battery_voltage": ("batteryVoltage", "VLT", 1.0),
}


# A building's energy aggregate -> ThreePhaseAcMeasurement attribute, in the model's default
# units (kW, kWh) as UN/CEFACT codes.
ENERGY: dict[str, tuple[str, str, float]] = {
    "active_power": ("totalActivePower", "KWT", 0.001),  # W -> kilowatt
    "energy_import": ("totalActiveEnergyImport", "KWH", 0.001),  # Wh -> kilowatt hour
}

AIR_QUALITY_OBSERVED = "AirQualityObserved"
PARKING_SPOT = "ParkingSpot"
OCCUPANCY = "occupancy"  # parking: 0 free, 1 occupied


def model_of(kind: str, quantity: str) -> str | None:
    """The Smart Data Model a reading belongs to, or None when no model carries it."""
    if kind == "air_quality" and quantity in AIR_QUALITY:
        return AIR_QUALITY_OBSERVED
    if kind == "parking" and quantity == OCCUPANCY:
        return PARKING_SPOT
    return None


@dataclass(frozen=True)
class Observation:
    device: str
    kind: str
    quantity: str
    value: float
    unit: str
    time: datetime
    flags: tuple[str, ...] = ()


def _location(lat: float | None, lon: float | None) -> dict[str, Any] | None:
    if lat is None or lon is None:
        return None
    return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}


def air_quality_observed(device: str, observations: Iterable[Observation], *,
                         latitude: float | None = None,
                         longitude: float | None = None) -> dict[str, Any]:
    """An AirQualityObserved entity from one device's observations (latest value wins)."""
    latest: dict[str, Observation] = {}
    for o in observations:
        if o.quantity in AIR_QUALITY and (o.quantity not in latest
                                          or o.time >= latest[o.quantity].time):
            latest[o.quantity] = o
    if not latest:
        raise ValueError(f"no air-quality quantity among the observations of {device}")
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:AirQualityObserved:{device}",
        "type": "AirQualityObserved",
        "dateObserved": {"type": "Property", "value": {
            "@type": "DateTime", "@value": iso_utc(max(o.time for o in latest.values()))}},
        "refDevice": {"type": "Relationship", "object": f"urn:ngsi-ld:Device:{device}"},
    }
    for quantity, o in latest.items():
        name, unit_code, factor = AIR_QUALITY[quantity]
        entity[name] = {"type": "Property", "value": round(o.value * factor, 6),
                        "unitCode": unit_code, "observedAt": iso_utc(o.time)}
    location = _location(latitude, longitude)
    if location:
        entity["location"] = location
    return entity


def parking_spot(device: str, occupied: bool, time: datetime, *,
                 latitude: float | None = None, longitude: float | None = None) -> dict[str, Any]:
    """A ParkingSpot entity: status free / occupied, observed at `time`."""
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:ParkingSpot:{device}",
        "type": "ParkingSpot",
        "status": {"type": "Property", "value": "occupied" if occupied else "free",
                   "observedAt": iso_utc(time)},
        "refDevice": {"type": "Relationship", "object": f"urn:ngsi-ld:Device:{device}"},
    }
    location = _location(latitude, longitude)
    if location:
        entity["location"] = location
    return entity


def three_phase_ac_measurement(site_id: int, name: str, totals: dict[str, float],
                               observed_at: datetime, *, latitude: float | None = None,
                               longitude: float | None = None) -> dict[str, Any]:
    """A ThreePhaseAcMeasurement of a building: its flats' totals ({quantity: value}) as of
    `observed_at`. Quantities the model has no attribute for are left out."""
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:ThreePhaseAcMeasurement:allmende-site-{site_id}",
        "type": "ThreePhaseAcMeasurement",
        "name": {"type": "Property", "value": name},
        "dateObserved": {"type": "Property", "value": {"@type": "DateTime",
                                                       "@value": iso_utc(observed_at)}},
    }
    for quantity, total in totals.items():
        if quantity in ENERGY:
            attribute, unit_code, factor = ENERGY[quantity]
            entity[attribute] = {"type": "Property", "value": round(total * factor, 9),
                                 "unitCode": unit_code, "observedAt": iso_utc(observed_at)}
    location = _location(latitude, longitude)
    if location:
        entity["location"] = location
    return entity


def entity(model: str, device: str, observations: list[Observation], *,
           latitude: float | None = None, longitude: float | None = None) -> dict[str, Any]:
    """The `model` entity of one device from the observations of one uplink."""
    if model == AIR_QUALITY_OBSERVED:
        return air_quality_observed(device, observations, latitude=latitude,
                                    longitude=longitude)
    if model == PARKING_SPOT:
        latest = max(observations, key=lambda o: o.time)
        return parking_spot(device, latest.value >= 0.5, latest.time, latitude=latitude,
                            longitude=longitude)
    raise ValueError(f"no Smart Data Model named {model}")


def upsert_body(entities: list[dict[str, Any]],
                context: list[str] | None = None) -> list[dict[str, Any]]:
    """The upsert payload: each entity carries the @context (application/ld+json)."""
    return [{**e, "@context": context or CONTEXT} for e in entities]
