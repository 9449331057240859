"""MQTT forwarder: outbox records -> batched `up` messages, QoS 1, deleted only after PUBACK.

Topics (docs/internals.md): `<prefix>/<gateway>/up`, `/status` (retained, last will
"offline"), `/stats`, and `/down` (subscribed). After every (re)connection the forwarder
starts again from the oldest record still in the outbox, so a message whose PUBACK was lost
is sent again (the fleet drops the repeat by idempotency key) and per-device order holds.
Live readings queue behind the backlog in that same order; the backlog goes at full speed
in bounded steps, so ingest on the same event loop keeps its pace meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiomqtt

from .config import MqttConfig
from .metrics import Metrics
from .readings import TimeFormatter, expand
from .store import Store

log = logging.getLogger("allmende.gateway.forwarder")


class Forwarder:
    def __init__(
        self,
        config: MqttConfig,
        *,
        gateway_id: str,
        store: Store,
        metrics: Metrics,
        on_down: Callable[[dict[str, Any]], None],
        stats: Callable[[], dict[str, Any]],
    ) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.store = store
        self.metrics = metrics
        self.on_down = on_down
        self.stats = stats
        base = f"{config.topic_prefix.rstrip('/')}/{gateway_id}"
        self.topic_up = f"{base}/up"
        self.topic_status = f"{base}/status"
        self.topic_stats = f"{base}/stats"
        self.topic_down = f"{base}/down"
        self._gateway_json = json.dumps(gateway_id)
        self._time = TimeFormatter()
        self._client: aiomqtt.Client | None = None
        self.forwarded_total = 0

    def _status(self, state: str) -> bytes:
        return json.dumps(
            {"gateway": self.gateway_id, "state": state, "time": self._time(time.time())}
        ).encode()

    def _client_args(self) -> dict[str, Any]:
        c = self.config
        args: dict[str, Any] = {
            "hostname": c.host,
            "port": c.port,
            "identifier": c.client_id or f"allmende-gw-{self.gateway_id}",
            "keepalive": c.keepalive,
            "will": aiomqtt.Will(self.topic_status, self._status("offline"), qos=1, retain=True),
            "timeout": 10,
            "max_inflight_messages": max(20, c.max_in_flight * 2),
        }
        if c.username is not None:
            args["username"] = c.username
            args["password"] = c.password
        if c.tls:
            context = ssl.create_default_context(cafile=c.ca_file)
            if c.cert_file:
                context.load_cert_chain(c.cert_file, c.key_file)
            args["tls_context"] = context
        return args

    async def run(self) -> None:
        """Connects, forwards, and reconnects with exponential backoff (with jitter) forever."""
        delay = self.config.reconnect_min_s
        while True:
            try:
                async with aiomqtt.Client(**self._client_args()) as client:
                    self._client = client
                    self.metrics.mqtt_connected.set(1)
                    self.metrics.mqtt_connects.inc()
                    log.info(
                        "mqtt_connected",
                        extra={"fields": {"host": self.config.host, "port": self.config.port}},
                    )
                    delay = self.config.reconnect_min_s
                    await client.publish(
                        self.topic_status, self._status("online"), qos=1, retain=True
                    )
                    await client.subscribe(self.topic_down, qos=1)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._pump(client, tg))
                        tg.create_task(self._receive(client))
                        tg.create_task(self._publish_stats(client))
            except* (aiomqtt.MqttError, OSError) as group:
                exc = group.exceptions[0]
                log.warning(
                    "mqtt_disconnected",
                    extra={
                        "fields": {
                            "error": str(exc) or type(exc).__name__,
                            "retry_in_s": round(delay, 2),
                        }
                    },
                )
            finally:
                self._client = None
                self.metrics.mqtt_connected.set(0)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(self.config.reconnect_max_s, delay * 2)

    async def stop(self) -> None:
        """Marks the gateway offline (retained) before a clean disconnect (no last will then)."""
        client = self._client
        if client is not None:
            try:
                await asyncio.wait_for(
                    client.publish(self.topic_status, self._status("offline"), qos=1, retain=True),
                    2,
                )
            except (aiomqtt.MqttError, TimeoutError, OSError):
                pass

    async def _pump(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        in_flight = asyncio.Semaphore(max(1, self.config.max_in_flight))
        cursor = 0  # the oldest record still in the outbox comes first after a (re)connect
        fetch_rows = max(64, self.config.batch_max_readings)
        while True:
            self.store.new_records.clear()
            records = await self.store.fetch(cursor, fetch_rows)
            if not records:
                try:
                    await asyncio.wait_for(self.store.new_records.wait(), 1.0)
                except TimeoutError:
                    pass
                continue
            cursor = records[-1].id
            ids: list[int] = []
            parts: list[str] = []
            size = 0
            for record in records:
                readings = expand(record.body, self._gateway_json)
                extra = sum(len(r) + 1 for r in readings)
                if parts and (
                    len(parts) + len(readings) > self.config.batch_max_readings
                    or size + extra > self.config.batch_max_bytes
                ):
                    await in_flight.acquire()
                    tg.create_task(self._publish(client, ids, parts, in_flight))
                    ids, parts, size = [], [], 0
                ids.append(record.id)
                parts.extend(readings)
                size += extra
            if ids:
                await in_flight.acquire()
                tg.create_task(self._publish(client, ids, parts, in_flight))

    async def _publish(
        self, client: aiomqtt.Client, ids: list[int], parts: list[str], slot: asyncio.Semaphore
    ) -> None:
        try:
            body = (
                f'{{"gateway":{self._gateway_json},"sent":"{self._time(time.time())}","readings":['
                + ",".join(parts)
                + "]}"
            )
            await client.publish(self.topic_up, body.encode(), qos=1)  # returns on PUBACK
        finally:
            slot.release()
        self.store.ack(ids)
        self.forwarded_total += len(parts)
        self.metrics.readings_forwarded.inc(len(parts))

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                body = json.loads(message.payload)  # type: ignore[arg-type]
                if not isinstance(body, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, TypeError) as exc:
                log.warning("down_message_invalid", extra={"fields": {"error": str(exc)[:200]}})
                continue
            self.on_down(body)

    async def _publish_stats(self, client: aiomqtt.Client) -> None:
        while True:
            await client.publish(self.topic_stats, json.dumps(self.stats()).encode(), qos=0)
            await asyncio.sleep(self.config.stats_interval_s)
