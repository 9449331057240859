"""Forwarding to an OGC SensorThings API v1.1 server through the durable outbox.

Things (with their Location), Sensors, ObservedProperties and Datastreams are created once and
remembered (`platform_link`); Observations go in batches through the dataArray extension
(`CreateObservations`). That call answers 201 even when rows fail and reports them only as
"error" entries, so each row's entry is checked: a failed batch is split until the poisoned
row is alone, and that row is dead-lettered with its reason instead of retried forever.
Claiming, retry and dead-lettering are the outbox's (`outbox.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import Session, select

from ..models import Device, PlatformLink, Reading, Site
from ..settings import FleetSettings
from .outbox import (
    ForwardResult,
    OutboxForwarder,
    Pending,
    PlatformRejected,
    PlatformUnavailable,
    is_transient,
)
from .places import position
from .units import quantity_info, unit_of_measurement

TARGET = "sensorthings"
_ID_IN_LOCATION = re.compile(r"\('?([^')]+)'?\)\s*$")


@dataclass
class _Row:
    pending: Pending
    datastream: str

    @property
    def reading(self) -> Reading:
        return self.pending.reading


class SensorThingsForwarder(OutboxForwarder):
    """Drains the `sensorthings` outbox."""

    target = TARGET

    def __init__(self, engine: sa.Engine, settings: FleetSettings, *,
                 http: httpx.Client | None = None) -> None:
        if not settings.sensorthings_url:
            raise ValueError("ALLMENDE_SENSORTHINGS_URL is not set")
        super().__init__(engine, settings, http=http)
        self.base = settings.sensorthings_url.rstrip("/")
        self.batch = max(1, min(settings.sensorthings_batch_size, 10_000))

    def deliver(self, session: Session, rows: list[Pending], result: ForwardResult) -> None:
        ready: list[_Row] = []
        for row in rows:
            try:
                ready.append(_Row(row, self._datastream(session, row.reading)))
            except PlatformUnavailable as exc:
                self.retry([row], str(exc), result)
            except PlatformRejected as exc:
                self.dead([row], str(exc), result)
        for start in range(0, len(ready), self.batch):
            self._send(ready[start:start + self.batch], result)

    # --- observations ----------------------------------------------------------------------

    def _send(self, rows: list[_Row], result: ForwardResult) -> None:
        by_stream: dict[str, list[_Row]] = {}
        for row in rows:
            by_stream.setdefault(row.datastream, []).append(row)
        ordered = [row for stream_rows in by_stream.values() for row in stream_rows]
        body = [{"Datastream": {"@iot.id": stream},
                 "components": ["phenomenonTime", "resultTime", "result"],
                 "dataArray": [[_iso(r.reading), _iso(r.reading), r.reading.value]
                               for r in stream_rows]}
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
        observed = self._once(session, f"observed_property:{reading.quantity}",
                              "ObservedProperties", {
                                  "name": reading.quantity, "definition": info.definition,
                                  "description": info.label})
        return self._once(session, key, "Datastreams", {
            "name": f"{reading.device} {reading.quantity}",
            "description": f"{info.label} measured by device {reading.device}",
            "observationType": info.observation_type,
            "unitOfMeasurement": unit_of_measurement(reading.unit),
            "Thing": {"@iot.id": thing}, "Sensor": {"@iot.id": sensor},
            "ObservedProperty": {"@iot.id": observed}})

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


def _iso(reading: Reading) -> str:
    return reading.time.isoformat().replace("+00:00", "Z")


def _entries(response: httpx.Response) -> list[Any]:
    try:
        body = response.json()
    except ValueError:
        return []
    return body if isinstance(body, list) else []
