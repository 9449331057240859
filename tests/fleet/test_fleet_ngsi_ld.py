"""Forwarding to an NGSI-LD ngsi_broker through the outbox (batch upsert, Smart Data Models).

The ngsi_broker is the stand-in of tests/fixtures/ngsi_ld_broker.py: no real NGSI-LD ngsi_broker
installs on this machine (see that module).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from allmende.fleet.app import forwarders
from allmende.fleet.forward.ngsi_ld import TARGET, NgsiLdEnergyForwarder, NgsiLdForwarder
from allmende.fleet.forward.sensorthings import (
    SensorThingsEnergyForwarder,
    SensorThingsForwarder,
)
from allmende.fleet.ingest import ReadingStore
from allmende.fleet.models import OutboxItem
from allmende.fleet.settings import FleetSettings
from sqlmodel import Session, select

from tests.fixtures.fleet_records import provision_device, uplink
from tests.fixtures.ngsi_ld_broker import NGSI_TENANT as TENANT
from tests.fixtures.ngsi_ld_broker import NGSI_TOKEN as TOKEN
from tests.fixtures.ngsi_ld_broker import (
    NgsiLdBroker,
    ngsi_ld_settings,
    run_ngsi_ld_broker,
)
from tests.fixtures.ngsi_ld_broker import fetch_entity as entity
from tests.fixtures.services import free_port

T1 = datetime(2026, 11, 21, 23, 40, 0, 123000, tzinfo=UTC)
T2 = T1 + timedelta(minutes=5)
AIR = {"PM2.5": (12.3, "ug/m3"), "PM10": (20.5, "ug/m3"), "air_temperature": (21.25, "Cel"),
       "relative_humidity": (45.5, "%"), "air_pressure": (1013.2, "hPa"), "CO2": (612, "ppm")}


def to(settings: FleetSettings, url: str) -> FleetSettings:
    return settings.model_copy(update=ngsi_ld_settings(url))


def new_dev() -> str:
    return uuid.uuid4().hex[:16].upper()


def outbox(engine: sa.Engine) -> list[OutboxItem]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxItem).where(OutboxItem.target == TARGET)))


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_entities_on_the_broker_equal_the_readings(
        ngsi_broker: NgsiLdBroker, settings: FleetSettings, engine: sa.Engine) -> None:
    settings = to(settings, ngsi_broker.url)
    air, bay = new_dev(), new_dev()
    provision_device(engine, settings, air, latitude=49.87, longitude=8.65)
    provision_device(engine, settings, bay, kind="parking", latitude=49.88, longitude=8.66)
    later = {**AIR, "PM2.5": (14.0, "ug/m3"), "air_temperature": (20.5, "Cel")}
    store = ReadingStore(engine, settings)
    store.store(uplink(air, 1, T1, AIR) + uplink(air, 2, T2, later)
                + uplink(bay, 1, T1, {"occupancy": (1, "1"), "battery_voltage": (3.6, "V")},
                         kind="parking"))
    # No Smart Data Model carries a parking node's battery: it is not queued for NGSI-LD.
    assert len(outbox(engine)) == 2 * len(AIR) + 1

    result = NgsiLdForwarder(engine, settings).forward_once()
    assert (result.delivered, result.dead, result.retrying) == (2 * len(AIR) + 1, 0, 0)
    assert outbox(engine) == []

    got = entity(ngsi_broker, f"urn:ngsi-ld:AirQualityObserved:{air}")
    assert got["type"] == "AirQualityObserved"
    assert got["pm25"] == {"type": "Property", "value": 14.0, "unitCode": "GQ",
                           "observedAt": iso(T2)}
    assert got["pm10"] == {"type": "Property", "value": 20.5, "unitCode": "GQ",
                           "observedAt": iso(T2)}
    assert got["temperature"]["value"] == 20.5 and got["temperature"]["unitCode"] == "CEL"
    assert got["relativeHumidity"]["value"] == pytest.approx(0.455)
    assert got["relativeHumidity"]["unitCode"] == "C62"
    assert (got["atmosphericPressure"]["value"], got["atmosphericPressure"]["unitCode"]) == \
        (1013.2, "A97")
    assert (got["co2"]["value"], got["co2"]["unitCode"]) == (612, "59")
    assert got["location"] == {"type": "GeoProperty",
                               "value": {"type": "Point", "coordinates": [8.65, 49.87]}}
    assert got["refDevice"]["object"] == f"urn:ngsi-ld:Device:{air}"

    spot = entity(ngsi_broker, f"urn:ngsi-ld:ParkingSpot:{bay}")
    assert spot["status"] == {"type": "Property", "value": "occupied", "observedAt": iso(T1)}

    # One entity per device and uplink, the older uplink first, each with its own values.
    sent = [e for e in ngsi_broker.upserted() if e["id"].endswith(air)]
    assert [e["pm25"]["observedAt"] for e in sent] == [iso(T1), iso(T2)]
    assert [e["pm25"]["value"] for e in sent] == [12.3, 14.0]
    upserts = ngsi_broker.upserts()
    assert len(upserts) == 2  # the second uplink waits for the first to be applied
    for request in upserts:
        assert request.path.endswith("?options=update")
        assert request.headers["content-type"] == "application/ld+json"
        assert all("@context" in e for e in request.body)
    # The tenant keeps them apart: the default tenant has none.
    assert ngsi_broker.entities("") == {}


def test_a_dead_broker_keeps_the_items_until_it_returns(
        settings: FleetSettings, engine: sa.Engine) -> None:
    port = free_port()
    settings = to(settings, f"http://127.0.0.1:{port}")
    dev = new_dev()
    provision_device(engine, settings, dev, latitude=49.87, longitude=8.65)
    store = ReadingStore(engine, settings)
    assert store.store(uplink(dev, 1, T1, AIR)).stored == len(AIR)
    forwarder = NgsiLdForwarder(engine, settings)
    result = forwarder.forward_once()
    assert (result.delivered, result.retrying) == (0, len(AIR))
    assert all(i.status == "pending" and i.attempts == 1 for i in outbox(engine))
    # Ingest goes on while the ngsi_broker is away.
    assert store.store(uplink(dev, 2, T2, {"PM2.5": (30.0, "ug/m3")})).stored == 1

    def make_due() -> None:
        with engine.begin() as conn:
            conn.execute(sa.update(OutboxItem).values(next_attempt=T1))

    with run_ngsi_ld_broker(port=port, token=TOKEN) as ngsi_broker:
        ngsi_broker.unavailable = True  # up, but overloaded: 503
        make_due()
        assert forwarder.forward_once().retrying == len(AIR) + 1
        assert ngsi_broker.entities(TENANT) == {}
        ngsi_broker.unavailable = False
        make_due()
        assert forwarder.forward_once().delivered == len(AIR) + 1
        assert outbox(engine) == []
        got = entity(ngsi_broker, f"urn:ngsi-ld:AirQualityObserved:{dev}")
    # Applied in time order: the later uplink's PM2.5 wins, the rest stays from the first.
    assert (got["pm25"]["value"], got["pm25"]["observedAt"]) == (30.0, iso(T2))
    assert (got["pm10"]["value"], got["pm10"]["observedAt"]) == (20.5, iso(T1))


def test_a_refused_entity_is_dead_lettered_alone(
        ngsi_broker: NgsiLdBroker, settings: FleetSettings, engine: sa.Engine) -> None:
    settings = to(settings, ngsi_broker.url)
    good, bad = new_dev(), new_dev()
    for dev in (good, bad):
        provision_device(engine, settings, dev, latitude=49.87, longitude=8.65)
    # Someone else owns the bad device's entity id with another type: the ngsi_broker refuses it.
    r = httpx.post(f"{ngsi_broker.url}/ngsi-ld/v1/entities",
                   headers={"Authorization": f"Bearer {TOKEN}", "NGSILD-Tenant": TENANT,
                            "Content-Type": "application/json"},
                   content=json.dumps({"id": f"urn:ngsi-ld:AirQualityObserved:{bad}",
                                       "type": "Building"}))
    assert r.status_code == 201, r.text
    ReadingStore(engine, settings).store(uplink(good, 1, T1, AIR) + uplink(bad, 1, T1, AIR))
    result = NgsiLdForwarder(engine, settings).forward_once()
    assert (result.delivered, result.dead) == (len(AIR), len(AIR))
    assert any(r.body and len(r.body) == 2 for r in ngsi_broker.requests)  # one 207 for both
    assert entity(ngsi_broker, f"urn:ngsi-ld:AirQualityObserved:{good}")["pm25"]["value"] == 12.3
    dead = outbox(engine)
    assert len(dead) == len(AIR) and all(i.status == "dead" for i in dead)
    assert all("exists with type Building" in (i.last_error or "") for i in dead)
    # Dead items are not retried.
    assert NgsiLdForwarder(engine, settings).forward_once().handled == 0


def test_flat_level_readings_never_reach_the_broker(
        ngsi_broker: NgsiLdBroker, settings: FleetSettings, engine: sa.Engine) -> None:
    settings = to(settings, ngsi_broker.url)
    flat, street = new_dev(), new_dev()
    provision_device(engine, settings, flat, flat_ref="WE-0815", latitude=49.87,
                     longitude=8.65)
    provision_device(engine, settings, street, latitude=49.87, longitude=8.65)
    ReadingStore(engine, settings).store(uplink(flat, 1, T1, AIR) + uplink(street, 1, T1, AIR))
    assert NgsiLdForwarder(engine, settings).forward_once().delivered == len(AIR)
    sent = json.dumps([r.body for r in ngsi_broker.requests])
    assert street in sent
    assert flat not in sent and "WE-0815" not in sent


def test_the_served_app_runs_one_forwarder_per_configured_target(
        settings: FleetSettings, engine: sa.Engine) -> None:
    assert forwarders(engine, settings) == []
    both = to(settings, "http://127.0.0.1:1").model_copy(
        update={"sensorthings_url": "http://127.0.0.1:1/v1.1"})
    kinds = [type(f) for f in forwarders(engine, both)]
    assert kinds == [SensorThingsForwarder, SensorThingsEnergyForwarder, NgsiLdForwarder,
                     NgsiLdEnergyForwarder]
    assert ReadingStore(engine, both).targets == ["sensorthings", "ngsi-ld"]
