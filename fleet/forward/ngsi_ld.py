"""Forwarding to an NGSI-LD context broker (ETSI GS CIM 009) through the durable outbox.

The readings of a batch become one Smart Data Models entity per device and observation time
(`smart_data_models.py`) and go to the broker with a batch upsert,
`POST /ngsi-ld/v1/entityOperations/upsert?options=update`, as `application/ld+json` with the
`@context` in each entity. `update` keeps the attributes a later uplink does not carry.
201 (some created) and 204 (all updated) mean every entity was taken; 207 Multi-Status lists
the refused entities (`errors[].entityId`): only their items are dead-lettered (or retried
when the broker's reason is transient). Claiming, retry and dead-lettering are the outbox's.

The buildings' published energy aggregates (energy.py) become one ThreePhaseAcMeasurement per
building and interval, sent the same way.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import Session, col, select

from ..models import Device, EnergyAggregate, Reading, Site
from ..settings import FleetSettings
from .outbox import ForwardResult, OutboxForwarder, Pending, RecordT, is_transient
from .places import position
from .smart_data_models import (
    ENERGY,
    Observation,
    entity,
    model_of,
    three_phase_ac_measurement,
    upsert_body,
)
from .targets import NGSI_LD, NGSI_LD_ENERGY

TARGET = NGSI_LD
UPSERT_PATH = "/ngsi-ld/v1/entityOperations/upsert"
# The broker cannot be used as configured (wrong URL, token or tenant): a person can fix it,
# so the items wait (and die only after `forward_max_attempts`).
_MISCONFIGURED = (401, 403, 404, 405)


@dataclass
class _Entity:
    """One entity to upsert and the outbox items it carries."""

    body: dict[str, Any]
    rows: list[Pending[Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.body["id"])


class _NgsiLd(OutboxForwarder[RecordT]):
    """What both NGSI-LD outboxes share: entities upserted in rounds, the broker's answers."""

    def __init__(self, engine: sa.Engine, settings: FleetSettings, *,
                 http: httpx.Client | None = None) -> None:
        if not settings.ngsi_ld_url:
            raise ValueError("ALLMENDE_NGSI_LD_URL is not set")
        super().__init__(engine, settings, http=http)
        self.url = settings.ngsi_ld_url.rstrip("/") + UPSERT_PATH
        self.headers = {"Content-Type": "application/ld+json", "Accept": "application/json"}
        if settings.ngsi_ld_tenant:
            self.headers["NGSILD-Tenant"] = settings.ngsi_ld_tenant
        if settings.ngsi_ld_token:
            self.headers["Authorization"] = (
                f"Bearer {settings.ngsi_ld_token.get_secret_value()}")
        self.batch = max(1, min(settings.ngsi_ld_batch_size, 1000))

    def deliver(self, session: Session, rows: list[Pending[RecordT]],
                result: ForwardResult) -> None:
        rounds = _rounds(self._entities(session, rows, result))
        for i, request in enumerate(rounds):
            for start in range(0, len(request), self.batch):
                if not self._upsert(request[start:start + self.batch], result):
                    # The broker is away: what is left waits too, so that a device's older
                    # uplink is never applied after a newer one.
                    waiting = request[start + self.batch:] + [
                        e for later in rounds[i + 1:] for e in later]
                    self.retry([row for e in waiting for row in e.rows],
                               "NGSI-LD broker unavailable earlier in this pass", result)
                    return

    def _entities(self, session: Session, rows: list[Pending[RecordT]],
                  result: ForwardResult) -> list[_Entity]:
        """The entities that carry `rows`, oldest first (rows that fit none are dead)."""
        raise NotImplementedError

    def _upsert(self, entities: list[_Entity], result: ForwardResult) -> bool:
        """One upsert request; False when the broker could not take it now (all retried)."""
        rows = [row for e in entities for row in e.rows]
        body = upsert_body([e.body for e in entities], self.settings.ngsi_ld_context)
        try:
            response = self.http.post(self.url, params={"options": "update"}, json=body,
                                      headers=self.headers)
        except httpx.HTTPError as exc:
            self.retry(rows, f"NGSI-LD broker unreachable: {exc}", result)
            return False
        status = response.status_code
        if status in (200, 201, 204):
            self.delivered(rows, result)
        elif status == 207:
            self._multi_status(entities, response, result)
        elif is_transient(status) or status in _MISCONFIGURED:
            self.retry(rows, f"NGSI-LD broker answered {status}: {response.text[:300]}", result)
            return False
        elif len(entities) > 1:
            # The broker refused the whole request: halve until the bad entity stands alone.
            half = len(entities) // 2
            if not self._upsert(entities[:half], result):
                self.retry([row for e in entities[half:] for row in e.rows],
                           "NGSI-LD broker unavailable earlier in this pass", result)
                return False
            return self._upsert(entities[half:], result)
        else:
            self.dead(rows, f"NGSI-LD broker refused {entities[0].id} ({status}): "
                            f"{response.text[:300]}", result)
        return True

    def _multi_status(self, entities: list[_Entity], response: httpx.Response,
                      result: ForwardResult) -> None:
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        succeeded = {str(s) for s in answer.get("success") or [] if isinstance(s, str)}
        errors = {str(e.get("entityId")): e.get("error") or {}
                  for e in answer.get("errors") or [] if isinstance(e, dict)}
        for e in entities:
            if e.id in errors:
                problem = errors[e.id] if isinstance(errors[e.id], dict) else {}
                reason = (f"NGSI-LD broker refused {e.id}: {problem.get('title', '')} "
                          f"{problem.get('detail', '')}".strip())
                status = problem.get("status")
                if isinstance(status, int) and is_transient(status):
                    self.retry(e.rows, reason, result)
                else:
                    self.dead(e.rows, reason, result)
            elif e.id in succeeded:
                self.delivered(e.rows, result)
            else:
                self.retry(e.rows, f"the broker's 207 answer does not mention {e.id}", result)


