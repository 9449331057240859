"""The gateway daemon: wires ingress, network server, outbox and forwarder on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import deque
from typing import Any

from . import fleet_sync
from . import network as net
from .config import GatewayConfig
from .devices import DeviceFile, DeviceListError
from .downlink import DownlinkScheduler
from .forwarder import Forwarder
from .metrics import Metrics
from .outbox import Outbox, OutboxError
from .readings import PayloadError, TimeFormatter, record
from .store import Backpressure, Store
from .udp import GwmpServer

log = logging.getLogger("allmende.gateway")


class StartupError(Exception):
    """The gateway cannot start (bad device file, unusable outbox, port in use); the message
    says what to fix."""


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.network = net.NetworkServer(config.network)
        self.scheduler = DownlinkScheduler(config.network, self.metrics)
        self.outbox = Outbox(
            config.outbox_path,
            max_readings=config.outbox.max_readings,
            synchronous=config.outbox.synchronous,
            max_db_pages=config.outbox.max_db_pages,
        )
        self.store = Store(
            self.outbox,
            self.metrics,
            commit_interval_s=config.outbox.commit_interval_ms / 1000.0,
            max_pending_readings=config.outbox.max_pending_readings,
        )
        self.device_file = DeviceFile(config.devices_file)
        self.forwarder: Forwarder | None = None
        self.udp: GwmpServer | None = None
        self.serial_modems: list[Any] = []
        self._time = TimeFormatter()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: Any = None
        self._rate_window: deque[tuple[float, int]] = deque()
        self._kernel_drops = 0  # the socket's drop count when last looked at
        self._drops_unlogged = 0
        self._drops_logged_at = 0.0
        self.started = time.time()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            sessions, nonces = await self.store.open()
        except OutboxError as exc:
            raise StartupError(f"cannot open the outbox {self.config.outbox_path}: {exc}") from None
        self.network.restore([net.Session.from_snapshot(row) for row in sessions], nonces)
        if self.config.fleet is not None:
            await self._first_fleet_sync()
        try:
            self._install_devices(self.device_file.load())
        except DeviceListError as exc:
            raise StartupError(f"device list: {exc}") from None
        log.info(
            "outbox_opened",
            extra={
                "fields": {
                    "path": str(self.config.outbox_path),
                    "readings": self.outbox.depth_readings,
                    "sessions": len(sessions),
                }
            },
        )
        if self.config.metrics.listen:
            try:
                self._http = self.metrics.serve(self.config.metrics.listen)
            except OSError as exc:
                raise StartupError(
                    f"metrics listen {self.config.metrics.listen}: {exc.strerror}"
                ) from None
        if self.config.udp is not None:
            server = self.udp = GwmpServer(
                on_reception=self.on_reception,
                metrics=self.metrics,
                scheduler=self.scheduler,
                max_datagram=self.config.udp.max_datagram,
            )
            try:
                server.open(
                    loop,
                    self.config.udp.host,
                    self.config.udp.port,
                    receive_buffer=self.config.udp.receive_buffer,
                )
            except OSError as exc:
                raise StartupError(f"udp listen {self.config.udp.listen}: {exc.strerror}") from None
            log.info("udp_listening", extra={"fields": {"listen": self.config.udp.listen}})
        for serial_config in self.config.serial:
            from .serial_modem import SerialModem

            modem = SerialModem(
                serial_config,
                on_reception=self.on_reception,
                scheduler=self.scheduler,
                metrics=self.metrics,
            )
            modem.start(loop)
            self.serial_modems.append(modem)
        if self.config.mqtt is not None:
            self.forwarder = Forwarder(
                self.config.mqtt,
                gateway_id=self.config.gateway_id,
                store=self.store,
                metrics=self.metrics,
                on_down=self.on_down,
                stats=self.stats,
            )
            self._tasks.append(asyncio.create_task(self.forwarder.run(), name="forwarder"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        if self.config.fleet is not None:
            fleet = self.config.fleet
            self._tasks.append(asyncio.create_task(fleet_sync.keep_in_sync(
                url=fleet.url, gateway_id=self.config.gateway_id, token=fleet.read_token(),
                devices_file=self.config.devices_file, interval_s=fleet.interval_s,
                on_change=lambda: self.reload_devices("fleet"),
                on_error=lambda reason: self.metrics.fleet_syncs.labels(reason).inc(),
            ), name="fleet-sync"))

    async def _first_fleet_sync(self) -> None:
        """Before the first device load: a fresh gateway has no cached list yet."""
        fleet = self.config.fleet
        assert fleet is not None
        try:
            result = await asyncio.to_thread(
                fleet_sync.sync_once, fleet.url, self.config.gateway_id, fleet.read_token(),
                self.config.devices_file,
            )
            self.metrics.fleet_syncs.labels("ok").inc()
            log.info("fleet_sync", extra={"fields": {"devices": result.devices}})
        except (fleet_sync.FleetSyncError, OSError) as exc:
            self.metrics.fleet_syncs.labels(getattr(exc, "reason", "token_file")).inc()
            if not self.config.devices_file.exists():
                raise StartupError(
                    f"no device list yet and the fleet sync failed ({exc}); check [fleet] url "
                    "and the gateway's API token"
                ) from None
            log.warning("fleet_sync_failed", extra={"fields": {"error": str(exc)}})

    async def run(self) -> None:
        """Runs until SIGTERM/SIGINT (SIGHUP reloads the device list)."""
        loop = asyncio.get_running_loop()
        try:
            await self.start()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, lambda: self.reload_devices("sighup"))
            log.info("gateway_started", extra={"fields": {"gateway": self.config.gateway_id}})
            await self._stop.wait()
        finally:
            await self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        log.info(
            "gateway_stopping",
            extra={"fields": {"uncommitted_readings": self.store.uncommitted_readings}},
        )
        if self.udp is not None:
            self.udp.close()
        for modem in self.serial_modems:
            modem.stop()
        if self.forwarder is not None:
            await self.forwarder.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.store.close()
        if self._http is not None:
            self._http.shutdown()
        log.info(
            "gateway_stopped", extra={"fields": {"outbox_readings": self.outbox.depth_readings}}
        )

    # --- devices ---------------------------------------------------------------------------

    def _install_devices(self, devices: dict[bytes, Any]) -> None:
        self.network.set_devices(devices)
        self.metrics.devices.set(len(devices))
        otaa = sum(1 for d in devices.values() if d.otaa)
        log.info(
            "devices_loaded",
            extra={
                "fields": {
                    "devices": len(devices),
                    "otaa": otaa,
                    "abp": len(devices) - otaa,
                    "file": str(self.device_file.path),
                }
            },
        )
        self._sync_state()

    def _sync_state(self) -> None:
        state = self.network.take_changes()
        if state is not None:
            self.store.put_state(state)

    def reload_devices(self, why: str) -> bool:
        """Re-reads the device file; on error keeps the current list (and says why)."""
        try:
            devices = self.device_file.load()
        except DeviceListError as exc:
            self.metrics.device_reload_errors.inc()
            log.error(
                "devices_reload_failed",
                extra={
                    "fields": {
                        "error": str(exc),
                        "trigger": why,
                        "action": "keeping the previous list",
                    }
                },
            )
            return False
        self._install_devices(devices)
        return True

    # --- the hot path ----------------------------------------------------------------------

    def on_reception(self, rec: net.Reception) -> None:
        """One frame from any ingress: check, decode, queue for commit, maybe answer."""
        try:
            uplink, new = self.network.handle(rec)
        except net.Reject as reject:
            self.metrics.reject(reject.reason)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "frame_rejected",
                    extra={
                        "fields": {
                            "reason": reject.reason,
                            "detail": reject.detail,
                            "dev": reject.dev,
                            "via": rec.transmitter,
                        }
                    },
                )
            return
        if not new:
            self.metrics.duplicates.inc()
            return
        kind = uplink.kind
        if kind == "data":
            self.metrics.inc(self.metrics.uplinks, "data", rec.path)
            if uplink.fport and uplink.payload:
                self._store_readings(uplink, rec)
        elif kind == "join":
            self.metrics.inc(self.metrics.uplinks, "join", rec.path)
            self.metrics.joins.inc()
            log.info(
                "join_accepted",
                extra={
                    "fields": {
                        "device": uplink.device.dev_eui_hex,
                        "dev_addr": f"{uplink.session.dev_addr:08x}",
                    }
                },
            )
        self._sync_state()
        if uplink.wants_downlink:
            delay = self.config.network.downlink_collect_ms / 1000.0
            asyncio.get_running_loop().call_later(delay, self._answer, uplink)

    def _store_readings(self, uplink: net.Uplink, rec: net.Reception) -> None:
        device = uplink.device
        assert uplink.fport is not None
        try:
            body, n = record(
                dev_eui=device.dev_eui_hex,
                session=uplink.session.session_id,
                fcnt=uplink.fcnt,
                fport=uplink.fport,
                data=uplink.payload,
                time_iso=self._time(rec.received_at),
                rssi=rec.rx.rssi,
                snr=rec.rx.snr,
                fw=device.fw,
            )
        except PayloadError as exc:
            self.metrics.reject("payload")
            log.info(
                "payload_rejected",
                extra={
                    "fields": {
                        "device": device.dev_eui_hex,
                        "fcnt": uplink.fcnt,
                        "fport": uplink.fport,
                        "error": str(exc),
                    }
                },
            )
            return
        if n == 0:
            return
        state = self.network.take_changes()  # this frame's counters commit with its readings
        try:
            self.store.add(rec.received_at, n, body, state)
        except Backpressure:
            self.metrics.reject("outbox_unavailable")
            if state is not None:
                self.store.put_state(state)

    def _answer(self, uplink: net.Uplink) -> None:
        phy = self.network.build_downlink(uplink)
        if phy is not None:
            self.scheduler.schedule(phy, uplink)
            self._sync_state()

    # --- fleet -> gateway ------------------------------------------------------------------

    def on_down(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "reload_devices":
            self.reload_devices("mqtt")
        elif kind == "downlink":
            try:
                dev_eui = bytes.fromhex(str(message["device"]))
                data = bytes.fromhex(str(message.get("data", "")))
                item = net.QueuedDownlink(
                    fport=int(message["fport"]),
                    data=data,
                    confirmed=bool(message.get("confirmed", False)),
                    ref=str(message["id"]) if "id" in message else None,
                )
                self.network.queue_downlink(dev_eui, item)
            except (KeyError, ValueError, TypeError) as exc:
                log.warning(
                    "downlink_refused",
                    extra={"fields": {"error": str(exc), "ref": message.get("id")}},
                )
                return
            log.info(
                "downlink_queued", extra={"fields": {"device": dev_eui.hex(), "ref": item.ref}}
            )
        else:
            log.warning("down_message_unknown", extra={"fields": {"type": str(kind)[:40]}})

    # --- housekeeping ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        now = time.time()
        return {
            "gateway": self.config.gateway_id,
            "time": self._time(now),
            "uptime_s": round(now - self.started, 1),
            "outbox": {
                "readings": self.outbox.depth_readings,
                "oldest_age_s": round(self.store.oldest_age(now), 3),
                "uncommitted": self.store.uncommitted_readings,
            },
            "forwarders": dict(self.udp.last_stats) if self.udp else {},
        }

    async def _housekeeping(self) -> None:
        next_device_check = time.monotonic() + self.config.devices_reload_s
        while True:
            await asyncio.sleep(1.0)
            await self.store.checkpoint()
            now = time.time()
            self._count_kernel_drops(now)
            self.metrics.outbox_oldest_age.set(self.store.oldest_age(now))
            self.metrics.receive_to_commit_recent_max.set(self.store.recent_max_window(now))
            self.metrics.outbox_depth.set(self.outbox.depth_readings)
            forwarded = self.forwarder.forwarded_total if self.forwarder else 0
            self._rate_window.append((now, forwarded))
            while len(self._rate_window) > 11:
                self._rate_window.popleft()
            t0, n0 = self._rate_window[0]
            if now > t0:
                self.metrics.forward_rate.set((forwarded - n0) / (now - t0))
            if self.config.devices_reload_s > 0 and time.monotonic() >= next_device_check:
                next_device_check = time.monotonic() + self.config.devices_reload_s
                if self.device_file.changed():
                    self.reload_devices("file_changed")


    def _count_kernel_drops(self, now: float) -> None:
        drops = self.udp.kernel_drops() if self.udp is not None else None
        if drops is None:
            return
        new = drops - self._kernel_drops
        self._kernel_drops = drops
        if new <= 0:
            return
        self.metrics.udp_receive_drops.inc(new)
        self._drops_unlogged += new
        if now - self._drops_logged_at >= 10.0:
            log.warning("udp_receive_overflow", extra={"fields": {
                "datagrams_dropped": self._drops_unlogged,
                "action": "frames arrive faster than they are checked: raise [udp] "
                          "receive_buffer (and net.core.rmem_max) for bursts, or add CPU"}})
            self._drops_unlogged, self._drops_logged_at = 0, now


def run(config: GatewayConfig) -> int:
    # The outbox writer thread needs the GIL for a moment per SQLite statement; with the
    # default 5 ms switch interval a busy event loop makes every such moment wait up to 5 ms.
    sys.setswitchinterval(float(os.environ.get("ALLMENDE_GIL_SWITCH_S", "0.001")))
    gateway = Gateway(config)
    try:
        asyncio.run(gateway.run())
    except StartupError as exc:
        log.error("startup_failed", extra={"fields": {"error": str(exc)}})
        return 1
    return 0
