"""Ingest: the gateways' `up` batches from MQTT into the database, once per reading key.

Several workers share one subscription (`$share/<group>/allmende/gw/+/up`) and split the load.
A message is acknowledged to the broker only after its readings are committed; a worker with
a stable client id keeps a broker session, so what it had not acknowledged when it stopped is
delivered to it again when it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import aiomqtt
import sqlalchemy as sa
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    StringConstraints,
    ValidationError,
)
from sqlmodel import Session, col, select

from .db import make_engine
from .forward.smart_data_models import model_of
from .forward.targets import NGSI_LD, reading_targets
from .models import (
    Counter,
    Device,
    DeviceState,
    Event,
    Gateway,
    OutboxItem,
    Reading,
    utcnow,
)
from .settings import FleetSettings

log = logging.getLogger(__name__)

TOPIC_ROOT = "allmende/gw"


class ReadingIn(BaseModel):
    """One normalized reading exactly as docs/internals.md defines it.

    Every check is a declared constraint, none a Python validator: pydantic then validates a
    whole `up` message in its Rust core, which is most of what ingest costs per reading.
    """

    key: str = Field(min_length=1, max_length=200)
    device: Annotated[str, StringConstraints(min_length=1, max_length=16, to_upper=True)]
    kind: str = Field(max_length=40)
    quantity: str = Field(min_length=1, max_length=40)
    value: float = Field(allow_inf_nan=False)  # "Input should be a finite number"
    unit: str = Field(max_length=40)
    time: AwareDatetime  # "Input should have timezone info" (UTC, ...Z)
    fcnt: int = Field(ge=0, le=2**32 - 1)
    session: str = Field(max_length=80)
    gateway: str = Field(max_length=63)
    rssi: float | None = None
    snr: float | None = None
    flags: list[str] = Field(default_factory=list, max_length=32)
    fw: str | None = Field(default=None, max_length=40)


class UpMessage(BaseModel):
    """An `up` message as far as ingest reads it (`sent` and unknown fields are ignored)."""

    gateway: str
    readings: list[ReadingIn]


@dataclass
class BatchResult:
    """What became of the readings of one or more messages."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0  # unknown or decommissioned device
    invalid: int = 0  # not a reading of the contract, or claims another gateway
    new_readings: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: BatchResult) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.invalid += other.invalid


