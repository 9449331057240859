"""Serial LoRa modem ingress: an ESP32 LoRa board running firmware/bridge, over pyserial.

The line protocol is defined once, in `allmende.firmware.bridge.protocol`. A reader thread
blocks on the port and hands lines to the event loop; a writer thread sends commands, so no
serial I/O ever blocks the loop. An unplugged board is reopened every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import serial
from allmende.firmware.bridge import protocol

from .config import SerialConfig
from .downlink import DownlinkScheduler
from .gwmp import RxPacket, TxPacket
from .metrics import Metrics
from .network import Reception

log = logging.getLogger("allmende.gateway.serial")

REOPEN_S = 2.0


class SerialModem:
    def __init__(
        self,
        config: SerialConfig,
        *,
        on_reception: Callable[[Reception], None],
        scheduler: DownlinkScheduler,
        metrics: Metrics,
        open_port: Callable[..., Any] = serial.serial_for_url,
    ) -> None:
        self.config = config
        self.name = config.name or f"serial:{config.port}"
        self.on_reception = on_reception
        self.scheduler = scheduler
        self.metrics = metrics
        self.open_port = open_port
        self.port: Any = None
        self.connected = threading.Event()
        self._outgoing: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self.bridge: tuple[str, ...] = ()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.scheduler.register(self)
        for target, name in ((self._read, "reader"), (self._write, "writer")):
            thread = threading.Thread(target=target, name=f"serial-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._outgoing.put(None)
        port = self.port
        if port is not None:
            try:
                port.cancel_read()
            except (AttributeError, OSError, serial.SerialException):
                pass
        for thread in self._threads:
            thread.join(timeout=2)

    # --- downlinks (event loop) ------------------------------------------------------------

    def send(self, token: int, tx: TxPacket) -> bool:
        if not self.connected.is_set():
            return False
        self._outgoing.put(
            protocol.tx_line(token, tx.tmst, tx.freq_hz, tx.sf, tx.bw_khz, tx.power_dbm, tx.data)
        )
        return True

    # --- threads -----------------------------------------------------------------------

    def _open(self) -> bool:
        try:
            self.port = self.open_port(self.config.port, baudrate=self.config.baudrate, timeout=0.5)
        except (serial.SerialException, OSError, ValueError) as exc:
            if not getattr(self, "_open_failed", False):
                log.error(
                    "serial_open_failed",
                    extra={
                        "fields": {
                            "port": self.config.port,
                            "error": str(exc),
                            "retry_every_s": REOPEN_S,
                        }
                    },
                )
                self._open_failed = True
            return False
        self._open_failed = False
        log.info("serial_opened", extra={"fields": {"port": self.config.port}})
        c = self.config
        self._outgoing.put("HELLO")
        self._outgoing.put(f"CFG {c.frequency} {c.sf} {c.bw}")
        self.connected.set()
        return True

    def _read(self) -> None:
        while not self._stop.is_set():
            if self.port is None and not self._open():
                self._stop.wait(REOPEN_S)
                continue
            try:
                raw = self.port.readline()
            except (serial.SerialException, OSError, TypeError) as exc:
                if self._stop.is_set():
                    break
                log.warning(
                    "serial_lost", extra={"fields": {"port": self.config.port, "error": str(exc)}}
                )
                self._close()
                continue
            if raw and self._loop is not None:
                line = raw.decode("ascii", "replace")
                try:
                    self._loop.call_soon_threadsafe(self._on_line, line, time.time())
                except RuntimeError:  # the loop is closed: shutting down
                    break
        self._close()

    def _close(self) -> None:
        self.connected.clear()
        port, self.port = self.port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _write(self) -> None:
        while True:
            line = self._outgoing.get()
            if line is None:
                return
            port = self.port
            if port is None:
                continue  # a downlink for a board that is gone: its TX_ACK never comes
            try:
                port.write((line + "\n").encode("ascii"))
            except (serial.SerialException, OSError) as exc:
                log.warning(
                    "serial_write_failed",
                    extra={"fields": {"port": self.config.port, "error": str(exc)}},
                )

    # --- lines from the bridge (event loop) ----------------------------------------------

    def _on_line(self, line: str, received_at: float) -> None:
        try:
            verb, v = protocol.parse(line)
        except protocol.ProtocolError:
            # Not protocol: a REPL banner, a traceback from the board. Logged, never fatal.
            self.metrics.inc(self.metrics.serial_lines, "ignored")
            if line.strip():
                log.debug("serial_line_ignored", extra={"fields": {"line": line.strip()[:120]}})
            return
        self.metrics.inc(self.metrics.serial_lines, verb)
        if verb == "RX":
            tmst, freq, sf, bw, rssi, snr, data = v
            rx = RxPacket(data, freq, sf, bw, tmst, rssi, snr, True)
            self.on_reception(Reception(data, rx, self.name, received_at, path="serial"))
        elif verb == "TXD":
            self.scheduler.on_tx_ack(self.name, v[0], v[1])
        elif verb == "HELLO" and v:
            self.bridge = v
            log.info(
                "serial_bridge", extra={"fields": {"port": self.config.port, "bridge": " ".join(v)}}
            )
        elif verb == "ERR":
            log.warning(
                "serial_bridge_error",
                extra={"fields": {"port": self.config.port, "error": v[0][:200]}},
            )
