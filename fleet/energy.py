"""Building-level aggregates of the flats' energy readings: the only form in which flat-level
data is published (DESIGN.md: personal data).

Per site (building), interval (`energy_interval_s`) and quantity, each flat contributes its
meters' latest value as of the interval's end (a meter reading such as `energy_import` in Wh,
or a power sample in W); a value counts for up to `CARRY_INTERVALS` intervals, so one missed
uplink does not change which flats are in the sum (which would let consecutive totals be
subtracted to reveal the missing flat). The building's `total` is the sum over the flats,
`mean` is total / flats. An aggregate is published only when at least `energy_min_flats`
distinct flats contributed; otherwise it is suppressed: stored with its flat count only (so
it is not computed again), never served or forwarded, and counted
(`energy_aggregates_suppressed`). Published aggregates enter the platform outbox
(`sensorthings-energy`, `ngsi-ld-energy`) in the same transaction. Intervals are computed
`energy_delay_s` after they end; readings arriving later than that are not counted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from .forward.smart_data_models import ENERGY
from .forward.targets import NGSI_LD_ENERGY, energy_targets
from .ingest import bump_counters
from .models import Device, DeviceState, EnergyAggregate, OutboxItem, Reading, utcnow
from .settings import FleetSettings

log = logging.getLogger(__name__)

ENERGY_KIND = "energy"
CARRY_INTERVALS = 4


@dataclass
class AggregationResult:
    published: int = 0
    suppressed: int = 0


def interval_start(t: datetime, interval_s: int) -> datetime:
    seconds = int(t.timestamp())
    return datetime.fromtimestamp(seconds - seconds % interval_s, UTC)


def aggregate_energy(engine: sa.Engine, settings: FleetSettings, *,
                     now: datetime | None = None) -> AggregationResult:
    """Compute every interval that ended at least `energy_delay_s` ago and is not stored yet."""
    step = timedelta(seconds=settings.energy_interval_s)
    until = interval_start((now or utcnow()) - timedelta(seconds=settings.energy_delay_s),
                           settings.energy_interval_s)
    result = AggregationResult()
    with Session(engine) as session:
        meters: dict[int, dict[str, str]] = defaultdict(dict)  # site -> {DevEUI: flat_ref}
        # Meters in service only: a swapped meter keeps its flat_ref (history), and summing
        # its last value with its successor's would count the flat twice.
        for dev_eui, site_id, flat_ref in session.exec(
                select(Device.dev_eui, Device.site_id, Device.flat_ref).where(
                    col(Device.flat_ref).is_not(None), col(Device.site_id).is_not(None),
                    col(Device.state) != DeviceState.decommissioned)):
            meters[int(site_id or 0)][dev_eui] = str(flat_ref)
        try:
            for site_id, flats in meters.items():
                last = session.exec(select(func.max(EnergyAggregate.start)).where(
                    EnergyAggregate.site_id == site_id)).one()
                since = last + step if last is not None else None
                rows = _aggregates(session, settings, site_id, flats, since=since, until=until)
                for row in rows:
                    if row.published:
                        result.published += 1
                    else:
                        result.suppressed += 1
                session.add_all(rows)
                session.flush()  # ids for the outbox
                _enqueue(session, settings, [row for row in rows if row.published])
            bump_counters(session, {"energy_aggregates_published": result.published,
                                    "energy_aggregates_suppressed": result.suppressed})
            session.commit()
        except sa.exc.IntegrityError:
            # Another fleet process computed the same intervals first (at the flush or the
            # commit): theirs stand.
            session.rollback()
            log.info("energy aggregates already computed by another process")
            return AggregationResult()
    return result


def _enqueue(session: Session, settings: FleetSettings,
             published: list[EnergyAggregate]) -> None:
    """Forward what was published, through the durable outbox, in the same transaction."""
    items = [OutboxItem(target=target, reading_id=int(a.id or 0))
             for a in published for target in energy_targets(settings)
             if target != NGSI_LD_ENERGY or a.quantity in ENERGY]
    session.add_all(items)


def _aggregates(session: Session, settings: FleetSettings, site_id: int,
                flats: dict[str, str], *, since: datetime | None,
                until: datetime) -> list[EnergyAggregate]:
    step = timedelta(seconds=settings.energy_interval_s)
    carry = step * CARRY_INTERVALS
    t = Reading.__table__.c  # type: ignore[attr-defined]
    query = (sa.select(t.device, t.quantity, t.unit, t.value, t.time)
             .where(t.device.in_(list(flats)), t.kind == ENERGY_KIND, t.time < until)
             .order_by(t.time))
    if since is not None:
        query = query.where(t.time >= since - carry)
    readings: list[Any] = list(session.execute(query))
    if not readings:
        return []
    start = since or interval_start(readings[0].time, settings.energy_interval_s)
    latest: dict[tuple[str, str], Any] = {}  # (DevEUI, quantity) -> its latest reading
    rows: list[EnergyAggregate] = []
    i = 0
    while start < until:
        end = start + step
        while i < len(readings) and readings[i].time < end:
            latest[(readings[i].device, readings[i].quantity)] = readings[i]
            i += 1
        per_flat: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        units: dict[str, set[str]] = defaultdict(set)
        for (dev_eui, quantity), r in latest.items():
            if r.time >= end - carry:
                per_flat[quantity][flats[dev_eui]] += r.value
                units[quantity].add(r.unit)
        for quantity, values in sorted(per_flat.items()):
            if len(units[quantity]) > 1:
                log.warning("site %s: the flats' meters report %s in different units (%s); "
                            "that quantity is not aggregated", site_id, quantity,
                            ", ".join(sorted(units[quantity])))
                continue
            total = sum(values.values())
            published = len(values) >= settings.energy_min_flats
            rows.append(EnergyAggregate(
                site_id=site_id, quantity=quantity, unit=units[quantity].pop(), start=start,
                interval_s=settings.energy_interval_s, flats=len(values), published=published,
                total=round(total, 6) if published else None,
                mean=round(total / len(values), 6) if published else None))
        start = end
    return rows
