"""The platform targets, as named in the outbox, and which of them the settings switch on.

Readings of public devices go to `sensorthings` and `ngsi-ld`; the buildings' energy
aggregates (energy.py) to `sensorthings-energy` and `ngsi-ld-energy` (the outbox item then
names an aggregate, not a reading).
"""

from __future__ import annotations

from ..settings import FleetSettings

SENSORTHINGS = "sensorthings"
NGSI_LD = "ngsi-ld"
SENSORTHINGS_ENERGY = "sensorthings-energy"
NGSI_LD_ENERGY = "ngsi-ld-energy"
READING_TARGETS = (SENSORTHINGS, NGSI_LD)


def reading_targets(settings: FleetSettings) -> list[str]:
    return [t for t, url in ((SENSORTHINGS, settings.sensorthings_url),
                             (NGSI_LD, settings.ngsi_ld_url)) if url]


def energy_targets(settings: FleetSettings) -> list[str]:
    return [t for t, url in ((SENSORTHINGS_ENERGY, settings.sensorthings_url),
                             (NGSI_LD_ENERGY, settings.ngsi_ld_url)) if url]
