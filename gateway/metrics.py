"""Prometheus metrics of one gateway process, in a registry of its own (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import Counter as _CounterType

P = "allmende_gateway_"

# Fields of a GWMP `stat` object exported per packet forwarder.
STAT_FIELDS = ("rxnb", "rxok", "rxfw", "ackr", "dwnb", "txnb")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.datagrams = Counter(
            P + "datagrams_total", "GWMP datagrams received, by kind", ["kind"], registry=r
        )
        self.uplinks = Counter(
            P + "uplinks_total",
            "Uplinks accepted (first copy), by message type and ingress path",
            ["type", "path"],
            registry=r,
        )
        self.duplicates = Counter(
            P + "duplicate_copies_total",
            "Further copies of an accepted frame (another receiver)",
            registry=r,
        )
        self.rejects = Counter(
            P + "rejects_total",
            "Datagrams, frames and payloads rejected, by reason",
            ["reason"],
            registry=r,
        )
        self.fleet_syncs = Counter(
            P + "fleet_syncs_total",
            "Device-list syncs with the fleet, by result (ok or the failure reason)",
            ["result"],
            registry=r,
        )
        self.readings_committed = Counter(
            P + "readings_committed_total", "Readings committed to the outbox", registry=r
        )
        self.readings_forwarded = Counter(
            P + "readings_forwarded_total",
            "Readings acknowledged by the MQTT broker (PUBACK)",
            registry=r,
        )
        self.forward_rate = Gauge(
            P + "forward_rate_readings_per_second",
            "Readings/s acknowledged by the broker, last 10 s",
            registry=r,
        )
        self.outbox_depth = Gauge(
            P + "outbox_depth_readings", "Readings in the outbox, not yet acknowledged", registry=r
        )
        self.outbox_pending = Gauge(
            P + "outbox_uncommitted_readings", "Readings received, not yet committed", registry=r
        )
        self.outbox_oldest_age = Gauge(
            P + "outbox_oldest_unsent_age_seconds", "Age of the oldest unsent reading", registry=r
        )
        self.outbox_evicted = Counter(
            P + "outbox_evicted_readings_total",
            "Readings evicted (outbox full, oldest first)",
            registry=r,
        )
        self.outbox_errors = Counter(
            P + "outbox_write_errors_total",
            "Outbox transactions that failed, by reason",
            ["reason"],
            registry=r,
        )
        self.receive_to_commit = Histogram(
            P + "receive_to_commit_seconds",
            "Per commit: time from the oldest reading's arrival to its commit",
            # Fine steps around the 100 ms budget, so the bounds say something.
            buckets=(
                0.005,
                0.01,
                0.015,
                0.02,
                0.025,
                0.03,
                0.04,
                0.05,
                0.06,
                0.07,
                0.08,
                0.09,
                0.1,
                0.125,
                0.15,
                0.2,
                0.3,
                0.5,
                1,
                2,
                5,
            ),
            registry=r,
        )
        self.commit_duration = Histogram(
            P + "outbox_transaction_seconds",
            "Duration of one outbox transaction (SQLite work and fsync)",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2),
            registry=r,
        )
        self.receive_to_commit_max = Gauge(
            P + "receive_to_commit_max_seconds",
            "Largest receive-to-commit time since start",
            registry=r,
        )
        self.receive_to_commit_recent_max = Gauge(
            P + "receive_to_commit_recent_max_seconds",
            "Largest receive-to-commit time of the last 10 s",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            P + "mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.mqtt_connects = Counter(
            P + "mqtt_connects_total", "Successful MQTT connections", registry=r
        )
        self.joins = Counter(
            P + "joins_total", "Join-requests accepted (join-accept built)", registry=r
        )
        self.downlinks = Counter(
            P + "downlinks_total", "Downlinks, by outcome", ["result"], registry=r
        )
        self.forwarder_stat = Gauge(
            P + "forwarder_stat",
            "Last GWMP stat value of a packet forwarder",
            ["forwarder", "field"],
            registry=r,
        )
        self.forwarder_last_seen = Gauge(
            P + "forwarder_last_seen_seconds",
            "Unix time of the last datagram from a forwarder",
            ["forwarder"],
            registry=r,
        )
        self.udp_receive_drops = Counter(
            P + "udp_receive_drops_total",
            "Datagrams the kernel dropped because the GWMP socket's receive buffer was full",
            registry=r,
        )
        self.udp_send_errors = Counter(
            P + "udp_send_errors_total",
            "ACKs and downlinks the UDP socket could not send",
            ["error"],
            registry=r,
        )
        self.serial_lines = Counter(
            P + "serial_lines_total",
            "Lines from serial LoRa bridges, by verb",
            ["verb"],
            registry=r,
        )
        self.devices = Gauge(P + "devices", "Devices in the device list", registry=r)
        self.device_reload_errors = Counter(
            P + "device_list_errors_total", "Device file loads that failed", registry=r
        )
        self._children: dict[tuple[int, tuple[str, ...]], _CounterType] = {}

    def inc(self, counter: Counter, *labels: str, amount: float = 1) -> None:
        """counter.labels(*labels).inc() with the child cached (the label lookup is slow)."""
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc(amount)

    def reject(self, reason: str) -> None:
        self.inc(self.rejects, reason)

    def serve(self, listen: str) -> object:
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(
            int(port), addr=host.strip("[]") or "0.0.0.0", registry=self.registry
        )
        return server
