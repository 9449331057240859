"""Forwarding to an OGC SensorThings API v1.1 server through the durable outbox.

Readings enter the outbox in the same transaction that stores them; this forwarder drains it
in the background, so a dead platform never blocks ingest. Things (with their Location),
Sensors, ObservedProperties and Datastreams are created once and remembered
(`platform_link`); Observations go in batches through the dataArray extension
(`CreateObservations`). That call answers 201 even when rows fail and reports them only as
"error" entries, so each row's entry is checked: a failed batch is split until the poisoned
row is alone, and that row is dead-lettered with its reason instead of retried forever.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import Session, col, select

from ..ingest import bump_counters
from ..models import Device, OutboxItem, PlatformLink, Reading, Site, utcnow
from ..settings import FleetSettings
from .units import quantity_info, unit_of_measurement

log = logging.getLogger(__name__)

TARGET = "sensorthings"
_ID_IN_LOCATION = re.compile(r"\('?([^')]+)'?\)\s*$")


class PlatformUnavailable(Exception):
    """The server could not be reached or answered 5xx: retry later, the rows stay pending."""


class PlatformRejected(Exception):
    """The server refused an entity for good (4xx): the rows that need it are dead-lettered."""


@dataclass
class ForwardResult:
    delivered: int = 0
    dead: int = 0
    retrying: int = 0

    @property
    def handled(self) -> int:
        return self.delivered + self.dead + self.retrying


@dataclass
class _Row:
    item: OutboxItem
    reading: Reading
    datastream: str = ""


class SensorThingsForwarder:
    """Drains the `sensorthings` outbox; `forward_once()` is one pass, `run()` loops."""

    def __init__(self, engine: sa.Engine, settings: FleetSettings, *,
                 http: httpx.Client | None = None) -> None:
        if not settings.sensorthings_url:
            raise ValueError("ALLMENDE_SENSORTHINGS_URL is not set")
        self.engine = engine
        self.settings = settings
        self.base = settings.sensorthings_url.rstrip("/")
        self.http = http or httpx.Client(timeout=30)
        self.batch = max(1, min(settings.sensorthings_batch_size, 10_000))

    # --- the loop --------------------------------------------------------------------------

    async def run(self, *, idle_s: float = 1.0) -> None:
        """Forward until cancelled; sleeps while the outbox is empty or the platform is down."""
        while True:
            try:
                result = await asyncio.to_thread(self.forward_once)
            except sa.exc.OperationalError as exc:
                log.warning("forwarder cannot read the outbox: %s", exc)
                result = ForwardResult()
            if result.delivered == 0:
                await asyncio.sleep(idle_s)

    def forward_once(self, *, limit: int = 1000) -> ForwardResult:
        now = utcnow()
        result = ForwardResult()
        with Session(self.engine) as session:
            pairs = session.exec(
                select(OutboxItem, Reading)
                .join(Reading, col(Reading.id) == col(OutboxItem.reading_id))
                .where(OutboxItem.target == TARGET, OutboxItem.status == "pending",
                       col(OutboxItem.next_attempt) <= now)
                .order_by(col(OutboxItem.id)).limit(limit)
            ).all()
            if not pairs:
                return result
            rows = [_Row(item, reading) for item, reading in pairs]
            ready: list[_Row] = []
            for row in rows:
                try:
                    row.datastream = self._datastream(session, row.reading)
                    ready.append(row)
                except PlatformUnavailable as exc:
                    self._retry(row.item, str(exc))
                    result.retrying += 1
                except PlatformRejected as exc:
                    self._dead(row.item, str(exc))
                    result.dead += 1
            for start in range(0, len(ready), self.batch):
                self._send(ready[start:start + self.batch], result)
            for row in rows:
                if row.item.status == "delivered":
                    session.delete(row.item)
                else:
                    session.add(row.item)
            bump_counters(session, {f"forwarded_{TARGET}": result.delivered,
                                    f"dead_{TARGET}": result.dead})
            session.commit()
        return result

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
            for row in rows:
                self._retry(row.item, f"SensorThings unreachable: {exc}")
            result.retrying += len(rows)
            return
        if response.status_code >= 500 or response.status_code == 429:
            for row in rows:
                self._retry(row.item, f"SensorThings answered {response.status_code}")
            result.retrying += len(rows)
            return
        entries = _entries(response)
        if response.status_code >= 400 or len(entries) != len(ordered):
            entries = ["error"] * len(ordered)
        failed: list[_Row] = []
        for row, entry in zip(ordered, entries, strict=True):
            if isinstance(entry, str) and entry.startswith("http"):
                row.item.status = "delivered"
                result.delivered += 1
            else:
                failed.append(row)
        if not failed:
            return
        if len(failed) == 1 and len(rows) == 1:
            reason = (f"SensorThings rejected the observation ({response.status_code}): "
                      f"{response.text[:300]}")
            self._dead(failed[0].item, reason)
            result.dead += 1
            return
        # The server refuses a whole batch for one bad row: halve until it stands alone.
        half = max(1, len(failed) // 2)
        self._send(failed[:half], result)
        self._send(failed[half:], result)

    def _retry(self, item: OutboxItem, reason: str) -> None:
        item.attempts += 1
        item.last_error = reason[:1000]
        if item.attempts >= self.settings.forward_max_attempts:
            item.status = "dead"
        else:
            item.next_attempt = utcnow() + timedelta(seconds=min(2 ** item.attempts, 3600))

    def _dead(self, item: OutboxItem, reason: str) -> None:
        item.attempts += 1
        item.status = "dead"
        item.last_error = reason[:1000]

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
        lat, lon = device.latitude, device.longitude
        site = session.get(Site, device.site_id) if device.site_id else None
        if (lat is None or lon is None) and site is not None:
            lat, lon = site.latitude, site.longitude
        if lat is None or lon is None:
            # A Thing needs a Location (or every Observation a FeatureOfInterest).
            raise PlatformUnavailable(f"device {dev_eui} has no location (set it or its site's)")
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
