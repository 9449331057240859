"""MQTT ingest through a real Mosquitto: idempotent by reading key, shared subscription."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import paho.mqtt.client as mqtt
import sqlalchemy as sa
from allmende.fleet.db import make_engine
from allmende.fleet.ingest import IngestWorker, read_counters
from allmende.fleet.models import (
    Device,
    DeviceCreate,
    Event,
    GatewayCreate,
    Reading,
)
from allmende.fleet.provisioning import create_device, create_gateway, decommission
from allmende.fleet.security import KeyVault
from allmende.fleet.settings import FleetSettings
from sqlmodel import Session, select

from tests.fixtures.services import Broker

T0 = datetime(2026, 11, 21, 23, 40, tzinfo=UTC)


def up_message(gateway: str, readings: list[dict]) -> str:
    return json.dumps({"gateway": gateway, "sent": T0.isoformat(), "readings": readings})


def reading(dev: str, fcnt: int, quantity: str = "PM2.5", *, gateway: str = "gw-a",
            session: str = "26011234-0001", value: float = 12.3) -> dict:
    return {"key": f"{dev}/{session}/{fcnt}/{quantity}", "device": dev, "kind": "air_quality",
            "quantity": quantity, "value": value, "unit": "ug/m3",
            "time": (T0 + timedelta(seconds=fcnt)).isoformat().replace("+00:00", "Z"),
            "fcnt": fcnt, "session": session, "gateway": gateway, "rssi": -61.0, "snr": 9.5,
            "flags": [], "fw": "0.1.0"}


def provision(engine: sa.Engine, settings: FleetSettings, *, gateways: list[str],
              devices: list[str]) -> None:
    vault = KeyVault(settings.secret_key)
    with Session(engine) as session:
        for gw in gateways:
            create_gateway(session, GatewayCreate(gateway_id=gw), actor="test")
        for dev in devices:
            create_device(session, vault, DeviceCreate(dev_eui=dev, home_gateway_id=gateways[0]),
                          actor="test")
        session.commit()


def counters(engine: sa.Engine) -> dict[str, int]:
    with Session(engine) as session:
        return read_counters(session)


async def until(check: Callable[[], bool], *, within: float = 30.0) -> None:
    """Wait for a condition (a bound on failure, not a timing assertion)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def with_workers(settings: FleetSettings, engine: sa.Engine, count: int,
                       body: Callable[[list[IngestWorker]], Awaitable[None]]) -> None:
    workers = [IngestWorker(settings, engine=engine, client_id=f"fleet-{i}")
               for i in range(count)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in workers)), 20)
        await body(workers)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_duplicates_are_stored_once_unknown_devices_rejected(
        broker: Broker, settings: FleetSettings, engine: sa.Engine) -> None:
    settings = settings.model_copy(update={"mqtt_port": broker.port})
    provision(engine, settings, gateways=["gw-a", "gw-b"],
              devices=["00000000000000A1", "00000000000000A2"])
    with Session(engine) as session:
        gone = session.exec(select(Device).where(Device.dev_eui == "00000000000000A2")).one()
        decommission(session, gone, actor="test")
        session.commit()

    first = [reading("00000000000000A1", 1), reading("00000000000000A1", 1, "PM10"),
             reading("00000000000000A1", 2)]
    heard_by_b = [dict(r, gateway="gw-b") for r in first]
    # Same frame counter in a new LoRaWAN session is a new reading.
    rejoined = [reading("00000000000000A1", 1, session="26011234-0002")]
    strangers = [reading("00000000000000FF", 1), reading("00000000000000A2", 3)]
    spoofed = [reading("00000000000000A1", 9, gateway="gw-b")]  # on gw-a's topic

    async def body(workers: list[IngestWorker]) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as watcher, \
                aiomqtt.Client("127.0.0.1", broker.port) as gw:
            await watcher.subscribe(settings.readings_topic, qos=1)
            await gw.publish("allmende/gw/gw-a/up", up_message("gw-a", first), qos=1)
            await gw.publish("allmende/gw/gw-a/up", up_message("gw-a", first), qos=1)  # replay
            await gw.publish("allmende/gw/gw-b/up", up_message("gw-b", heard_by_b), qos=1)
            await gw.publish("allmende/gw/gw-a/up", up_message("gw-a", rejoined), qos=1)
            await gw.publish("allmende/gw/gw-a/up", up_message("gw-a", strangers), qos=1)
            await gw.publish("allmende/gw/gw-a/up", up_message("gw-a", spoofed), qos=1)
            await gw.publish("allmende/gw/gw-a/up", b"not json", qos=1)
            await until(lambda: workers[0].messages >= 7)
            forwarded: list[str] = []
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                forwarded += [r["key"] for r in json.loads(message.payload)["readings"]]
                if len(forwarded) >= 4:
                    break
            assert sorted(forwarded) == sorted([r["key"] for r in first + rejoined])

    asyncio.run(with_workers(settings, engine, 1, body))
    c = counters(engine)
    assert c["readings_stored"] == 4
    assert c["readings_duplicate"] == 6
    assert c["readings_rejected"] == 2
    assert c["readings_invalid"] == 2
    with Session(engine) as session:
        keys = sorted(r.key for r in session.exec(select(Reading)))
    assert keys == sorted(r["key"] for r in first + rejoined)


