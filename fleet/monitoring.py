"""Health watch: devices that stopped sending become `device_offline` alerts; flat-level
readings past their retention limit are deleted; the buildings' energy aggregates are computed
(energy.py).

Low battery, sensor-fault flags and gateway last wills are noticed at ingest (ingest.py);
what needs a clock — an uplink that did not come — is checked here, periodically.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from .energy import aggregate_energy
from .forward.targets import READING_TARGETS
from .models import Device, DeviceState, Event, OutboxItem, Reading, utcnow
from .settings import FleetSettings

log = logging.getLogger(__name__)


def check_offline_devices(engine: sa.Engine, settings: FleetSettings, *,
                          now: datetime | None = None) -> list[str]:
    """Open a `device_offline` alert for every active device silent for more than
    `offline_after_missed` uplink intervals; returns the DevEUIs newly alerted."""
    now = now or utcnow()
    silent_since = now - timedelta(seconds=settings.uplink_interval_s *
                                   settings.offline_after_missed)
    with Session(engine) as session:
        already = set(session.exec(select(Event.device).where(
            Event.kind == "device_offline", col(Event.active).is_(True))))
        silent = session.exec(select(Device).where(
            Device.state == DeviceState.active, col(Device.last_seen) < silent_since)).all()
        alerted = []
        for device in silent:
            if device.dev_eui in already:
                continue
            session.add(Event(kind="device_offline", device=device.dev_eui, time=now,
                              message=f"no uplink since {device.last_seen:%Y-%m-%d %H:%M:%S}Z "
                                      f"({settings.offline_after_missed} intervals missed)"))
            alerted.append(device.dev_eui)
        session.commit()
    return alerted


def purge_personal_readings(engine: sa.Engine, settings: FleetSettings, *,
                            now: datetime | None = None) -> int:
    """Delete flat-level readings older than the retention limit; returns how many."""
    cutoff = (now or utcnow()) - timedelta(days=settings.personal_retention_days)
    flats = select(Device.dev_eui).where(col(Device.flat_ref).is_not(None))
    with Session(engine) as session:
        # Their outbox rows first (none are written for flats, but older data may hold some).
        old = select(Reading.id).where(col(Reading.device).in_(flats), col(Reading.time) < cutoff)
        session.execute(sa.delete(OutboxItem).where(col(OutboxItem.target).in_(READING_TARGETS),
                                                    col(OutboxItem.reading_id).in_(old)))
        result = session.execute(sa.delete(Reading).where(col(Reading.device).in_(flats),
                                                          col(Reading.time) < cutoff))
        session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


async def watch(engine: sa.Engine, settings: FleetSettings, *, every_s: float = 30.0) -> None:
    """Run the checks until cancelled."""
    checks = (check_offline_devices, purge_personal_readings, aggregate_energy)
    while True:
        for check in checks:
            # One failing check must not end the others: the retention purge is an obligation.
            try:
                await asyncio.to_thread(check, engine, settings)
            except sa.exc.OperationalError as exc:
                log.warning("monitoring could not read the database (%s): %s",
                            check.__name__, exc)
            except Exception:
                log.exception("monitoring check %s failed; retrying in %s s",
                              check.__name__, every_s)
        await asyncio.sleep(every_s)