def gateway_of(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[2] if len(parts) == 4 and f"{parts[0]}/{parts[1]}" == TOPIC_ROOT else None


def parse_up(topic_gateway: str, payload: bytes) -> tuple[list[ReadingIn], int]:
    """The valid readings of one `up` message and how many were invalid. Readings claiming
    another gateway than the topic's (which the broker ACL vouches for) are invalid."""
    try:
        # The common case, a well-formed message of valid readings: parsed and validated in
        # one call, without building Python dicts first.
        up = UpMessage.model_validate_json(payload)
    except ValidationError:
        return _parse_up_item_by_item(topic_gateway, payload)
    if up.gateway != topic_gateway:
        return [], max(1, len(up.readings))
    good = [r for r in up.readings if r.gateway == topic_gateway]
    return good, len(up.readings) - len(good)


def _parse_up_item_by_item(topic_gateway: str, payload: bytes) -> tuple[list[ReadingIn], int]:
    """parse_up for a message with something wrong in it: what is valid is kept."""
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return [], 1
    raw = body.get("readings") if isinstance(body, dict) else None
    if not isinstance(raw, list) or body.get("gateway") != topic_gateway:
        return [], max(1, len(raw) if isinstance(raw, list) else 1)
    good = []
    bad = 0
    for item in raw:
        try:
            reading = ReadingIn.model_validate(item)
        except ValidationError:
            bad += 1
            continue
        if reading.gateway != topic_gateway:
            bad += 1
            continue
        good.append(reading)
    return good, bad


def _dialect_insert(session: Session, table: Any) -> Any:
    """INSERT with the backend's ON CONFLICT support (SQLite and PostgreSQL both have it)."""
    from sqlalchemy.dialects import postgresql, sqlite

    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_READING_COLUMNS = ("key", "device", "kind", "quantity", "value", "unit", "time", "fcnt",
                    "session", "gateway", "rssi", "snr", "flags", "fw")


def _insert_readings(session: Session, readings: Sequence[ReadingIn]) -> dict[str, int]:
    """Insert the readings whose key is new; returns {key: id} of those (idempotent by key)."""
    if session.get_bind().dialect.name == "postgresql":
        return _insert_readings_copy(session, readings)
    # executemany of one cached statement (SQLAlchemy batches it into multi-row INSERTs);
    # RETURNING names only the rows that were new. Validated readings: no re-serializing.
    table = Reading.__table__  # type: ignore[attr-defined]
    stmt = _dialect_insert(session, table).on_conflict_do_nothing(
        index_elements=["key"]).returning(table.c.id, table.c.key)
    rows = [r.__dict__ for r in readings]
    return {key: rid for rid, key in session.connection().execute(stmt, rows)}


def _insert_readings_copy(session: Session, readings: Sequence[ReadingIn]) -> dict[str, int]:
    """PostgreSQL: COPY into a session-local staging table, then one INSERT ... SELECT.
    Several times faster than parameterized multi-row INSERTs for large batches."""
    cols = ", ".join(_READING_COLUMNS)
    driver = session.connection().connection.driver_connection
    with driver.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS reading_in (key text, device text, kind text, "
            "quantity text, value double precision, unit text, time timestamptz, fcnt bigint, "
            "session text, gateway text, rssi double precision, snr double precision, "
            "flags json, fw text) ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY reading_in ({cols}) FROM STDIN") as copy:
            write_row = copy.write_row
            for r in readings:  # in _READING_COLUMNS order
                write_row((r.key, r.device, r.kind, r.quantity, r.value, r.unit, r.time, r.fcnt,
                           r.session, r.gateway, r.rssi, r.snr,
                           json.dumps(r.flags) if r.flags else "[]", r.fw))
        cur.execute(f"INSERT INTO reading ({cols}) SELECT {cols} FROM reading_in "
                    "ON CONFLICT (key) DO NOTHING RETURNING id, key")
        inserted = {key: rid for rid, key in cur.fetchall()}
        cur.execute("TRUNCATE reading_in")
    return inserted


_BATTERY = ("battery", "battery_voltage")  # quantity names, lower case
_DEVICE_LIVE = ("last_seen", "rssi", "snr", "firmware_version", "battery", "state")


def _update_device_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Write the devices' live state: on PostgreSQL one UPDATE over unnested arrays, else one
    executemany of one statement."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        driver = session.connection().connection.driver_connection
        with driver.cursor() as cur:  # type: ignore[union-attr]
            cur.execute(
                "UPDATE device AS d SET last_seen = v.last_seen, rssi = v.rssi, snr = v.snr, "
                "firmware_version = v.fw, battery = v.battery, state = v.state FROM ("
                "SELECT unnest(%s::bigint[]) AS id, unnest(%s::timestamptz[]) AS last_seen, "
                "unnest(%s::float8[]) AS rssi, unnest(%s::float8[]) AS snr, "
                "unnest(%s::text[]) AS fw, unnest(%s::float8[]) AS battery, "
                "unnest(%s::text[]) AS state) AS v WHERE d.id = v.id",
                [[r["id"] for r in rows], *([r[c] for r in rows] for c in _DEVICE_LIVE)])
        return
    table = Device.__table__  # type: ignore[attr-defined]
    stmt = sa.update(table).where(table.c.id == sa.bindparam("device_id")).values(
        {c: sa.bindparam(f"new_{c}") for c in _DEVICE_LIVE})
    session.connection().execute(stmt, [
        {"device_id": r["id"], **{f"new_{c}": r[c] for c in _DEVICE_LIVE}} for r in rows])


COUNTER_SHARDS = 8


def bump_counters(session: Session, values: dict[str, int], *, shard: int = 0) -> None:
    """Add to shared counters. Each worker writes its own shard row (`name#shard`), so
    concurrent workers do not queue on one hot row until commit; readers sum the shards."""
    rows = [{"name": f"{k}#{shard % COUNTER_SHARDS}", "value": v}
            for k, v in values.items() if v]
    if not rows:
        return
    stmt = _dialect_insert(session, Counter)
    stmt = stmt.on_conflict_do_update(index_elements=["name"],
                                      set_={"value": Counter.value + stmt.excluded.value})
    session.execute(stmt, rows)


def read_counters(session: Session) -> dict[str, int]:
    """All counters, shards summed, by name."""
    totals: dict[str, int] = {}
    for counter in session.exec(select(Counter)):
        name = counter.name.split("#", 1)[0]
        totals[name] = totals.get(name, 0) + counter.value
    return dict(sorted(totals.items()))


def _open_event(session: Session, *, kind: str, device: str | None = None,
                gateway: str | None = None, message: str, severity: str = "warning") -> None:
    found = session.exec(select(Event).where(Event.kind == kind, Event.device == device,
                                             Event.gateway == gateway,
                                             col(Event.active).is_(True))).first()
    if found is None:
        session.add(Event(kind=kind, device=device, gateway=gateway, message=message,
                          severity=severity))


def _close_events(session: Session, *, kinds: Iterable[str], device: str | None = None,
                  gateway: str | None = None) -> None:
    session.execute(sa.update(Event).where(col(Event.kind).in_(list(kinds)),
                                           col(Event.device) == device,
                                           col(Event.gateway) == gateway,
                                           col(Event.active).is_(True))
                    .values(active=False, resolved_at=utcnow()))


def _forwarded_to(target: str, reading: ReadingIn) -> bool:
    """SensorThings takes every quantity; NGSI-LD those a Smart Data Model carries."""
    return target != NGSI_LD or model_of(reading.kind, reading.quantity) is not None


class ReadingStore:
    """Stores batches of readings idempotently and keeps the devices' live state current."""

    def __init__(self, engine: sa.Engine, settings: FleetSettings, *, shard: int = 0) -> None:
        self.engine = engine
        self.settings = settings
        self.shard = shard
        self.targets = reading_targets(settings)

    def store(self, readings: Sequence[ReadingIn], *, invalid: int = 0) -> BatchResult:
        result = BatchResult(invalid=invalid)
        unique: dict[str, ReadingIn] = {}
        for r in readings:
            if r.key in unique:
                result.duplicates += 1
            else:
                unique[r.key] = r
        with Session(self.engine) as session:
            # Plain rows, not ORM objects: loading hundreds of entities per batch costs more
            # than the insert itself.
            t = Device.__table__.c  # type: ignore[attr-defined]
            query = (sa.select(t.id, t.dev_eui, t.state, t.flat_ref, t.last_seen, t.rssi, t.snr,
                               t.firmware_version, t.battery)
                     .where(t.dev_eui.in_({r.device for r in unique.values()})))
            if session.get_bind().dialect.name == "postgresql":
                # Lock the devices in one order up front: workers sharing devices then wait
                # for each other instead of deadlocking in the later UPDATE.
                query = query.order_by(t.id).with_for_update()
            devices = {d.dev_eui: d for d in session.connection().execute(query)}
            accepted = []
            for r in unique.values():
                device = devices.get(r.device)
                if device is None or device.state == DeviceState.decommissioned:
                    result.rejected += 1
                else:
                    accepted.append(r)
            if accepted:
                inserted = _insert_readings(session, accepted)
                result.stored = len(inserted)
                result.duplicates += len(accepted) - len(inserted)
                new = [r for r in accepted if r.key in inserted]
                # Readings of a flat are personal data: they never leave the fleet one by one.
                public = [r for r in new if not devices[r.device].flat_ref]
                if public and self.targets:
                    session.execute(sa.insert(OutboxItem), [
                        {"target": t, "reading_id": inserted[r.key], "status": "pending",
                         "attempts": 0, "next_attempt": utcnow()}
                        for r in public for t in self.targets if _forwarded_to(t, r)])
                self._update_devices(session, devices, new)
                if self.settings.readings_topic:
                    result.new_readings = [r.model_dump(mode="json") for r in public]
            bump_counters(session, {"readings_stored": result.stored,
                                    "readings_duplicate": result.duplicates,
                                    "readings_rejected": result.rejected,
                                    "readings_invalid": result.invalid}, shard=self.shard)
            session.commit()
        return result

    def _update_devices(self, session: Session, devices: dict[str, Any],
                        new: Sequence[ReadingIn]) -> None:
        """Live state and alerts of the devices heard, in a few statements per batch."""
        if not new:
            return
        heard = {r.device for r in new}
        now = utcnow()
        open_events = {(e.kind, e.device): e for e in session.exec(
            select(Event).where(col(Event.device).in_(heard), col(Event.active).is_(True)))}

        def raise_alert(kind: str, device: str, message: str) -> None:
            if (kind, device) not in open_events:
                event = Event(kind=kind, device=device, message=message)
                session.add(event)
                open_events[(kind, device)] = event

        def clear_alert(kind: str, device: str) -> None:
            event = open_events.pop((kind, device), None)
            if event is not None:
                event.active = False
                event.resolved_at = now
                session.add(event)

        latest: dict[str, ReadingIn] = {}
        battery: dict[str, ReadingIn] = {}
        faulty: dict[str, list[str]] = {}
        is_battery: dict[str, bool] = {}  # by quantity name: a batch has only a few
        # One pass over what can be tens of thousands of readings: plain lookups only.
        for r in new:
            dev = r.device
            seen = latest.get(dev)
            if seen is None or r.time > seen.time:
                latest[dev] = r
            quantity = r.quantity
            if (battery_quantity := is_battery.get(quantity)) is None:
                battery_quantity = is_battery[quantity] = quantity.lower() in _BATTERY
            if battery_quantity and ((b := battery.get(dev)) is None or r.time >= b.time):
                battery[dev] = r
            if r.flags:
                faulty.setdefault(dev, []).append(f"{quantity}: {', '.join(r.flags)}")

        updates: list[dict[str, Any]] = []
        for dev_eui, r in latest.items():
            device = devices[dev_eui]
            # Every column, changed or not: one uniform statement for the whole batch.
            change: dict[str, Any] = {
                "id": device.id, "last_seen": device.last_seen, "rssi": device.rssi,
                "snr": device.snr, "firmware_version": device.firmware_version,
                "battery": device.battery, "state": device.state}
            if device.last_seen is None or r.time >= device.last_seen:
                change.update(last_seen=r.time, rssi=r.rssi, snr=r.snr)
                if r.fw:
                    change["firmware_version"] = r.fw
                if dev_eui not in faulty:
                    clear_alert("sensor_fault", dev_eui)
            if device.state == DeviceState.provisioned:
                change["state"] = DeviceState.active.value
            if dev_eui in battery:
                b = battery[dev_eui]
                change["battery"] = b.value
                if b.value < self.settings.low_battery_v:
                    raise_alert("low_battery", dev_eui, f"battery at {b.value} {b.unit}")
                else:
                    clear_alert("low_battery", dev_eui)
            if dev_eui in faulty:
                raise_alert("sensor_fault", dev_eui, "; ".join(faulty[dev_eui])[:500])
            clear_alert("device_offline", dev_eui)
            updates.append(change)
        _update_device_rows(session, updates)

    def gateway_status(self, gateway_id: str, payload: bytes) -> None:
        """A gateway's retained status (its last will says offline)."""
        try:
            body = json.loads(payload)
            state = body["state"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            return
        if state not in ("online", "offline"):
            return
        with Session(self.engine) as session:
            gateway = session.get(Gateway, gateway_id)
            if gateway is None:
                return
            gateway.state = state
            if state == "online":
                gateway.last_seen = utcnow()
                _close_events(session, kinds=["gateway_offline"], gateway=gateway_id)
            else:
                _open_event(session, kind="gateway_offline", gateway=gateway_id,
                            message=f"gateway {gateway_id} went offline", severity="critical")
            session.add(gateway)
            session.commit()

    def gateway_stats(self, gateway_id: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        if not isinstance(body, dict):
            return
        with Session(self.engine) as session:
            gateway = session.get(Gateway, gateway_id)
            if gateway is not None:
                gateway.stats = body
                gateway.last_seen = utcnow()
                session.add(gateway)
                session.commit()


# Python's default is 700. A batch keeps tens of thousands of readings (a few objects each)
# alive until its commit; at 700 the cycle collector ran ~800 times per 100,000 readings and
# its full passes walked every live object: a third of a worker's CPU in profiles, for
# nothing, since readings hold no reference cycles and reference counting frees them.
_GC_FIRST_GENERATION_THRESHOLD = 20_000


def _collect_cycles_less_often() -> None:
    """Raise the cycle collector's first threshold for this process (never lower it). It
    applies to the whole process, which only makes cycle collection less frequent."""
    first, second, third = gc.get_threshold()
    if 0 < first < _GC_FIRST_GENERATION_THRESHOLD:
        gc.set_threshold(_GC_FIRST_GENERATION_THRESHOLD, second, third)


@dataclass
class _ParsedBatch:
    """The valid readings of a batch's `up` messages and how many were invalid."""

    readings: list[ReadingIn] = field(default_factory=list)
    invalid: int = 0


class IngestWorker:
    """One MQTT consumer in the shared-subscription group; start several to split the load.

    `await worker.run()` runs until cancelled; `ready` is set once it is subscribed.
    """

    def __init__(self, settings: FleetSettings, *, engine: sa.Engine | None = None,
                 client_id: str | None = None) -> None:
        self.settings = settings
        # Workers of one process differ by client id; of different processes, by pid.
        shard = zlib.crc32(f"{client_id}/{os.getpid()}/{id(self)}".encode())
        self.store = ReadingStore(engine or make_engine(settings.database_url), settings,
                                  shard=shard)
        self.client_id = client_id
        self.totals = BatchResult()
        self.messages = 0
        self.store_failures = 0  # database errors while storing (the batch is retried)
        self.ready = asyncio.Event()

    @property
    def up_filter(self) -> str:
        """The shared subscription of the worker group; a plain one when the group is empty
        (for brokers without MQTT 5 shared subscriptions, such as the embedded amqtt)."""
        plain = f"{TOPIC_ROOT}/+/up"
        group = self.settings.ingest_group
        return f"$share/{group}/{plain}" if group else plain

    async def run(self) -> None:
        """Consume until cancelled, reconnecting when the broker goes away."""
        _collect_cycles_less_often()
        delay = 0.5
        while True:
            try:
                await self._run_once()
            except aiomqtt.MqttError as exc:
                self.ready.clear()
                log.warning("ingest lost the broker (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    async def _run_once(self) -> None:
        s = self.settings
        # A worker with a stable client id keeps its session on the broker: messages it had
        # not acknowledged when it stopped are handed to it again when it comes back.
        shared = bool(s.ingest_group)
        options: dict[str, Any] = {}
        if shared:
            properties = None
            if self.client_id:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = s.ingest_session_expiry_s
            options.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=not self.client_id,
                           properties=properties)
        else:  # a broker without shared subscriptions speaks MQTT 3.1.1 (amqtt)
            options.update(protocol=aiomqtt.ProtocolVersion.V311,
                           clean_session=not self.client_id)
        client = aiomqtt.Client(s.mqtt_host, s.mqtt_port, username=s.mqtt_username,
                                password=s.mqtt_password, identifier=self.client_id,
                                max_queued_incoming_messages=0, **options)
        # Acknowledge only after the commit (aiomqtt has no switch for it; paho has).
        client._client.manual_ack_set(True)  # noqa: SLF001
        async with client:
            await client.subscribe(self.up_filter, qos=1)
            # Status is retained, and the broker hands retained messages only to plain
            # subscriptions: every worker keeps gateway state (idempotent).
            await client.subscribe(f"{TOPIC_ROOT}/+/status", qos=1)
            stats = f"{TOPIC_ROOT}/+/stats"
            await client.subscribe(f"$share/{s.ingest_group}/{stats}" if shared else stats, qos=0)
            self.ready.set()
            messages = client.messages
            # One batch is committed (in a thread) while the next one is received and parsed
            # on the event loop: the database's time overlaps with the worker's own. Commits
            # stay one at a time and in order, and a batch is acknowledged after its commit.
            committing: asyncio.Task[None] | None = None
            try:
                async for message in messages:
                    batch = [message]
                    # Drain what is already queued into one transaction, without waiting.
                    while len(messages) and len(batch) < s.ingest_batch_size:
                        batch.append(await anext(messages))
                    parsed = self._parse(batch)
                    if committing is not None:
                        await committing
                    committing = asyncio.create_task(self._commit(client, batch, parsed))
            finally:
                if committing is not None:
                    # Stopped or disconnected with a batch not yet acknowledged: the broker
                    # hands it out again, and storing it twice is idempotent. A commit that
                    # had failed raises its error here.
                    committing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await committing

    def _parse(self, batch: list[aiomqtt.Message]) -> _ParsedBatch:
        """The readings of a batch's `up` messages (CPU only, no I/O)."""
        parsed = _ParsedBatch()
        for message in batch:
            topic = message.topic.value
            gateway_id = gateway_of(topic)
            if gateway_id is None or not topic.endswith("/up"):
                continue
            payload = message.payload if isinstance(message.payload, bytes) else b""
            good, bad = parse_up(gateway_id, payload)
            parsed.readings.extend(good)
            parsed.invalid += bad
        return parsed

    async def _commit(self, client: aiomqtt.Client, batch: list[aiomqtt.Message],
                      parsed: _ParsedBatch) -> None:
        """Store a parsed batch, then acknowledge its messages."""
        try:
            await self._store_and_ack(client, batch, parsed)
        except aiomqtt.MqttError as exc:
            # The broker went away after the commit: the worker reconnects, and what it had
            # not acknowledged comes again (stored once, by key).
            log.warning("ingest lost the broker after storing a batch of %d messages (%s); "
                        "reconnecting", len(batch), exc)
            raise
        except Exception:
            # Said at once: the worker's loop raises it only when the next batch comes.
            log.exception("ingest stopped: storing a batch of %d messages failed", len(batch))
            raise

    async def _store_and_ack(self, client: aiomqtt.Client, batch: list[aiomqtt.Message],
                             parsed: _ParsedBatch) -> None:
        for message in batch:
            topic = message.topic.value
            gateway_id = gateway_of(topic)
            if gateway_id is None:
                continue
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if topic.endswith("/status"):
                await asyncio.to_thread(self.store.gateway_status, gateway_id, payload)
            elif topic.endswith("/stats"):
                await asyncio.to_thread(self.store.gateway_stats, gateway_id, payload)
        if parsed.readings or parsed.invalid:
            result = await self._store_with_retry(parsed.readings, parsed.invalid)
            self.totals.add(result)
            if result.new_readings and self.settings.readings_topic:
                await client.publish(self.settings.readings_topic,
                                     json.dumps({"readings": result.new_readings}), qos=1)
        for message in batch:
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)  # noqa: SLF001
        self.messages += len(batch)

    async def _store_with_retry(self, readings: list[ReadingIn], invalid: int) -> BatchResult:
        delay = 0.5
        while True:
            try:
                return await asyncio.to_thread(self.store.store, readings, invalid=invalid)
            except sa.exc.OperationalError as exc:
                # Database away: hold the batch (unacknowledged) and try again.
                self.store_failures += 1
                log.warning("storing %d readings failed, retrying in %.1fs: %s",
                            len(readings), delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
