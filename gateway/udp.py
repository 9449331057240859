"""GWMP ingress: the UDP server packet forwarders (real or virtual) talk to.

PUSH_DATA is acknowledged at once, before its frames are checked: the ACK says "datagram
received", not "reading stored" (that is the outbox's commit). PULL_DATA records where the
forwarder can be reached for downlinks; TX_ACK reports what became of a downlink.

The socket is read directly (`loop.add_reader`), draining every queued datagram per
wake-up: asyncio's datagram transport reads one datagram per event-loop iteration, which
costs more than checking the frame in it. A large receive buffer absorbs forwarder bursts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from . import gwmp
from .downlink import DownlinkScheduler
from .metrics import STAT_FIELDS, Metrics
from .network import Reception

log = logging.getLogger("allmende.gateway.udp")


class ForwarderLink:
    """The downlink route to one packet forwarder: the address of its last PULL_DATA."""

    def __init__(self, server: GwmpServer, eui_hex: str) -> None:
        self.server = server
        self.name = eui_hex
        self.addr: Any = None

    def send(self, token: int, tx: gwmp.TxPacket) -> bool:
        if self.addr is None:
            return False
        txpk = gwmp.build_txpk(
            tx.data,
            freq_hz=tx.freq_hz,
            sf=tx.sf,
            bw_khz=tx.bw_khz,
            tmst=tx.tmst,
            power_dbm=tx.power_dbm,
        )
        return self.server.sendto(gwmp.pull_resp(token, txpk), self.addr)


DRAIN_PER_WAKEUP = 64  # datagrams read per wake-up before timers and the commit get a turn


class GwmpServer:
    def __init__(
        self,
        *,
        on_reception: Callable[[Reception], None],
        metrics: Metrics,
        scheduler: DownlinkScheduler,
        max_datagram: int = gwmp.MAX_DATAGRAM_SIZE,
    ) -> None:
        self.on_reception = on_reception
        self.metrics = metrics
        self.scheduler = scheduler
        self.max_datagram = max_datagram
        self.sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.links: dict[str, ForwarderLink] = {}
        self._last_seen_update: dict[str, float] = {}
        self.last_stats: dict[str, dict[str, Any]] = {}  # forwarder -> its last GWMP stat

    def open(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int, *, receive_buffer: int
    ) -> None:
        """Binds the UDP socket (IPv4 or IPv6 by `host`) and starts reading. Raises OSError."""
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.bind(addr)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock, self._loop = sock, loop
        loop.add_reader(sock.fileno(), self._read_ready)

    def close(self) -> None:
        if self.sock is not None and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _read_ready(self) -> None:
        """Reads what is queued (up to DRAIN_PER_WAKEUP datagrams), acknowledges every
        PUSH_DATA of the burst, then checks their frames.

        Acknowledging the burst before checking it answers each forwarder within the read,
        not after up to 63 other datagrams were checked, and it sends the ACKs back to back:
        a forwarder's receiver is woken once per burst instead of once per datagram, a wake-up
        that costs the sender (us) more than the frame's own checks on a virtual machine.
        """
        sock = self.sock
        if sock is None:
            return
        burst: list[tuple[gwmp.Packet, Any, float]] = []
        for _ in range(DRAIN_PER_WAKEUP):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # ICMP port unreachable from a forwarder that went away: nothing to do.
                log.debug("udp_error", extra={"fields": {"error": str(exc)}})
                break
            packet = self._decode(data, addr)
            if packet is not None:
                if packet.kind == gwmp.PUSH_DATA:
                    self.sendto(gwmp.push_ack(packet.token), addr)
                burst.append((packet, addr, time.time()))
        for packet, addr, now in burst:
            self._handle(packet, addr, now)

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped for this socket so far (its receive buffer was full),
        from /proc/net/udp[6]; None where that is not available (not Linux, socket closed)."""
        if self.sock is None:
            return None
        try:
            inode = str(os.fstat(self.sock.fileno()).st_ino)
            for table in ("/proc/net/udp", "/proc/net/udp6"):
                with open(table) as lines:
                    for line in lines:
                        fields = line.split()
                        if len(fields) >= 13 and fields[9] == inode:
                            return int(fields[12])
        except (OSError, ValueError):
            return None
        return None

    def sendto(self, data: bytes, addr: Any) -> bool:
        """Sends without blocking; a full send buffer or an unreachable forwarder is counted."""
        if self.sock is None:
            return False
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            self.metrics.inc(self.metrics.udp_send_errors, type(exc).__name__)
            return False
        return True

    def _link(self, eui: bytes) -> ForwarderLink:
        name = eui.hex()
        link = self.links.get(name)
        if link is None:
            link = self.links[name] = ForwarderLink(self, name)
            self.scheduler.register(link)
            log.info("forwarder_seen", extra={"fields": {"forwarder": name}})
        return link

    def _decode(self, data: bytes, addr: Any) -> gwmp.Packet | None:
        metrics = self.metrics
        try:
            packet = gwmp.decode(data, max_size=self.max_datagram)
        except gwmp.GwmpError as exc:
            metrics.reject(exc.reason)
            log.debug(
                "datagram_rejected", extra={"fields": {"reason": exc.reason, "from": str(addr)}}
            )
            return None
        metrics.inc(metrics.datagrams, gwmp.KIND_NAMES[packet.kind])
        return packet

    def _handle(self, packet: gwmp.Packet, addr: Any, now: float) -> None:
        """A decoded datagram; a PUSH_DATA has been acknowledged already."""
        metrics = self.metrics
        kind = packet.kind
        if kind == gwmp.PUSH_DATA:
            assert packet.gateway_eui is not None and packet.payload is not None
            link = self._link(packet.gateway_eui)
            self._seen(link.name, now)
            rxpks = packet.payload.get("rxpk")
            if rxpks is not None:
                if not isinstance(rxpks, list):
                    metrics.reject("bad_rxpk")
                else:
                    for obj in rxpks:
                        try:
                            rx = gwmp.parse_rxpk(obj)
                        except gwmp.GwmpError as exc:
                            metrics.reject(exc.reason)
                            continue
                        self.on_reception(Reception(rx.data, rx, link.name, now))
            stat = packet.payload.get("stat")
            if isinstance(stat, dict):
                self._stat(link.name, stat)
        elif kind == gwmp.PULL_DATA:
            assert packet.gateway_eui is not None
            link = self._link(packet.gateway_eui)
            if link.addr != addr:
                log.info(
                    "forwarder_route", extra={"fields": {"forwarder": link.name, "addr": str(addr)}}
                )
            link.addr = addr
            self._seen(link.name, now)
            self.sendto(gwmp.pull_ack(packet.token), addr)
        elif kind == gwmp.TX_ACK:
            assert packet.gateway_eui is not None
            self.scheduler.on_tx_ack(
                packet.gateway_eui.hex(), packet.token, gwmp.tx_ack_error(packet)
            )
        else:
            # PUSH_ACK, PULL_ACK, PULL_RESP go from a server to a forwarder, never to us.
            metrics.reject("unexpected_kind")

    def _seen(self, name: str, now: float) -> None:
        if now - self._last_seen_update.get(name, 0.0) >= 1.0:
            self._last_seen_update[name] = now
            self.metrics.forwarder_last_seen.labels(name).set(now)

    def _stat(self, name: str, stat: dict[str, Any]) -> None:
        for field in STAT_FIELDS:
            value = stat.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.metrics.forwarder_stat.labels(name, field).set(value)
        self.last_stats[name] = stat
