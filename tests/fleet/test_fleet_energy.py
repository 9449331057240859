"""Building-level energy aggregates of the flats' readings: right sums, suppression below the
minimum number of flats, who may read them, forwarding to SensorThings and NGSI-LD."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import paho.mqtt.client as mqtt
import sqlalchemy as sa
from allmende.firmware.app import payload
from allmende.fleet.app import create_app
from allmende.fleet.energy import aggregate_energy
from allmende.fleet.forward.ngsi_ld import NgsiLdEnergyForwarder
from allmende.fleet.forward.sensorthings import SensorThingsEnergyForwarder
from allmende.fleet.ingest import ReadingIn, ReadingStore, read_counters
from allmende.fleet.models import (
    Device,
    DeviceReplace,
    EnergyAggregate,
    OutboxItem,
    PlatformLink,
    Role,
    Site,
)
from allmende.fleet.provisioning import replace
from allmende.fleet.security import KeyVault
from allmende.fleet.settings import FleetSettings
from allmende.gateway.readings import expand, record
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from tests.fixtures.fleet_records import provision_device, publish_up, uplink
from tests.fixtures.ngsi_ld_broker import NgsiLdBroker, fetch_entity, ngsi_ld_settings
from tests.fixtures.services import Broker, SensorThings

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # an interval start (15 min grid)
STEP = timedelta(minutes=15)


def building(engine: sa.Engine, settings: FleetSettings, name: str,
             flats: int) -> tuple[int, list[str]]:
    """A site with `flats` flats, one meter each; returns the site id and the meters."""
    with Session(engine) as session:
        site = Site(name=name, latitude=49.87, longitude=8.65)
        session.add(site)
        session.commit()
        site_id = int(site.id or 0)
    meters = [f"{site_id:04X}{i:012X}" for i in range(1, flats + 1)]
    for i, meter in enumerate(meters, 1):
        provision_device(engine, settings, meter, kind="energy", site_id=site_id,
                         flat_ref=f"{name}-{i}")
    return site_id, meters


def meter_uplink(meter: str, fcnt: int, time: datetime, power: float, energy: float) -> list:
    return uplink(meter, fcnt, time, {"active_power": (power, "W"),
                                      "energy_import": (energy, "W.h")}, kind="energy")


def aggregates(engine: sa.Engine, site_id: int) -> list[EnergyAggregate]:
    with Session(engine) as session:
        return list(session.exec(select(EnergyAggregate).where(
            EnergyAggregate.site_id == site_id).order_by(EnergyAggregate.start,
                                                         EnergyAggregate.quantity)))


def test_building_totals_over_enough_flats(settings: FleetSettings, engine: sa.Engine) -> None:
    site, meters = building(engine, settings, "Nordhof", 6)
    store = ReadingStore(engine, settings)
    for i, meter in enumerate(meters, 1):
        # Two samples in the first interval: each flat's last one counts.
        store.store(meter_uplink(meter, 1, T0 + timedelta(minutes=2), 50.0 * i, 1000.0 * i)
                    + meter_uplink(meter, 2, T0 + timedelta(minutes=10), 100.0 * i,
                                   1000.0 * i + i))
        # In the second interval only four flats are heard: the others' values carry over.
        if i <= 4:
            store.store(meter_uplink(meter, 3, T0 + STEP + timedelta(minutes=5), 200.0 * i,
                                     1000.0 * i + 2 * i))
    # Computed once the second interval ended and the delay passed; the third not yet.
    now = T0 + 2 * STEP + timedelta(seconds=settings.energy_delay_s + 1)
    assert aggregate_energy(engine, settings, now=now).published == 4
    got = [(a.start, a.quantity, a.unit, a.flats, a.total, a.mean)
           for a in aggregates(engine, site)]
    power_1 = sum(100.0 * i for i in range(1, 7))
    energy_1 = sum(1000.0 * i + i for i in range(1, 7))
    power_2 = sum(200.0 * i for i in range(1, 5)) + 500.0 + 600.0
    energy_2 = sum(1000.0 * i + 2 * i for i in range(1, 5)) + 5005.0 + 6006.0
    assert got == [(T0, "active_power", "W", 6, power_1, round(power_1 / 6, 6)),
                   (T0, "energy_import", "W.h", 6, energy_1, round(energy_1 / 6, 6)),
                   (T0 + STEP, "active_power", "W", 6, power_2, round(power_2 / 6, 6)),
                   (T0 + STEP, "energy_import", "W.h", 6, energy_2, round(energy_2 / 6, 6))]
    # Nothing is computed twice.
    assert aggregate_energy(engine, settings, now=now).published == 0
    assert len(aggregates(engine, site)) == 4


def test_fewer_flats_than_the_minimum_publish_nothing(
        settings: FleetSettings, engine: sa.Engine, client: TestClient, token_for) -> None:  # noqa: ANN001
    small, meters = building(engine, settings, "Suedhof", settings.energy_min_flats - 1)
    store = ReadingStore(engine, settings)
    for i, meter in enumerate(meters, 1):
        store.store(meter_uplink(meter, 1, T0 + timedelta(minutes=3), 100.0 * i, 10.0 * i))
    now = T0 + STEP + timedelta(seconds=settings.energy_delay_s)
    result = aggregate_energy(engine, settings, now=now)
    assert (result.published, result.suppressed) == (0, 2)
    stored = aggregates(engine, small)
    assert all(not a.published and a.total is None and a.mean is None for a in stored)
    with Session(engine) as session:
        assert read_counters(session)["energy_aggregates_suppressed"] == 2
    r = client.get(f"/api/v1/sites/{small}/energy", headers=token_for(Role.platform))
    assert r.status_code == 200 and r.json() == []


def test_a_swapped_meter_does_not_count_its_flat_twice(
        settings: FleetSettings, engine: sa.Engine) -> None:
    site, meters = building(engine, settings, "Westhof", settings.energy_min_flats)
    store = ReadingStore(engine, settings)
    for meter in meters:
        store.store(meter_uplink(meter, 1, T0 + timedelta(minutes=2), 100.0, 5000.0))
    new_meter = f"{site:04X}0000000000FF"
    with Session(engine) as session:
        old = session.exec(select(Device).where(Device.dev_eui == meters[0])).one()
        replace(session, KeyVault(settings.secret_key), old,
                DeviceReplace(dev_eui=new_meter), actor="test")
        session.commit()
    # The new meter starts at zero; the old one's last value must not be added to it.
    store.store(meter_uplink(new_meter, 1, T0 + STEP + timedelta(minutes=2), 100.0, 0.0))
    now = T0 + 2 * STEP + timedelta(seconds=settings.energy_delay_s + 1)
    aggregate_energy(engine, settings, now=now)
    second = {a.quantity: a for a in aggregates(engine, site) if a.start == T0 + STEP}
    assert second["active_power"].flats == settings.energy_min_flats
    assert second["active_power"].total == 100.0 * settings.energy_min_flats
    assert second["energy_import"].total == 5000.0 * (settings.energy_min_flats - 1)


def test_the_energy_endpoint_serves_published_aggregates_only(
        settings: FleetSettings, engine: sa.Engine, client: TestClient, token_for) -> None:  # noqa: ANN001
    site, meters = building(engine, settings, "Westhof", settings.energy_min_flats)
    store = ReadingStore(engine, settings)
    for i, meter in enumerate(meters, 1):
        store.store(meter_uplink(meter, 1, T0 + timedelta(minutes=1), 100.0 * i, 10.0 * i))
    aggregate_energy(engine, settings, now=T0 + STEP + timedelta(seconds=settings.energy_delay_s))
    for role in (Role.admin, Role.operator, Role.technician, Role.platform):
        r = client.get(f"/api/v1/sites/{site}/energy", params={"quantity": "active_power"},
                       headers=token_for(role))
        assert r.status_code == 200, r.text
        [power] = r.json()
        assert power["total"] == sum(100.0 * i for i in range(1, len(meters) + 1))
        assert power["flats"] == len(meters) and power["unit"] == "W"
        assert power["start"].startswith("2026-11-21T12:00:00")
        assert power["end"].startswith("2026-11-21T12:15:00")
        assert not any(m in r.text for m in meters) and "Westhof-" not in r.text
    assert client.get(f"/api/v1/sites/{site}/energy",
                      headers=token_for(Role.gateway)).status_code == 403
    assert client.get("/api/v1/sites/999999/energy",
                      headers=token_for(Role.operator)).status_code == 404


def test_published_aggregates_reach_sensorthings_and_ngsi_ld_and_nothing_of_a_flat(
        sta: SensorThings, ngsi_broker: NgsiLdBroker, settings: FleetSettings,
        engine: sa.Engine) -> None:
    settings = settings.model_copy(update={"sensorthings_url": sta.url,
                                           **ngsi_ld_settings(ngsi_broker.url)})
    big, big_meters = building(engine, settings, "Osthof", settings.energy_min_flats)
    small, small_meters = building(engine, settings, "Kleinhof", settings.energy_min_flats - 1)
    store = ReadingStore(engine, settings)
    for i, meter in enumerate(big_meters + small_meters, 1):
        stored = store.store(meter_uplink(meter, 1, T0 + timedelta(minutes=4), 100.0 * i,
                                          2000.0 * i))
        # A flat's readings are not re-published on the readings topic either.
        assert stored.stored == 2 and stored.new_readings == []
    result = aggregate_energy(engine, settings,
                              now=T0 + STEP + timedelta(seconds=settings.energy_delay_s))
    assert (result.published, result.suppressed) == (2, 2)
    with Session(engine) as session:
        queued = session.exec(select(OutboxItem)).all()
    assert sorted(i.target for i in queued) == ["ngsi-ld-energy"] * 2 + ["sensorthings-energy"] * 2

    assert SensorThingsEnergyForwarder(engine, settings).forward_once().delivered == 2
    assert NgsiLdEnergyForwarder(engine, settings).forward_once().delivered == 2
    power = sum(100.0 * i for i in range(1, len(big_meters) + 1))
    energy = sum(2000.0 * i for i in range(1, len(big_meters) + 1))
    end = T0 + STEP

    with Session(engine) as session:
        link = session.get(PlatformLink, ("sensorthings", f"datastream:site-{big}:active_power"))
    assert link is not None
    observed = httpx.get(f"{sta.url}/Datastreams('{link.remote_id}')/Observations").json()
    assert [(o["result"], datetime.fromisoformat(o["phenomenonTime"])) for o in
            observed["value"]] == [(power, end)]
    datastream = httpx.get(f"{sta.url}/Datastreams('{link.remote_id}')").json()
    assert datastream["unitOfMeasurement"]["symbol"] == "W"

    got = fetch_entity(ngsi_broker, f"urn:ngsi-ld:ThreePhaseAcMeasurement:allmende-site-{big}")
    assert got["type"] == "ThreePhaseAcMeasurement"
    iso_end = end.isoformat().replace("+00:00", "Z")
    assert got["totalActivePower"] == {"type": "Property", "value": power / 1000,
                                       "unitCode": "KWT", "observedAt": iso_end}
    assert got["totalActiveEnergyImport"] == {"type": "Property", "value": energy / 1000,
                                              "unitCode": "KWH", "observedAt": iso_end}
    assert f"allmende-site-{small}" not in json.dumps(ngsi_broker.tenants)

    # Nothing that names a flat or its meter reached either platform.
    everything = json.dumps([r.body for r in ngsi_broker.requests]) + "".join(
        httpx.get(f"{sta.url}/{entity_set}", params={"$top": 1000}).text
        for entity_set in ("Things", "Datastreams", "Sensors", "Observations", "Locations"))
    for meter in big_meters + small_meters:
        assert meter not in everything
    assert "Osthof-" not in everything and "Kleinhof" not in everything


def test_meters_heard_over_mqtt_become_a_building_total_and_stay_off_the_readings_topic(
        broker: Broker, settings: FleetSettings, engine: sa.Engine, token_for) -> None:  # noqa: ANN001
    """The whole path: the codec's energy format, normalized as the gateway does it, published
    as the gateway's `up` message, ingested by the served app, aggregated, served."""
    settings = settings.model_copy(update={"mqtt_port": broker.port})
    site, meters = building(engine, settings, "Mqtthof", settings.energy_min_flats)
    street = "00000000000000A1"
    provision_device(engine, settings, street, latitude=49.87, longitude=8.65)
    time_iso = (T0 + timedelta(minutes=4)).isoformat().replace("+00:00", "Z")

    def gateway_readings(dev: str, fport: int, values: dict) -> list[ReadingIn]:
        text, _count = record(dev_eui=dev, session="01ab-0001", fcnt=1, fport=fport,
                              data=payload.encode(fport, values), time_iso=time_iso,
                              rssi=-70.0, snr=7.0, fw="0.1.0")
        return [ReadingIn.model_validate_json(r) for r in expand(text, json.dumps("gw-a"))]

    sent = [r for i, meter in enumerate(meters, 1) for r in gateway_readings(
        meter, payload.FPORT_ENERGY, {"energy_import": 1000 * i, "power": 100 * i})]
    sent += gateway_readings(street, payload.FPORT_AIR_QUALITY, {"pm25": 9.5})

    topic: list[dict] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    watcher.on_message = lambda _c, _u, m: topic.extend(json.loads(m.payload)["readings"])
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe(settings.readings_topic, qos=1)
    watcher.loop_start()
    app = create_app(settings, engine=engine, ingest_workers=1)
    try:
        with TestClient(app) as client:
            deadline = time.monotonic() + 30
            while not all(w.ready.is_set() for w in app.state.ingest_workers):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            publish_up(broker.port, "gw-a", sent, sent=T0)
            while not topic:  # the one message of the batch's public readings
                assert time.monotonic() < deadline, "nothing on the readings topic"
                time.sleep(0.05)
            aggregate_energy(engine, settings,
                             now=T0 + STEP + timedelta(seconds=settings.energy_delay_s))
            r = client.get(f"/api/v1/sites/{site}/energy", headers=token_for(Role.platform))
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    assert [(x["device"], x["quantity"]) for x in topic] == [(street, "PM2.5")]
    assert {(a["quantity"], a["unit"], a["flats"], a["total"]) for a in r.json()} == {
        ("active_power", "W", len(meters), sum(100.0 * i for i in range(1, len(meters) + 1))),
        ("energy_import", "W.h", len(meters),
         sum(1000.0 * i for i in range(1, len(meters) + 1)))}