def test_two_workers_share_the_subscription_and_lose_nothing(
        broker: Broker, settings: FleetSettings, engine: sa.Engine) -> None:
    settings = settings.model_copy(update={"mqtt_port": broker.port})
    gateways = [f"gw-{i}" for i in range(4)]
    devices = [f"{i:016X}" for i in range(1, 21)]
    provision(engine, settings, gateways=gateways, devices=devices)
    messages = 60
    per_message = 20

    async def body(workers: list[IngestWorker]) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as gw:
            for m in range(messages):
                gateway = gateways[m % len(gateways)]
                batch = [reading(devices[(m + k) % len(devices)], m * per_message + k,
                                 gateway=gateway) for k in range(per_message)]
                await gw.publish(f"allmende/gw/{gateway}/up", up_message(gateway, batch), qos=1)
        await until(lambda: sum(w.messages for w in workers) >= messages)

    holder: list[IngestWorker] = []

    async def keep(workers: list[IngestWorker]) -> None:
        holder.extend(workers)
        await body(workers)

    asyncio.run(with_workers(settings, engine, 2, keep))
    assert all(w.messages > 0 for w in holder), [w.messages for w in holder]
    assert sum(w.totals.stored for w in holder) == messages * per_message
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM reading")).scalar_one() == \
            messages * per_message
        assert conn.execute(sa.text("SELECT count(DISTINCT key) FROM reading")).scalar_one() == \
            messages * per_message


def test_gateway_last_will_raises_an_alert(broker: Broker, settings: FleetSettings,
                                          engine: sa.Engine) -> None:
    settings = settings.model_copy(update={"mqtt_port": broker.port})
    provision(engine, settings, gateways=["gw-a"], devices=[])

    def alerts() -> list[Event]:
        with Session(engine) as session:
            return list(session.exec(select(Event).where(Event.kind == "gateway_offline")))

    async def body(workers: list[IngestWorker]) -> None:
        status = "allmende/gw/gw-a/status"
        gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-a")
        gw.will_set(status, json.dumps({"gateway": "gw-a", "state": "offline",
                                        "time": T0.isoformat()}), qos=1, retain=True)
        gw.connect("127.0.0.1", broker.port)
        gw.loop_start()
        gw.publish(status, json.dumps({"gateway": "gw-a", "state": "online",
                                       "time": T0.isoformat()}), qos=1, retain=True)
        await until(lambda: _gateway_state(engine, "gw-a") == "online")
        # Die without DISCONNECT (a power cut), so the broker publishes the last will.
        gw.loop_stop()
        gw.socket().close()
        await until(lambda: any(e.active for e in alerts()))

    asyncio.run(with_workers(settings, engine, 1, body))
    assert _gateway_state(engine, "gw-a") == "offline"
    assert [e.severity for e in alerts() if e.active] == ["critical"]


def _gateway_state(engine: sa.Engine, gateway_id: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT state FROM gateway WHERE gateway_id = :g"),
                                {"g": gateway_id}).scalar_one())


def test_a_worker_that_stops_before_commit_gets_its_messages_again(
        broker: Broker, settings: FleetSettings, engine: sa.Engine, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"mqtt_port": broker.port})
    provision(engine, settings, gateways=["gw-a"], devices=["00000000000000A1"])
    sent = [reading("00000000000000A1", f) for f in range(1, 11)]

    async def scenario() -> None:
        # The database is unreachable for the first run: the worker holds the message
        # unacknowledged (retrying), then stops.
        dead_db = make_engine(f"sqlite:///{tmp_path / 'missing' / 'fleet.db'}")
        failing = IngestWorker(settings, engine=dead_db, client_id="fleet-restart")
        task = asyncio.create_task(failing.run())
        await asyncio.wait_for(failing.ready.wait(), 20)
        async with aiomqtt.Client("127.0.0.1", broker.port) as gw:
            await gw.publish("allmende/gw/gw-a/up", up_message("gw-a", sent), qos=1)
        await until(lambda: failing.store_failures > 0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert failing.messages == 0
        # Restarted with the same identity and a working database: the message comes back.
        worker = IngestWorker(settings, engine=engine, client_id="fleet-restart")
        task = asyncio.create_task(worker.run())
        try:
            await until(lambda: worker.totals.stored == len(sent))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert counters(engine)["readings_stored"] == len(sent)


def test_pipelined_batches_are_all_committed_and_acknowledged(
        broker: Broker, settings: FleetSettings, engine: sa.Engine) -> None:
    # Tiny batches: many of them are committed while the next ones are parsed.
    settings = settings.model_copy(update={"mqtt_port": broker.port, "ingest_batch_size": 3})
    provision(engine, settings, gateways=["gw-a"], devices=["00000000000000A1"])
    messages = 30

    async def scenario() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as gw:
            first = IngestWorker(settings, engine=engine, client_id="fleet-pipe")
            task = asyncio.create_task(first.run())
            try:
                await asyncio.wait_for(first.ready.wait(), 20)
                for m in range(messages):
                    await gw.publish("allmende/gw/gw-a/up", up_message(
                        "gw-a", [reading("00000000000000A1", m * 2 + k) for k in range(2)]),
                        qos=1)
                await until(lambda: first.messages == messages)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert first.totals.stored == 2 * messages
            # Same identity again: had any message been left unacknowledged, the broker
            # would hand it out before the one published now.
            again = IngestWorker(settings, engine=engine, client_id="fleet-pipe")
            task = asyncio.create_task(again.run())
            try:
                await asyncio.wait_for(again.ready.wait(), 20)
                await gw.publish("allmende/gw/gw-a/up", up_message(
                    "gw-a", [reading("00000000000000A1", 1000)]), qos=1)
                await until(lambda: again.messages >= 1)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert (again.messages, again.totals.stored, again.totals.duplicates) == (1, 1, 0)

    asyncio.run(scenario())
    c = counters(engine)
    assert (c["readings_stored"], c.get("readings_duplicate", 0)) == (2 * messages + 1, 0)
