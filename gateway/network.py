"""The gateway's LoRaWAN network server for its own devices: sessions, joins, uplink checks.

Pure logic without I/O: the ingress paths hand it received frames, it answers with what
happened (accepted data, a join, a duplicate copy, or a `Reject` with a reason), and keeps
the session state the outbox persists. Downlink frames are built here; when and through
which radio they go is `downlink.py`'s business.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import lorawan, region
from .config import NetworkConfig, parse_prefix
from .devices import Device
from .gwmp import RxPacket

log = logging.getLogger("allmende.gateway.network")

# Why a frame was not accepted; label values of allmende_gateway_rejects_total (plus the
# GWMP datagram reasons of gwmp.REASONS and the ingress's own ones).
FRAME_REJECT_REASONS = (
    "crc",  # the radio reported a CRC error
    "bad_frame",  # not a parseable LoRaWAN 1.0 uplink (truncated, bad MHDR, bad FOpts, ...)
    "not_uplink",  # a downlink or proprietary MType heard by a receiver
    "unknown_device",  # DevAddr/DevEUI not in the device list (or wrong JoinEUI)
    "mic",  # MIC check failed with every candidate session and frame counter
    "replay",  # an older frame counter, or the latest one with other content
    "repeat",  # the latest accepted frame again after the dedupe window
    "devnonce_reuse",  # a join-request whose DevNonce this device used before
    "payload",  # authentic frame whose application payload the codec rejects
)

_ABP_TAG = b"allmende/session"  # what an ABP session's tag is the MAC of (with the AppSKey)
MAX_PENDING_SESSIONS = 3  # OTAA sessions joined but not yet used, per device


class Reject(Exception):
    """A frame refused for `reason` (one of FRAME_REJECT_REASONS); `dev` names the device
    (DevEUI or DevAddr hex) when known. Never carries key material."""

    def __init__(self, reason: str, detail: str, dev: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.dev = dev


@dataclass(slots=True)
class Reception:
    """One copy of a frame, as one receiver (packet forwarder or serial modem) heard it."""

    phy: bytes
    rx: RxPacket
    transmitter: str  # name of the receiver; downlinks for this copy go back through it
    received_at: float  # wall-clock time.time() when the datagram/line arrived
    path: str = "gwmp"


@dataclass(eq=False, slots=True)
class Session:
    """A LoRaWAN session of one device. Persistent fields are those of `snapshot()`."""

    dev_eui: bytes
    dev_addr: int
    dev_nonce: int | None  # None for ABP
    nwk_s_key: bytes = field(repr=False)
    app_s_key: bytes = field(repr=False)
    fcnt_up: int | None = None  # highest accepted 32-bit uplink counter
    fcnt_down: int = 0  # next downlink counter
    rx1_delay_s: int = 1
    rx1_dr_offset: int = 0
    rx2_dr: int = 0
    created: float = 0.0
    active: bool = True  # False: joined but no uplink seen in it yet
    tx_power_index: int = 0
    # Runtime only.
    last_phy: bytes | None = field(default=None, repr=False)
    snr_history: deque[float] = field(default_factory=lambda: deque(maxlen=20), repr=False)
    adr_sent_at: int | None = None  # fcnt_up when the last LinkADRReq went out unanswered
    adr_request: tuple[int, int] | None = None  # (dr, tx power index) asked for

    _id: str = field(default="", init=False, repr=False)  # session_id, worked out once
    stored_id: str | None = field(default=None, repr=False)  # the id it was persisted under

    @property
    def session_id(self) -> str:
        """`<devaddr>-<devnonce>` (OTAA) or `<devaddr>-k<tag>` (ABP): part of every reading's
        idempotency key, so it must change whenever frame counters may start again. For ABP
        that is a new key pair, possibly on the same DevAddr; the tag is a MAC under the keys
        (it tells key pairs apart and reveals nothing about them), so every gateway that
        hears the device names the session alike."""
        if not self._id:
            if self.dev_nonce is None:
                tag = lorawan.aes_cmac(self.nwk_s_key, _ABP_TAG + self.app_s_key)[:4].hex()
                self._id = f"{self.dev_addr:08x}-k{tag}"
            else:
                self._id = f"{self.dev_addr:08x}-{self.dev_nonce:04x}"
        return self._id

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.dev_eui.hex(),
            self.session_id,
            self.dev_addr,
            self.dev_nonce,
            self.nwk_s_key,
            self.app_s_key,
            self.fcnt_up,
            self.fcnt_down,
            self.rx1_delay_s,
            self.rx1_dr_offset,
            self.rx2_dr,
            self.created,
            1 if self.active else 0,
            self.tx_power_index,
        )

    @classmethod
    def from_snapshot(cls, row: tuple[object, ...]) -> Session:
        (eui, sid, addr, nonce, nwk, app, up, down, d1, off, rx2, created, active, power) = row
        return cls(
            dev_eui=bytes.fromhex(str(eui)),
            dev_addr=int(addr),  # type: ignore[call-overload]
            dev_nonce=None if nonce is None else int(nonce),  # type: ignore[call-overload]
            nwk_s_key=bytes(nwk),  # type: ignore[call-overload]
            app_s_key=bytes(app),  # type: ignore[call-overload]
            fcnt_up=None if up is None else int(up),  # type: ignore[call-overload]
            fcnt_down=int(down),  # type: ignore[call-overload]
            rx1_delay_s=int(d1),  # type: ignore[call-overload]
            rx1_dr_offset=int(off),  # type: ignore[call-overload]
            rx2_dr=int(rx2),  # type: ignore[call-overload]
            created=float(created),  # type: ignore[arg-type]
            active=bool(active),
            tx_power_index=int(power),  # type: ignore[call-overload]
            stored_id=str(sid),
        )


@dataclass(slots=True)
class QueuedDownlink:
    fport: int
    data: bytes = field(repr=False)
    confirmed: bool = False
    ref: str | None = None  # the fleet's id for it, echoed in logs


@dataclass(eq=False, slots=True)
class Uplink:
    """An accepted uplink (data or join) and every copy of it heard within the dedupe window."""

    kind: str  # "data", "join" or "repeat" (confirmed frame repeated: ACK again, no readings)
    device: Device
    session: Session
    receptions: list[Reception]
    fcnt: int = 0
    fport: int | None = None
    payload: bytes = field(default=b"", repr=False)  # decrypted FRMPayload
    confirmed: bool = False
    adr_ack_req: bool = False
    mac_answers: bytearray = field(default_factory=bytearray)
    join_accept: bytes | None = field(default=None, repr=False)
    wants_downlink: bool = False

    @property
    def first(self) -> Reception:
        return self.receptions[0]

    def best(self) -> Reception:
        """The copy with the best SNR (then RSSI): the receiver most likely to reach the node."""
        return max(self.receptions, key=lambda r: (r.rx.snr, r.rx.rssi))


class NetworkServer:
    """Sessions and checks for the devices of one gateway."""

    def __init__(
        self,
        config: NetworkConfig,
        *,
        clock: Callable[[], float] = time.time,
        randbits: Callable[[int], int] = secrets.randbits,
    ) -> None:
        self.config = config
        self.clock = clock
        self.randbits = randbits
        self.devices: dict[bytes, Device] = {}
        self.sessions: dict[bytes, list[Session]] = {}  # DevEUI -> sessions, newest last
        self.by_addr: dict[int, list[Session]] = {}
        self.used_nonces: dict[bytes, set[int]] = {}
        self.queues: dict[bytes, deque[QueuedDownlink]] = {}
        # Persistence: what changed since the outbox last took it.
        self.dirty: set[Session] = set()
        self.deleted: list[tuple[str, str]] = []
        self.new_nonces: list[tuple[str, int]] = []
        # Dedupe: PHYPayload -> accepted Uplink, with expiry order.
        self._recent: dict[bytes, Uplink] = {}
        self._recent_order: deque[tuple[float, bytes]] = deque()
        self._window = config.dedupe_window_ms / 1000.0
        self._prefix, self._prefix_bits = parse_prefix(config.dev_addr_prefix)

    # --- state ---------------------------------------------------------------------------

    def restore(self, sessions: list[Session], nonces: dict[bytes, set[int]]) -> None:
        """Loads persisted sessions and used DevNonces (before `set_devices`)."""
        for session in sessions:
            self._add_session(session)
            if session.stored_id is not None and session.stored_id != session.session_id:
                # Stored under an older naming scheme: move the row to the current name.
                self.deleted.append((session.dev_eui.hex(), session.stored_id))
                self.dirty.add(session)
            session.stored_id = None
        self.used_nonces = nonces

    def set_devices(self, devices: dict[bytes, Device]) -> None:
        """Installs a (new) device list. ABP sessions follow the file: unchanged address and
        keys keep their frame counters, changed ones start a new session. Sessions of devices
        no longer listed stay stored (re-adding a device resumes them) but match nothing."""
        self.devices = dict(devices)
        for dev_eui, device in devices.items():
            existing = self.sessions.get(dev_eui, [])
            if device.otaa:
                for session in [s for s in existing if s.dev_nonce is None]:
                    self._drop_session(session)
                continue
            keep = None
            for session in list(existing):
                identity = (session.dev_addr, session.nwk_s_key, session.app_s_key)
                if session.dev_nonce is None and identity == device.abp_identity() and keep is None:
                    keep = session
                else:
                    self._drop_session(session)
            if keep is None:
                assert device.dev_addr is not None and device.nwk_s_key and device.app_s_key
                session = Session(
                    dev_eui=dev_eui,
                    dev_addr=device.dev_addr,
                    dev_nonce=None,
                    nwk_s_key=device.nwk_s_key,
                    app_s_key=device.app_s_key,
                    rx1_delay_s=region.RECEIVE_DELAY1_S,
                    rx2_dr=region.RX2_DR,
                    created=self.clock(),
                )
                self._add_session(session)
                self.dirty.add(session)

    def _add_session(self, session: Session) -> None:
        session.snr_history = deque(maxlen=max(1, self.config.adr_history))
        self.sessions.setdefault(session.dev_eui, []).append(session)
        self.by_addr.setdefault(session.dev_addr, []).append(session)

    def _drop_session(self, session: Session) -> None:
        sessions = self.sessions.get(session.dev_eui, [])
        if session in sessions:
            sessions.remove(session)
        same_addr = self.by_addr.get(session.dev_addr, [])
        if session in same_addr:
            same_addr.remove(session)
            if not same_addr:
                del self.by_addr[session.dev_addr]
        self.dirty.discard(session)
        self.deleted.append((session.dev_eui.hex(), session.session_id))

    def take_changes(
        self,
    ) -> tuple[list[tuple[object, ...]], list[tuple[str, str]], list[tuple[str, int]]] | None:
        """Session rows to upsert, session ids to delete, DevNonces to record: everything
        changed since the last call (None: nothing), for the outbox's next transaction."""
        if not (self.dirty or self.deleted or self.new_nonces):
            return None
        rows = [s.snapshot() for s in self.dirty]
        deleted, nonces = self.deleted, self.new_nonces
        self.dirty, self.deleted, self.new_nonces = set(), [], []
        return rows, deleted, nonces

    # --- uplinks -------------------------------------------------------------------------

    def handle(self, rec: Reception) -> tuple[Uplink, bool]:
        """Checks one received frame. Returns (uplink, is_new): is_new False for another copy
        of a frame already accepted within the dedupe window. Raises Reject."""
        now = rec.received_at
        self._expire(now)
        seen = self._recent.get(rec.phy)
        if seen is not None:
            seen.receptions.append(rec)
            if seen.kind == "data" and seen.session.snr_history:
                history = seen.session.snr_history
                history[-1] = max(history[-1], rec.rx.snr)
            return seen, False
        if not rec.rx.crc_ok:
            raise Reject("crc", "radio CRC error")
        try:
            mtype = lorawan.mtype_of(rec.phy)
        except lorawan.LoRaWANError as exc:
            raise Reject("bad_frame", str(exc)) from None
        if mtype == lorawan.JOIN_REQUEST:
            uplink = self._join(rec)
        elif mtype in (lorawan.UNCONFIRMED_DATA_UP, lorawan.CONFIRMED_DATA_UP):
            uplink = self._data(rec)
        else:
            raise Reject("not_uplink", lorawan.MTYPE_NAMES[mtype])
        self._recent[rec.phy] = uplink
        self._recent_order.append((now, rec.phy))
        return uplink, True

    def _expire(self, now: float) -> None:
        order, recent, limit = self._recent_order, self._recent, now - self._window
        while order and order[0][0] < limit:
            recent.pop(order.popleft()[1], None)

    def _data(self, rec: Reception) -> Uplink:
        try:
            frame = lorawan.parse_data_frame(rec.phy)
        except lorawan.LoRaWANError as exc:
            raise Reject("bad_frame", str(exc)) from None
        candidates = self.by_addr.get(frame.dev_addr)
        addr_hex = f"{frame.dev_addr:08x}"
        if not candidates:
            raise Reject("unknown_device", f"DevAddr {addr_hex}", addr_hex)
        replay: Session | None = None
        for session in candidates:
            device = self.devices.get(session.dev_eui)
            if device is None:
                continue
            last = session.fcnt_up
            fcnt = lorawan.reconstruct_fcnt(last, frame.fcnt16)
            if last is not None and fcnt == last:
                if lorawan.check_data_mic(frame, session.nwk_s_key, fcnt):
                    if rec.phy == session.last_phy:
                        if frame.confirmed:  # the node missed our ACK: answer again
                            return Uplink(
                                "repeat",
                                device,
                                session,
                                [rec],
                                fcnt=fcnt,
                                confirmed=True,
                                wants_downlink=True,
                            )
                        raise Reject("repeat", f"FCnt {fcnt} again", device.dev_eui_hex)
                    replay = session
                continue
            if lorawan.check_data_mic(frame, session.nwk_s_key, fcnt):
                return self._accept_data(rec, frame, session, device, fcnt)
            if last is not None and fcnt - 0x10000 >= 0 and fcnt - 0x10000 < last:
                # Counted as a rollover; if it verifies one epoch lower, it is an old frame.
                if lorawan.check_data_mic(frame, session.nwk_s_key, fcnt - 0x10000):
                    replay = session
        if replay is not None:
            raise Reject(
                "replay", f"old FCnt {frame.fcnt16} (last {replay.fcnt_up})", replay.dev_eui.hex()
            )
        if all(self.devices.get(s.dev_eui) is None for s in candidates):
            raise Reject("unknown_device", f"DevAddr {addr_hex} (device not listed)", addr_hex)
        raise Reject("mic", f"DevAddr {addr_hex} FCnt16 {frame.fcnt16}", addr_hex)

    def _accept_data(
        self, rec: Reception, frame: lorawan.DataFrame, session: Session, device: Device, fcnt: int
    ) -> Uplink:
        session.fcnt_up = fcnt
        session.last_phy = rec.phy
        self.dirty.add(session)
        if not session.active:
            # First uplink of a new OTAA session: the node has the join-accept, older
            # sessions of this device are over.
            session.active = True
            for other in list(self.sessions.get(session.dev_eui, [])):
                if other is not session:
                    self._drop_session(other)
        plain = lorawan.decrypt_data_payload(frame, session.nwk_s_key, session.app_s_key, fcnt)
        uplink = Uplink(
            "data",
            device,
            session,
            [rec],
            fcnt=fcnt,
            fport=frame.fport,
            payload=plain if frame.fport != 0 else b"",
            confirmed=frame.confirmed,
            adr_ack_req=frame.adr_ack_req,
        )
        session.snr_history.append(rec.rx.snr)
        mac = frame.fopts if frame.fport != 0 else plain
        if mac:
            self._mac_commands(uplink, mac)
        if frame.adr and self.config.adr:
            self._adr(uplink, rec)
        queue = self.queues.get(device.dev_eui)
        uplink.wants_downlink = bool(
            uplink.confirmed or uplink.adr_ack_req or uplink.mac_answers or queue
        )
        return uplink

    def _mac_commands(self, uplink: Uplink, data: bytes) -> None:
        try:
            commands = lorawan.parse_uplink_mac_commands(data)
        except lorawan.LoRaWANError as exc:
            # MAC commands do not make a frame's data untrue: keep the readings, skip the rest.
            log.info(
                "mac_commands_ignored",
                extra={"fields": {"device": uplink.device.dev_eui_hex, "why": str(exc)}},
            )
            return
        session = uplink.session
        for cid, body in commands:
            if cid == lorawan.CID_LINK_CHECK:
                uplink.mac_answers += b"\x00\x00\x00"  # placeholder, filled when the copies are in
            elif cid == lorawan.CID_LINK_ADR and session.adr_request is not None:
                status = body[0] if body else 0
                if status & 0x07 == 0x07:
                    session.tx_power_index = session.adr_request[1]
                    session.snr_history.clear()
                    self.dirty.add(session)
                session.adr_request = None
                session.adr_sent_at = None

    def _adr(self, uplink: Uplink, rec: Reception) -> None:
        session = uplink.session
        history = session.snr_history
        if len(history) < (history.maxlen or 1):
            return
        if session.adr_sent_at is not None and uplink.fcnt - session.adr_sent_at < (
            history.maxlen or 20
        ):
            return  # a LinkADRReq is out; give the node time to answer
        try:
            dr = region.data_rate(rec.rx.sf, rec.rx.bw_khz)
        except KeyError:
            return
        new_dr, new_power = region.adr_step(
            max_snr_db=max(history),
            sf=rec.rx.sf,
            dr=dr,
            tx_power_index=session.tx_power_index,
            installation_margin_db=self.config.adr_margin_db,
        )
        if (new_dr, new_power) != (dr, session.tx_power_index):
            uplink.mac_answers += lorawan.link_adr_req(
                data_rate=new_dr, tx_power=new_power, ch_mask=region.DEFAULT_CH_MASK, nb_trans=1
            )
            session.adr_request = (new_dr, new_power)
            session.adr_sent_at = uplink.fcnt

    def _join(self, rec: Reception) -> Uplink:
        try:
            request = lorawan.parse_join_request(rec.phy)
        except lorawan.LoRaWANError as exc:
            raise Reject("bad_frame", str(exc)) from None
        eui_hex = request.dev_eui.hex()
        device = self.devices.get(request.dev_eui)
        if device is None or not device.otaa:
            raise Reject("unknown_device", f"join from DevEUI {eui_hex}", eui_hex)
        if device.join_eui is not None and device.join_eui != request.join_eui:
            raise Reject(
                "unknown_device", f"DevEUI {eui_hex} with JoinEUI {request.join_eui.hex()}", eui_hex
            )
        assert device.app_key is not None
        if not lorawan.check_join_request_mic(request, device.app_key):
            raise Reject("mic", f"join-request of DevEUI {eui_hex}", eui_hex)
        used = self.used_nonces.setdefault(request.dev_eui, set())
        if request.dev_nonce in used:
            raise Reject(
                "devnonce_reuse", f"DevEUI {eui_hex} DevNonce {request.dev_nonce:04x}", eui_hex
            )
        used.add(request.dev_nonce)
        self.new_nonces.append((eui_hex, request.dev_nonce))
        app_nonce = self.randbits(24)
        dev_addr = self._allocate_dev_addr()
        nwk, app = lorawan.derive_session_keys(
            device.app_key,
            app_nonce=app_nonce,
            net_id=self.config.net_id,
            dev_nonce=request.dev_nonce,
        )
        session = Session(
            dev_eui=request.dev_eui,
            dev_addr=dev_addr,
            dev_nonce=request.dev_nonce,
            nwk_s_key=nwk,
            app_s_key=app,
            rx1_delay_s=self.config.rx1_delay_s,
            rx1_dr_offset=self.config.rx1_dr_offset,
            rx2_dr=self.config.rx2_dr,
            created=rec.received_at,
            active=False,
        )
        pending = [s for s in self.sessions.get(request.dev_eui, []) if not s.active]
        for old in pending[: max(0, len(pending) - MAX_PENDING_SESSIONS + 1)]:
            self._drop_session(old)
        self._add_session(session)
        self.dirty.add(session)
        accept = lorawan.build_join_accept(
            device.app_key,
            app_nonce=app_nonce,
            net_id=self.config.net_id,
            dev_addr=dev_addr,
            dl_settings=(self.config.rx1_dr_offset & 0x07) << 4 | (self.config.rx2_dr & 0x0F),
            rx_delay=self.config.rx1_delay_s,
        )
        return Uplink("join", device, session, [rec], join_accept=accept, wants_downlink=True)

    def _allocate_dev_addr(self) -> int:
        host_bits = 32 - self._prefix_bits
        base = self._prefix & ~((1 << host_bits) - 1) & 0xFFFFFFFF
        for _ in range(1000):
            addr = base | self.randbits(host_bits)
            if addr not in self.by_addr:
                return addr
        raise RuntimeError("no free DevAddr in the configured prefix")

    # --- downlinks -----------------------------------------------------------------------

    def queue_downlink(self, dev_eui: bytes, item: QueuedDownlink) -> None:
        """Queues an application downlink for the device's next uplink (class A).
        Raises ValueError when the device is unknown, the port invalid or the queue full."""
        if dev_eui not in self.devices:
            raise ValueError(f"unknown device {dev_eui.hex()}")
        if not 1 <= item.fport <= 223:
            raise ValueError(f"FPort {item.fport} is not an application port (1..223)")
        limit = region.MAX_MAC_PAYLOAD[self.config.rx2_dr] - 8 - 1
        if len(item.data) > limit:
            raise ValueError(
                f"{len(item.data)} bytes exceed {limit}, the limit at RX2 DR{self.config.rx2_dr}"
            )
        queue = self.queues.setdefault(dev_eui, deque())
        if len(queue) >= self.config.downlink_queue_size:
            raise ValueError(f"downlink queue of {dev_eui.hex()} is full")
        queue.append(item)

    def build_downlink(self, uplink: Uplink) -> bytes | None:
        """The downlink frame answering this uplink (ACK, MAC answers, a queued application
        payload), or None when nothing needs saying. Takes a downlink frame counter."""
        if uplink.kind == "join":
            return uplink.join_accept
        session = uplink.session
        fopts = self._fill_link_check(uplink)
        queue = self.queues.get(uplink.device.dev_eui)
        item = queue.popleft() if queue else None
        if not (uplink.confirmed or uplink.adr_ack_req or fopts or item):
            return None
        flags = 0
        if uplink.confirmed:
            flags |= lorawan.FCTRL_ACK
        if self.config.adr:
            flags |= lorawan.FCTRL_ADR
        if queue:
            flags |= lorawan.FCTRL_FPENDING
        confirmed = item is not None and item.confirmed
        fcnt = session.fcnt_down
        session.fcnt_down += 1
        self.dirty.add(session)
        return lorawan.build_data_frame(
            mtype=lorawan.CONFIRMED_DATA_DOWN if confirmed else lorawan.UNCONFIRMED_DATA_DOWN,
            dev_addr=session.dev_addr,
            fcnt=fcnt,
            nwk_s_key=session.nwk_s_key,
            app_s_key=session.app_s_key,
            fport=item.fport if item else None,
            payload=item.data if item else b"",
            fopts=bytes(fopts[:15]),
            fctrl_flags=flags,
        )

    def _fill_link_check(self, uplink: Uplink) -> bytearray:
        # LinkCheckAns needs the best margin and the number of receivers: known only now.
        out = bytearray()
        data = uplink.mac_answers
        i = 0
        while i < len(data):
            if data[i] == 0:  # placeholder of a LinkCheckReq
                best = uplink.best().rx
                margin = best.snr - region.REQUIRED_SNR_DB.get(best.sf, -7.5)
                gateways = len({r.transmitter for r in uplink.receptions})
                out += lorawan.link_check_ans(int(margin), gateways)
                i += 3
            elif data[i] == lorawan.CID_LINK_ADR:
                out += data[i : i + 5]
                i += 5
            else:  # pragma: no cover - only the two above are ever queued
                break
        return out
