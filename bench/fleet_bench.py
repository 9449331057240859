"""Fleet benchmark: MQTT ingest throughput and API latency, on SQLite and PostgreSQL.

    .venv/bin/python bench/fleet_bench.py                 # defaults (a few minutes)
    .venv/bin/python bench/fleet_bench.py --readings 200000 --devices 10000 --stored 10000000

Starts its own Mosquitto and PostgreSQL (tests/fixtures/services.py) and prints figures;
it asserts nothing. Ingest: gateways publish `up` batches (QoS 1) while 1 or 2 worker
processes share the subscription; readings/s = readings stored / (last commit - first publish).
Latency: a uvicorn-served fleet with N devices and M stored readings, p50/p99 over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from allmende.fleet.db import make_engine, migrate  # noqa: E402
from allmende.fleet.settings import FleetSettings  # noqa: E402

from tests.fixtures.services import free_port, run_mosquitto, run_postgres  # noqa: E402

T0 = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
TOKEN = "alm_bench-admin"


def _worker(settings_json: str, index: int) -> None:
    from allmende.fleet.ingest import IngestWorker

    logging.basicConfig(level=logging.WARNING, format=f"worker {index}: %(message)s")
    settings = FleetSettings.model_validate_json(settings_json)
    worker = IngestWorker(settings, client_id=f"bench-worker-{index}")
    asyncio.run(worker.run())


def _devices_sql(engine: sa.Engine, count: int, *, gateway: str = "gw-0") -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO gateway (gateway_id, name, state, mqtt_password_hash, "
                             "created_at) VALUES (:g, :g, 'unknown', '', :now)"),
                     {"g": gateway, "now": now if engine.dialect.name != "sqlite"
                      else now.replace(tzinfo=None)})
        rows = [{"dev": f"{i:016X}", "gw": gateway, "tags": "[]",
                 "now": now if engine.dialect.name != "sqlite" else now.replace(tzinfo=None)}
                for i in range(1, count + 1)]
        conn.execute(sa.text(
            "INSERT INTO device (dev_eui, name, kind, home_gateway_id, tags, state, created_at) "
            "VALUES (:dev, :dev, 'air_quality', :gw, :tags, 'active', :now)"), rows)


def _stored(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM reading")).scalar_one())


def _stored_counter(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT coalesce(sum(value), 0) FROM counter WHERE name LIKE 'readings_stored#%'"
        )).scalar_one())


def _up_messages(readings: int, *, per_message: int, devices: int) -> list[bytes]:
    """The gateways' `up` messages, as a gateway sends them: uplinks of one device, five
    quantities each."""
    quantities = (("PM2.5", "ug/m3", 12.5), ("PM10", "ug/m3", 20.1),
                  ("air_temperature", "Cel", 21.3), ("relative_humidity", "%", 45.5),
                  ("battery_voltage", "V", 3.9))
    out = []
    for m in range(readings // per_message):
        batch = []
        for k in range(per_message):
            n = m * per_message + k
            uplink = n // len(quantities)
            quantity, unit, value = quantities[n % len(quantities)]
            dev = f"{(uplink % devices) + 1:016X}"
            t = (T0 + timedelta(seconds=uplink)).isoformat().replace("+00:00", "Z")
            batch.append({"key": f"{dev}/bench/{uplink}/{quantity}", "device": dev,
                          "kind": "air_quality", "quantity": quantity, "value": value,
                          "unit": unit, "time": t, "fcnt": uplink, "session": "bench",
                          "gateway": "gw-0", "rssi": -70.0, "snr": 7.5, "flags": [],
                          "fw": "0.1.0"})
        out.append(json.dumps({"gateway": "gw-0", "sent": t, "readings": batch}).encode())
    return out


def bench_ingest(database_url: str, broker_port: int, *, workers: int, readings: int,
                 per_message: int = 100, devices: int = 1000) -> float:
    engine = make_engine(database_url)
    migrate(engine)
    _devices_sql(engine, devices)
    settings = FleetSettings(database_url=database_url, mqtt_port=broker_port,
                             ingest_group=f"bench{time.monotonic_ns()}", readings_topic="")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(settings.model_dump_json(), i), daemon=True)
             for i in range(workers)]
    for p in procs:
        p.start()
    time.sleep(3)  # let the workers subscribe (no figure depends on this)
    # The gateways' messages are built and serialized before the clock starts: a real gateway
    # does that on its own machine, and here it would take CPU from the fleet being measured.
    payloads = _up_messages(readings, per_message=per_message, devices=devices)
    total = len(payloads) * per_message
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    start = time.perf_counter()
    infos = [client.publish("allmende/gw/gw-0/up", p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(120)
    # Progress from the stored-readings counter (bumped in the same commit as the readings):
    # polling count(*) over the growing table would load the database being measured.
    last, last_change = -1, time.monotonic()
    while (stored := _stored_counter(engine)) < total:
        if stored != last:
            last, last_change = stored, time.monotonic()
        elif time.monotonic() - last_change > 60:
            raise RuntimeError(f"ingest stalled at {stored} of {total} readings")
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    client.loop_stop()
    client.disconnect()
    for p in procs:
        p.terminate()
        p.join(10)
    if (in_table := _stored(engine)) != total:
        raise RuntimeError(f"counter says {total} readings stored, the table holds {in_table}")
    engine.dispose()
    return total / elapsed


def _fill_readings(engine: sa.Engine, count: int, devices: int) -> None:
    """Server-side generation: count readings spread over the devices, one per minute each."""
    cols = ("key, device, kind, quantity, value, unit, time, fcnt, session, gateway, rssi, snr, "
            "flags, fw")
    if engine.dialect.name == "postgresql":
        sql = (f"INSERT INTO reading ({cols}) SELECT 'k' || n, lpad(upper(to_hex(n % :d + 1)), "
               "16, '0'), 'air_quality', 'PM2.5', (n % 500) / 10.0, 'ug/m3', "
               "timestamptz '2026-01-01 00:00:00+00' + (n / :d) * interval '1 minute', n, 's', "
               "'gw-0', -70, 7.5, '[]', '0.1.0' FROM generate_series(0, :c - 1) AS n")
    else:
        sql = (f"WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq "
               f"WHERE n < :c - 1) INSERT INTO reading ({cols}) SELECT 'k' || n, "
               "printf('%016X', n % :d + 1), 'air_quality', 'PM2.5', (n % 500) / 10.0, "
               "'ug/m3', datetime('2026-01-01 00:00:00', '+' || (n / :d) || ' minutes'), n, "
               "'s', 'gw-0', -70, 7.5, '[]', '0.1.0' FROM seq")
    with engine.begin() as conn:
        conn.execute(sa.text(sql), {"c": count, "d": devices})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE reading"))
    else:
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))


def _percentiles(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100)
    return q[49] * 1000, q[98] * 1000


def bench_latency(database_url: str, *, devices: int, stored: int,
                  requests: int = 300) -> dict[str, tuple[float, float]]:
    import uvicorn
    from allmende.fleet.app import create_app

    engine = make_engine(database_url)
    migrate(engine)
    _devices_sql(engine, devices)
    t = time.perf_counter()
    _fill_readings(engine, stored, devices)
    print(f"    loaded {stored:,} readings in {time.perf_counter() - t:.0f}s", flush=True)
    app = create_app(FleetSettings(database_url=database_url, admin_token=TOKEN,
                                   secret_key="bench-secret-key-0123",
                                   pseudonym_key="bench-pseudonym-key-0123"), engine=engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    out = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                      headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        queries = {
            "device list (100 of them)": lambda i: ("/api/v1/devices",
                                                    {"offset": (i * 100) % devices,
                                                     "limit": 100}),
            "readings of one device, 1 day": lambda i: ("/api/v1/readings", {
                "device": f"{(i * 7919) % devices + 1:016X}", "start": "2026-01-01T00:00:00Z",
                "end": "2026-01-02T00:00:00Z", "limit": 100}),
        }
        for name, make in queries.items():
            for i in range(20):  # warm up
                http.get(make(i)[0], params=make(i)[1]).raise_for_status()
            samples = []
            for i in range(requests):
                path, params = make(i)
                t = time.perf_counter()
                http.get(path, params=params).raise_for_status()
                samples.append(time.perf_counter() - t)
            out[name] = _percentiles(samples)
    server.should_exit = True
    thread.join(10)
    engine.dispose()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=100_000, help="ingested per run")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--stored", type=int, default=1_000_000,
                        help="readings in the database for the latency runs (issue: 10M)")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--workers", default="1,2",
                        help="ingest worker counts to run, comma-separated (default 1,2)")
    parser.add_argument("--durable", action="store_true",
                        help="PostgreSQL with fsync and synchronous_commit on, as in production "
                             "(default: off, like the test suite's throwaway cluster)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    backends = [b for b in ("sqlite", "postgres") if args.only in (None, b)]
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp, \
            run_mosquitto(Path(tmp) / "mqtt", config_lines=[
                "allow_anonymous true", "max_inflight_messages 200",
                "max_queued_messages 100000"]) as broker, run_postgres(durable=args.durable) as pg:
        base = pg.url.rsplit("/", 1)[0]
        admin = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
        n = 0

        def fresh(backend: str) -> str:
            nonlocal n
            n += 1
            if backend == "sqlite":
                return f"sqlite:///{tmp}/bench{n}.db"
            with admin.connect() as conn:
                conn.execute(sa.text(f"CREATE DATABASE bench{n}"))
            return f"{base}/bench{n}"

        if not args.skip_ingest:
            print(f"ingest: {args.readings:,} readings (uplinks of 5 quantities) in messages of "
                  "100, QoS 1, 1000 devices; PostgreSQL "
                  + ("durable (fsync, synchronous_commit on)" if args.durable else
                     "with fsync and synchronous_commit off"))
        for backend in backends if not args.skip_ingest else []:
            for workers in [int(w) for w in args.workers.split(",")]:
                rate = bench_ingest(fresh(backend), broker.port, workers=workers,
                                    readings=args.readings)
                print(f"  {backend:8} {workers} worker{'s' if workers > 1 else ' '}: "
                      f"{rate:10,.0f} readings/s", flush=True)
        if not args.skip_latency:
            print(f"API latency over HTTP: {args.devices:,} devices, {args.stored:,} readings")
            for backend in backends:
                for name, (p50, p99) in bench_latency(fresh(backend), devices=args.devices,
                                                      stored=args.stored).items():
                    print(f"  {backend:8} {name:32} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
