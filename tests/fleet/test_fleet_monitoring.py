"""Monitoring (offline, low battery, sensor faults), personal data, and the schema migration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from allmende.fleet.ingest import ReadingIn, ReadingStore
from allmende.fleet.models import Event, OutboxItem, Role
from allmende.fleet.monitoring import check_offline_devices, purge_personal_readings
from allmende.fleet.settings import FleetSettings
from fastapi.testclient import TestClient
from sqlmodel import Session, SQLModel, select

from tests.fixtures.fleet_records import provision_device

T0 = datetime(2026, 11, 21, 23, 40, tzinfo=UTC)



def reading(dev: str, fcnt: int, quantity: str, value: float, *, flags: list[str] | None = None,
            unit: str = "ug/m3") -> ReadingIn:
    return ReadingIn(key=f"{dev}/s1/{fcnt}/{quantity}", device=dev, kind="air_quality",
                     quantity=quantity, value=value, unit=unit,
                     time=T0 + timedelta(minutes=5 * fcnt), fcnt=fcnt, session="s1",
                     gateway="gw-a", flags=flags or [])


def active(engine: sa.Engine, kind: str) -> list[str | None]:
    with Session(engine) as session:
        return [e.device for e in session.exec(
            select(Event).where(Event.kind == kind, Event.active == True))]  # noqa: E712


def test_alerts_open_and_close(settings: FleetSettings, engine: sa.Engine, client: TestClient,
                               admin: dict[str, str]) -> None:
    dev = "00000000000000A1"
    provision_device(engine, settings, dev)
    store = ReadingStore(engine, settings)
    store.store([reading(dev, 1, "battery_voltage", 3.2, unit="V"),
                 reading(dev, 1, "PM2.5", 0, flags=["pm_fault"])])
    assert active(engine, "low_battery") == [dev]
    assert active(engine, "sensor_fault") == [dev]
    alerts = client.get("/api/v1/alerts", headers=admin).json()
    assert {a["kind"] for a in alerts} == {"low_battery", "sensor_fault"}

    # Silent for more than offline_after_missed intervals (5 min each by default here).
    interval = settings.uplink_interval_s * settings.offline_after_missed
    late = T0 + timedelta(minutes=5) + timedelta(seconds=interval + 1)
    assert check_offline_devices(engine, settings, now=late) == [dev]
    assert check_offline_devices(engine, settings, now=late) == []  # once per outage

    # The next good uplink clears all three.
    store.store([reading(dev, 2, "battery_voltage", 3.9, unit="V"), reading(dev, 2, "PM2.5", 9)])
    assert active(engine, "low_battery") == active(engine, "sensor_fault") == \
        active(engine, "device_offline") == []
    kinds = [e["kind"] for e in client.get("/api/v1/events", headers=admin).json()]
    assert sorted(kinds) == ["device_offline", "low_battery", "sensor_fault"]


def test_flat_readings_never_enter_the_platform_outbox(settings: FleetSettings,
                                                       engine: sa.Engine) -> None:
    settings = settings.model_copy(update={"sensorthings_url": "http://127.0.0.1:9/v1.1"})
    provision_device(engine, settings, "00000000000000E1", kind="energy", flat_ref="N-3-12")
    provision_device(engine, settings, "00000000000000A1")
    result = ReadingStore(engine, settings).store([reading("00000000000000E1", 1, "power", 120),
                                                   reading("00000000000000A1", 1, "PM2.5", 9)])
    assert result.stored == 2
    assert [r["device"] for r in result.new_readings] == ["00000000000000A1"]
    with Session(engine) as session:
        assert len(session.exec(select(OutboxItem)).all()) == 1


def test_flat_readings_are_hidden_from_the_platform_and_expire(
        settings: FleetSettings, engine: sa.Engine, client: TestClient, admin: dict[str, str],
        token_for) -> None:  # noqa: ANN001
    provision_device(engine, settings, "00000000000000E1", kind="energy", flat_ref="N-3-12")
    provision_device(engine, settings, "00000000000000A1")
    ReadingStore(engine, settings).store([reading("00000000000000E1", 1, "power", 120),
                                          reading("00000000000000A1", 1, "PM2.5", 9)])
    platform = token_for(Role.platform)
    seen = client.get("/api/v1/readings", headers=platform).json()["items"]
    assert [r["device"] for r in seen] == ["00000000000000A1"]
    assert len(client.get("/api/v1/readings", headers=admin).json()["items"]) == 2
    later = T0 + timedelta(days=settings.personal_retention_days, hours=1)
    assert purge_personal_readings(engine, settings, now=later) == 1
    assert [r["device"] for r in client.get("/api/v1/readings", headers=admin).json()["items"]] \
        == ["00000000000000A1"]


def test_migrations_match_the_models(engine: sa.Engine) -> None:
    """The Alembic history builds exactly the schema the models describe."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []
