"""What the platform needs to know about each quantity: UCUM unit names, observed-property
definitions, observation types. Quantities and unit symbols come from the payload codec."""

from __future__ import annotations

from dataclasses import dataclass

OM = "http://www.opengis.net/def/observationType/OGC-OM/2.0/"
MEASUREMENT = OM + "OM_Measurement"
CATEGORY = OM + "OM_CategoryObservation"
UCUM = "http://unitsofmeasure.org/ucum.html"


@dataclass(frozen=True)
class QuantityInfo:
    label: str
    definition: str
    observation_type: str = MEASUREMENT


QUANTITIES: dict[str, QuantityInfo] = {
    "PM2.5": QuantityInfo(
        "Particulate matter < 2.5 µm",
        "https://vocab.nerc.ac.uk/standard_name/mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air/",
    ),
    "PM10": QuantityInfo(
        "Particulate matter < 10 µm",
        "https://vocab.nerc.ac.uk/standard_name/mass_concentration_of_pm10_ambient_aerosol_particles_in_air/",
    ),
    "air_temperature": QuantityInfo(
        "Air temperature", "https://vocab.nerc.ac.uk/standard_name/air_temperature/"
    ),
    "relative_humidity": QuantityInfo(
        "Relative humidity", "https://vocab.nerc.ac.uk/standard_name/relative_humidity/"
    ),
    "air_pressure": QuantityInfo(
        "Air pressure", "https://vocab.nerc.ac.uk/standard_name/air_pressure/"
    ),
    "CO2": QuantityInfo(
        "Carbon dioxide",
        "https://vocab.nerc.ac.uk/standard_name/mole_fraction_of_carbon_dioxide_in_air/",
    ),
    "battery_voltage": QuantityInfo(
        "Battery voltage", "https://allmende.example/def/battery_voltage"
    ),
    "active_power": QuantityInfo(
        "Active power", "https://allmende.example/def/active_power"
    ),
    "energy_import": QuantityInfo(
        "Active energy imported (meter reading)", "https://allmende.example/def/energy_import"
    ),
    # Parking: 0 free, 1 occupied — a category, sent as its numeric code.
    "occupancy": QuantityInfo(
        "Parking bay occupancy (0 free, 1 occupied)",
        "https://allmende.example/def/parking_occupancy",
        CATEGORY,
    ),
}

UNIT_NAMES: dict[str, str] = {
    "ug/m3": "microgram per cubic metre",
    "Cel": "degree Celsius",
    "%": "percent",
    "hPa": "hectopascal",
    "ppm": "parts per million",
    "[ppm]": "parts per million",
    "V": "volt",
    "W": "watt",
    "W.h": "watt hour",
    "kW.h": "kilowatt hour",
    "A": "ampere",
    "1": "category code",
}


def quantity_info(quantity: str) -> QuantityInfo:
    return QUANTITIES.get(
        quantity, QuantityInfo(quantity, f"https://allmende.example/def/{quantity}")
    )


def unit_of_measurement(unit: str) -> dict[str, str]:
    """SensorThings unitOfMeasurement; every member a string (the server insists)."""
    return {"name": UNIT_NAMES.get(unit, unit), "symbol": unit, "definition": f"{UCUM}#{unit}"}
