"""Forwarding to an OGC SensorThings API v1.1 server through the durable outbox.

Things (with their Location), Sensors, ObservedProperties and Datastreams are created once and
remembered (`platform_link`); Observations go in batches through the dataArray extension
(`CreateObservations`). That call answers 201 even when rows fail and reports them only as
"error" entries, so each row's entry is checked: a failed batch is split until the poisoned
row is alone, and that row is dead-lettered with its reason instead of retried forever.
Claiming, retry and dead-lettering are the outbox's (`outbox.py`).

The buildings' energy aggregates (energy.py) go the same way: a Thing per building (site),
a Datastream per quantity, an Observation per interval whose result is the building's total.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import Session, select

from ..models import Device, EnergyAggregate, PlatformLink, Reading, Site, iso_utc
from ..settings import FleetSettings
from .outbox import (
    ForwardResult,
    OutboxForwarder,
    Pending,
    PlatformRejected,
    PlatformUnavailable,
    RecordT,
    is_transient,
)
from .places import position
from .targets import SENSORTHINGS, SENSORTHINGS_ENERGY
from .units import quantity_info, unit_of_measurement

# The server: the namespace of what was created there (platform_link), whichever outbox.
TARGET = SENSORTHINGS
_ID_IN_LOCATION = re.compile(r"\('?([^')]+)'?\)\s*$")


@dataclass
class _Row:
    """One Observation to send: the outbox item it comes from, its Datastream, time, result."""

    pending: Pending[Any]
    datastream: str
    time: datetime
    result: float


class _SensorThings(OutboxForwarder[RecordT]):
    """What both SensorThings outboxes share: entities created once, batched Observations."""

    def __init__(self, engine: sa.Engine, settings: FleetSettings, *,
                 http: httpx.Client | None = None) -> None:
        if not settings.sensorthings_url:
            raise ValueError("ALLMENDE_SENSORTHINGS_URL is not set")
        super().__init__(engine, settings, http=http)
        self.base = settings.sensorthings_url.rstrip("/")
        self.batch = max(1, min(settings.sensorthings_batch_size, 10_000))

    def deliver(self, session: Session, rows: list[Pending[RecordT]],
                result: ForwardResult) -> None:
        ready: list[_Row] = []
        for row in rows:
            try:
                ready.append(self._observation(session, row))
            except PlatformUnavailable as exc:
                self.retry([row], str(exc), result)
            except PlatformRejected as exc:
                self.dead([row], str(exc), result)
        for start in range(0, len(ready), self.batch):
            self._send(ready[start:start + self.batch], result)

    def _observation(self, session: Session, row: Pending[RecordT]) -> _Row:
        """The Observation of one outbox item, its Datastream created first if need be."""
        raise NotImplementedError

    # --- observations ----------------------------------------------------------------------

    def _send(self, rows: list[_Row], result: ForwardResult) -> None:
        by_stream: dict[str, list[_Row]] = {}
        for row in rows:
            by_stream.setdefault(row.datastream, []).append(row)
        ordered = [row for stream_rows in by_stream.values() for row in stream_rows]
        body = [{"Datastream": {"@iot.id": stream},
                 "components": ["phenomenonTime", "resultTime", "result"],
                 "dataArray": [[iso_utc(r.time), iso_utc(r.time), r.result] for r in stream_rows]}
                for stream, stream_rows in by_stream.items()]
        try:
            response = self.http.post(f"{self.base}/CreateObservations", json=body)
        except httpx.HTTPError as exc:
            self.retry([r.pending for r in rows], f"SensorThings unreachable: {exc}", result)
            return
        if is_transient(response.status_code):
            self.retry([r.pending for r in rows],
                       f"SensorThings answered {response.status_code}", result)
            return
        entries = _entries(response)
        if response.status_code >= 400 or len(entries) != len(ordered):
            entries = ["error"] * len(ordered)
        failed: list[_Row] = []
        for row, entry in zip(ordered, entries, strict=True):
            if isinstance(entry, str) and entry.startswith("http"):
                self.delivered([row.pending], result)
            else:
                failed.append(row)
        if not failed:
            return
        if len(failed) == 1 and len(rows) == 1:
            self.dead([failed[0].pending],
                      f"SensorThings rejected the observation ({response.status_code}): "
                      f"{response.text[:300]}", result)
            return
        # The server refuses a whole batch for one bad row: halve until it stands alone.
        half = max(1, len(failed) // 2)
        self._send(failed[:half], result)
        self._send(failed[half:], result)

    def _datastream_of(self, session: Session, key: str, quantity: str, unit: str, *,
                       thing: str, sensor: str, name: str, description: str) -> str:
        """The Datastream `key` of `quantity` (and its ObservedProperty), created once."""
        info = quantity_info(quantity)
        observed = self._once(session, f"observed_property:{quantity}", "ObservedProperties", {
            "name": quantity, "definition": info.definition, "description": info.label})
        return self._once(session, key, "Datastreams", {
            "name": name, "description": description,
            "observationType": info.observation_type,
            "unitOfMeasurement": unit_of_measurement(unit),
            "Thing": {"@iot.id": thing}, "Sensor": {"@iot.id": sensor},
            "ObservedProperty": {"@iot.id": observed}})

    def _once(self, session: Session, key: str, entity_set: str, body: dict[str, Any]) -> str:
        known = session.get(PlatformLink, (TARGET, key))
        if known is not None:
            return known.remote_id
        try:
            response = self.http.post(f"{self.base}/{entity_set}", json=body)
        except httpx.HTTPError as exc:
            raise PlatformUnavailable(f"SensorThings unreachable: {exc}") from exc
        if response.status_code >= 500:
            raise PlatformUnavailable(f"creating {entity_set} answered {response.status_code}")
        match = _ID_IN_LOCATION.search(response.headers.get("location", ""))
        if response.status_code >= 400 or match is None:
            raise PlatformRejected(f"creating {entity_set} failed ({response.status_code}): "
                                   f"{response.text[:300]}")
        session.add(PlatformLink(target=TARGET, local_key=key, remote_id=match.group(1)))
        # Committed at once: the entity exists on the platform whatever happens next.
        session.commit()
        return match.group(1)



class SensorThingsForwarder(_SensorThings[Reading]):
    """Drains the `sensorthings` outbox: the readings of public devices."""

    target = SENSORTHINGS
    source = Reading

    def _observation(self, session: Session, row: Pending[Reading]) -> _Row:
        reading = row.record
        return _Row(row, self._datastream(session, reading), reading.time, reading.value)

    # --- entities created once -------------------------------------------------------------

    def _datastream(self, session: Session, reading: Reading) -> str:
        key = f"datastream:{reading.device}:{reading.quantity}"
        known = session.get(PlatformLink, (TARGET, key))
        if known is not None:
            return known.remote_id
        info = quantity_info(reading.quantity)
        thing = self._thing(session, reading.device)
        sensor = self._once(session, f"sensor:{reading.kind}:{reading.quantity}", "Sensors", {
            "name": f"{reading.kind} {reading.quantity} sensor",
            "description": f"{reading.quantity} sensor of allmende {reading.kind} nodes",
            "encodingType": "text/html", "metadata": "https://allmende.example/sensors"})
        return self._datastream_of(
            session, key, reading.quantity, reading.unit, thing=thing, sensor=sensor,
            name=f"{reading.device} {reading.quantity}",
            description=f"{info.label} measured by device {reading.device}")

    def _thing(self, session: Session, dev_eui: str) -> str:
        key = f"thing:{dev_eui}"
        known = session.get(PlatformLink, (TARGET, key))
        if known is not None:
            return known.remote_id
        device = session.exec(select(Device).where(Device.dev_eui == dev_eui)).one()
        where = position(session, device)
        if where is None:
            # A Thing needs a Location (or every Observation a FeatureOfInterest).
            raise PlatformUnavailable(f"device {dev_eui} has no location (set it or its site's)")
        lat, lon = where
        site = session.get(Site, device.site_id) if device.site_id else None
        # No personal data: a flat reference never leaves the fleet.
        return self._once(session, key, "Things", {
            "name": device.name or f"allmende {device.kind} {dev_eui}",
            "description": f"allmende {device.kind} node",
            "properties": {"dev_eui": dev_eui, "kind": str(device.kind)},
            "Locations": [{"name": site.name if site else f"{dev_eui} location",
                           "description": "where the node is mounted",
                           "encodingType": "application/geo+json",
                           "location": {"type": "Point", "coordinates": [lon, lat]}}]})



class SensorThingsEnergyForwarder(_SensorThings[EnergyAggregate]):
    """Drains the `sensorthings-energy` outbox: the buildings' published energy aggregates.
    Nothing of a flat is in them: a building Thing, a total and the number of flats."""

    target = SENSORTHINGS_ENERGY
    source = EnergyAggregate

    def _observation(self, session: Session, row: Pending[EnergyAggregate]) -> _Row:
        a = row.record
        if not a.published or a.total is None:
            raise PlatformRejected("a suppressed aggregate is never published")
        return _Row(row, self._building_datastream(session, a),
                    a.start + timedelta(seconds=a.interval_s), a.total)

    def _building_datastream(self, session: Session, aggregate: EnergyAggregate) -> str:
        key = f"datastream:site-{aggregate.site_id}:{aggregate.quantity}"
        known = session.get(PlatformLink, (TARGET, key))
        if known is not None:
            return known.remote_id
        info = quantity_info(aggregate.quantity)
        site = session.get(Site, aggregate.site_id)
        if site is None or site.latitude is None or site.longitude is None:
            raise PlatformUnavailable(f"site {aggregate.site_id} has no location (set it)")
        thing = self._once(session, f"thing:site-{site.id}", "Things", {
            "name": f"building {site.name}",
            "description": "a building's flats, as energy totals over at least "
                           f"{self.settings.energy_min_flats} flats",
            "properties": {"site_id": site.id, "kind": "building"},
            "Locations": [{"name": site.name, "description": site.address or "the building",
                           "encodingType": "application/geo+json",
                           "location": {"type": "Point",
                                        "coordinates": [site.longitude, site.latitude]}}]})
        sensor = self._once(session, f"sensor:building_energy:{aggregate.quantity}", "Sensors", {
            "name": f"building {aggregate.quantity} total",
            "description": f"sum of the flats' {aggregate.quantity} per "
                           f"{aggregate.interval_s // 60} min (each flat's latest value)",
            "encodingType": "text/html", "metadata": "https://allmende.example/energy"})
        return self._datastream_of(
            session, key, aggregate.quantity, aggregate.unit, thing=thing, sensor=sensor,
            name=f"building {site.name} {aggregate.quantity}",
            description=f"{info.label}: total of the building's flats")


def _entries(response: httpx.Response) -> list[Any]:
    try:
        body = response.json()
    except ValueError:
        return []
    return body if isinstance(body, list) else []
