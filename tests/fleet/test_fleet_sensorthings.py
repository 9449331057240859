"""Forwarding to a real SensorThings API server (django-ogc-sensorthings) through the outbox."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa
from allmende.fleet.app import create_app
from allmende.fleet.forward.sensorthings import TARGET, SensorThingsForwarder
from allmende.fleet.ingest import ReadingIn, ReadingStore
from allmende.fleet.models import OutboxItem, PlatformLink, utcnow
from allmende.fleet.settings import FleetSettings
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from tests.fixtures.fleet_records import provision_device, publish_up
from tests.fixtures.services import Broker, SensorThings, free_port

T0 = datetime(2026, 11, 21, 23, 40, 0, 123000, tzinfo=UTC)



def readings(dev: str, count: int, *, quantity: str = "PM2.5", unit: str = "ug/m3",
             first_fcnt: int = 1) -> list[ReadingIn]:
    return [ReadingIn(key=f"{dev}/01ab-0001/{f}/{quantity}", device=dev, kind="air_quality",
                      quantity=quantity, value=10 + f / 4, unit=unit,
                      time=T0 + timedelta(minutes=f), fcnt=f, session="01ab-0001",
                      gateway="gw-a") for f in range(first_fcnt, first_fcnt + count)]


def observations(sta: SensorThings, engine: sa.Engine, dev: str, quantity: str) -> list[dict]:
    with Session(engine) as session:
        link = session.get(PlatformLink, (TARGET, f"datastream:{dev}:{quantity}"))
    assert link is not None
    r = httpx.get(f"{sta.url}/Datastreams('{link.remote_id}')/Observations",
                  params={"$orderby": "resultTime", "$top": 100})
    assert r.status_code == 200, r.text
    return list(r.json()["value"])


def datastream(sta: SensorThings, engine: sa.Engine, dev: str, quantity: str) -> dict:
    with Session(engine) as session:
        link = session.get(PlatformLink, (TARGET, f"datastream:{dev}:{quantity}"))
    assert link is not None
    return dict(httpx.get(f"{sta.url}/Datastreams('{link.remote_id}')").json())


def pending(engine: sa.Engine) -> list[OutboxItem]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxItem)))


def test_observations_equal_the_readings_with_units_and_times(
        sta: SensorThings, settings: FleetSettings, engine: sa.Engine) -> None:
    settings = settings.model_copy(update={"sensorthings_url": sta.url,
                                           "sensorthings_batch_size": 7})
    dev = uuid.uuid4().hex[:16].upper()
    provision_device(engine, settings, dev, latitude=49.87, longitude=8.65)
    store = ReadingStore(engine, settings)
    sent = readings(dev, 20) + readings(dev, 3, quantity="air_temperature", unit="Cel")
    store.store(sent)
    forwarder = SensorThingsForwarder(engine, settings)
    assert forwarder.forward_once().delivered == 23
    # More readings reuse the Thing and Datastreams created the first time.
    store.store(readings(dev, 5, first_fcnt=21))
    assert forwarder.forward_once().delivered == 5
    assert forwarder.forward_once().handled == 0
    assert pending(engine) == []

    pm = observations(sta, engine, dev, "PM2.5")
    assert [o["result"] for o in pm] == [10 + f / 4 for f in range(1, 26)]
    # We send milliseconds; this server keeps whole seconds (its ISO type uses timespec=seconds).
    got_times = [datetime.fromisoformat(o["phenomenonTime"]) for o in pm]
    assert got_times == [(T0 + timedelta(minutes=f)).replace(microsecond=0) for f in range(1, 26)]
    assert datastream(sta, engine, dev, "PM2.5")["unitOfMeasurement"]["symbol"] == "ug/m3"
    assert datastream(sta, engine, dev, "air_temperature")["unitOfMeasurement"] == {
        "name": "degree Celsius", "symbol": "Cel",
        "definition": "http://unitsofmeasure.org/ucum.html#Cel"}
    things = httpx.get(f"{sta.url}/Things", params={"$top": 100}).json()["value"]
    assert sum(1 for t in things if t["properties"].get("dev_eui") == dev) == 1


def test_a_poisoned_row_is_dead_lettered_and_the_rest_delivered(
        sta: SensorThings, settings: FleetSettings, engine: sa.Engine) -> None:
    settings = settings.model_copy(update={"sensorthings_url": sta.url})
    good, bad = uuid.uuid4().hex[:16].upper(), uuid.uuid4().hex[:16].upper()
    for dev in (good, bad):
        provision_device(engine, settings, dev, latitude=49.87, longitude=8.65)
    # The platform lost the bad device's datastream: every batch holding its row fails whole.
    with Session(engine) as session:
        session.add(PlatformLink(target=TARGET, local_key=f"datastream:{bad}:PM2.5",
                                 remote_id=str(uuid.uuid4())))
        session.commit()
    rows = readings(good, 6)
    rows.insert(3, readings(bad, 1)[0])
    ReadingStore(engine, settings).store(rows)
    result = SensorThingsForwarder(engine, settings).forward_once()
    assert (result.delivered, result.dead) == (6, 1)
    assert len(observations(sta, engine, good, "PM2.5")) == 6
    [dead] = pending(engine)
    assert dead.status == "dead" and "rejected" in (dead.last_error or "")
    # A dead row is not retried.
    assert SensorThingsForwarder(engine, settings).forward_once().handled == 0


def test_a_dead_platform_does_not_block_ingest(
        sta: SensorThings, settings: FleetSettings, engine: sa.Engine) -> None:
    down = settings.model_copy(update={"sensorthings_url": f"http://127.0.0.1:{free_port()}/v1.1"})
    dev = uuid.uuid4().hex[:16].upper()
    provision_device(engine, down, dev, latitude=49.87, longitude=8.65)
    store = ReadingStore(engine, down)
    assert store.store(readings(dev, 4)).stored == 4
    result = SensorThingsForwarder(engine, down).forward_once()
    assert (result.delivered, result.retrying) == (0, 4)
    waiting = pending(engine)
    assert all(i.status == "pending" and i.attempts == 1 for i in waiting)
    # A long outage: many more failed passes, and the items still wait, at most 5 min apart.
    for _ in range(30):
        with engine.begin() as conn:
            conn.execute(sa.update(OutboxItem).values(next_attempt=T0))
        assert SensorThingsForwarder(engine, down).forward_once().dead == 0
    waiting = pending(engine)
    assert all(i.status == "pending" and i.attempts == 31 for i in waiting)
    assert all(i.next_attempt - utcnow() <= timedelta(seconds=300) for i in waiting)
    assert store.store(readings(dev, 2, first_fcnt=5)).stored == 2
    # The platform is back; make the retries due now rather than waiting out the backoff.
    with engine.begin() as conn:
        conn.execute(sa.update(OutboxItem).values(next_attempt=T0))
    up = settings.model_copy(update={"sensorthings_url": sta.url})
    assert SensorThingsForwarder(engine, up).forward_once().delivered == 6
    assert [o["result"] for o in observations(sta, engine, dev, "PM2.5")] == \
        [10 + f / 4 for f in range(1, 7)]


def test_served_app_ingests_and_forwards(sta: SensorThings, broker: Broker,
                                         settings: FleetSettings, engine: sa.Engine) -> None:
    """The wiring the demo uses: create_app with an ingest worker and the forwarder."""
    settings = settings.model_copy(update={"sensorthings_url": sta.url, "mqtt_port": broker.port})
    dev = uuid.uuid4().hex[:16].upper()
    provision_device(engine, settings, dev, latitude=49.87, longitude=8.65)
    sent = readings(dev, 3)
    app = create_app(settings, engine=engine, ingest_workers=1, forward=True)
    with TestClient(app):
        deadline = time.monotonic() + 30
        while not all(w.ready.is_set() for w in app.state.ingest_workers):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        publish_up(broker.port, "gw-a", sent, sent=T0)
        while True:
            with Session(engine) as session:
                linked = session.get(PlatformLink, (TARGET, f"datastream:{dev}:PM2.5"))
            if linked is not None and len(observations(sta, engine, dev, "PM2.5")) == 3:
                break
            assert time.monotonic() < deadline, "readings did not reach SensorThings"
            time.sleep(0.2)
    assert [o["result"] for o in observations(sta, engine, dev, "PM2.5")] == \
        [r.value for r in sent]