class NgsiLdForwarder(_NgsiLd[Reading]):
    """Drains the `ngsi-ld` outbox: the readings of public devices."""

    target = NGSI_LD
    source = Reading

    def _entities(self, session: Session, rows: list[Pending[Reading]],
                  result: ForwardResult) -> list[_Entity]:
        """One entity per device, model and observation time, oldest first."""
        devices = {d.dev_eui: d for d in session.exec(select(Device).where(
            col(Device.dev_eui).in_({r.record.device for r in rows})))}
        groups: dict[tuple[str, str, datetime], list[Pending[Reading]]] = defaultdict(list)
        for row in rows:
            reading = row.record
            device = devices.get(reading.device)
            model = model_of(reading.kind, reading.quantity)
            if device is None or device.flat_ref:
                # Personal data never leaves one by one (ingest does not enqueue it either).
                self.dead([row], "not forwarded: unknown device or a flat's", result)
            elif model is None:
                self.dead([row], f"no Smart Data Model for {reading.kind} {reading.quantity}",
                          result)
            else:
                groups[(reading.device, model, reading.time)].append(row)
        entities = []
        for (dev_eui, model, _time), members in sorted(groups.items(), key=lambda g: g[0][2]):
            where = position(session, devices[dev_eui])
            lat, lon = where if where else (None, None)
            observations = [Observation(r.record.device, r.record.kind, r.record.quantity,
                                        r.record.value, r.record.unit, r.record.time)
                            for r in members]
            entities.append(_Entity(entity(model, dev_eui, observations, latitude=lat,
                                           longitude=lon), members))
        return entities


class NgsiLdEnergyForwarder(_NgsiLd[EnergyAggregate]):
    """Drains the `ngsi-ld-energy` outbox: one ThreePhaseAcMeasurement per building and
    interval, from its published aggregates (nothing of a flat is in them)."""

    target = NGSI_LD_ENERGY
    source = EnergyAggregate

    def _entities(self, session: Session, rows: list[Pending[EnergyAggregate]],
                  result: ForwardResult) -> list[_Entity]:
        groups: dict[tuple[int, datetime], list[Pending[EnergyAggregate]]] = defaultdict(list)
        for row in rows:
            a = row.record
            if not a.published or a.total is None:
                self.dead([row], "a suppressed aggregate is never published", result)
            elif a.quantity not in ENERGY:
                self.dead([row], f"no ThreePhaseAcMeasurement attribute for {a.quantity}",
                          result)
            else:
                groups[(a.site_id, a.start)].append(row)
        entities = []
        for (site_id, start), members in sorted(groups.items(), key=lambda g: g[0][1]):
            site = session.get(Site, site_id)
            end = start + timedelta(seconds=members[0].record.interval_s)
            totals = {m.record.quantity: m.record.total or 0.0 for m in members}
            entities.append(_Entity(three_phase_ac_measurement(
                site_id, site.name if site else f"site {site_id}", totals, end,
                latitude=site.latitude if site else None,
                longitude=site.longitude if site else None), members))
        return entities


def _rounds(entities: list[_Entity]) -> list[list[_Entity]]:
    """Requests in which each entity id occurs once: the k-th observation of a device goes
    into the k-th request, so the broker applies a device's uplinks in time order."""
    rounds: list[list[_Entity]] = []
    seen: dict[str, int] = defaultdict(int)
    for e in entities:  # oldest first
        k = seen[e.id]
        seen[e.id] += 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(e)
    return rounds

