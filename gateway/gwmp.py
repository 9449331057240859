"""Semtech UDP packet-forwarder protocol (GWMP) v2: the one codec for every datagram kind.

Used by the gateway's ingress server and by the virtual packet forwarders of the radio
medium, so both ends of the wire read and write the same bytes.

Wire layout (all datagrams)::

    byte 0      protocol version (2; 1 is accepted on decode, it differs only by lacking TX_ACK)
    bytes 1-2   random token chosen by the sender of a request, echoed in its ACK
    byte 3      kind (PUSH_DATA ... TX_ACK)
    bytes 4-11  gateway EUI (PUSH_DATA, PULL_DATA, TX_ACK only)
    rest        UTF-8 JSON object (PUSH_DATA, PULL_RESP; optional for TX_ACK)

PUSH_DATA JSON: ``{"rxpk": [RXPK, ...], "stat": {...}}`` (either key may be missing).
PULL_RESP JSON: ``{"txpk": TXPK}``. TX_ACK JSON: ``{"txpk_ack": {"error": "NONE" | ...}}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

PROTOCOL_VERSION = 2
ACCEPTED_VERSIONS = frozenset({1, 2})

PUSH_DATA = 0
PUSH_ACK = 1
PULL_DATA = 2
PULL_RESP = 3
PULL_ACK = 4
TX_ACK = 5

KIND_NAMES = {
    PUSH_DATA: "PUSH_DATA",
    PUSH_ACK: "PUSH_ACK",
    PULL_DATA: "PULL_DATA",
    PULL_RESP: "PULL_RESP",
    PULL_ACK: "PULL_ACK",
    TX_ACK: "TX_ACK",
}

# Kinds whose header carries the 8-byte gateway EUI after the 4-byte common header.
_WITH_EUI = frozenset({PUSH_DATA, PULL_DATA, TX_ACK})
# Kinds that must carry a JSON object / may carry one / must carry nothing.
_JSON_REQUIRED = frozenset({PUSH_DATA, PULL_RESP})
_JSON_OPTIONAL = frozenset({TX_ACK})

HEADER_SIZE = 4
EUI_SIZE = 8
# Largest datagram accepted. A PUSH_DATA of an SX1302 forwarder carries at most 16 rxpk of
# at most 255 bytes each (base64 + metadata ~ 600 bytes per rxpk) plus a stat object, far
# below this; anything bigger is garbage or an attack on the JSON parser.
MAX_DATAGRAM_SIZE = 32 * 1024

# TX_ACK error codes of the reference packet forwarder (lora_pkt_fwd, jitqueue).
TX_ACK_ERRORS = (
    "NONE",
    "TOO_LATE",
    "TOO_EARLY",
    "COLLISION_PACKET",
    "COLLISION_BEACON",
    "TX_FREQ",
    "TX_POWER",
    "GPS_UNLOCKED",
)

# Reasons a datagram is rejected; each is a label value of the gateway's reject counter.
REASONS = (
    "truncated",  # shorter than its kind's header
    "bad_version",  # protocol version other than 1 or 2
    "unknown_kind",  # kind byte not 0..5
    "bad_json",  # JSON missing, not UTF-8, not parseable, or not an object
    "oversized",  # longer than MAX_DATAGRAM_SIZE
    "unexpected_data",  # bytes after the header of a kind that carries none
    "bad_rxpk",  # an rxpk/txpk object with a missing or malformed field
)


class GwmpError(ValueError):
    """A datagram (or rxpk/txpk object) that is not valid GWMP; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Packet:
    """One decoded datagram. `gateway_eui` is 8 bytes (on-wire order) or None; `payload` the
    JSON object or None."""

    version: int
    token: int
    kind: int
    gateway_eui: bytes | None
    payload: dict[str, Any] | None

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]


def _header(token: int, kind: int, version: int = PROTOCOL_VERSION) -> bytes:
    if not 0 <= token <= 0xFFFF:
        raise ValueError(f"token {token} is not a 16-bit value")
    return bytes((version, token >> 8, token & 0xFF, kind))


def _eui(eui: bytes | str) -> bytes:
    raw = bytes.fromhex(eui) if isinstance(eui, str) else bytes(eui)
    if len(raw) != EUI_SIZE:
        raise ValueError(f"gateway EUI must be 8 bytes, got {len(raw)}")
    return raw


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def push_data(token: int, eui: bytes | str, payload: dict[str, Any]) -> bytes:
    """PUSH_DATA: forwarder -> server, received packets (`rxpk`) and/or status (`stat`)."""
    return _header(token, PUSH_DATA) + _eui(eui) + _json(payload)


def push_ack(token: int) -> bytes:
    """PUSH_ACK: server -> forwarder, sent at once for every PUSH_DATA."""
    return _header(token, PUSH_ACK)


def pull_data(token: int, eui: bytes | str) -> bytes:
    """PULL_DATA: forwarder -> server keep-alive; tells the server where to send downlinks."""
    return _header(token, PULL_DATA) + _eui(eui)


def pull_ack(token: int) -> bytes:
    """PULL_ACK: server -> forwarder, answer to PULL_DATA."""
    return _header(token, PULL_ACK)


def pull_resp(token: int, txpk: dict[str, Any]) -> bytes:
    """PULL_RESP: server -> forwarder, one downlink (`txpk`, see `build_txpk`)."""
    return _header(token, PULL_RESP) + _json({"txpk": txpk})


def tx_ack(token: int, eui: bytes | str, error: str | None = None) -> bytes:
    """TX_ACK: forwarder -> server, outcome of the PULL_RESP with the same token.

    `error` None means success without a JSON body (allowed by the protocol); otherwise one
    of TX_ACK_ERRORS ("NONE" included).
    """
    body = b""
    if error is not None:
        if error not in TX_ACK_ERRORS:
            raise ValueError(f"unknown TX_ACK error {error!r}; expected one of {TX_ACK_ERRORS}")
        body = _json({"txpk_ack": {"error": error}})
    return _header(token, TX_ACK) + _eui(eui) + body


def decode(datagram: bytes, *, max_size: int = MAX_DATAGRAM_SIZE) -> Packet:
    """Decodes one datagram of any kind. Raises GwmpError with a `reason` from REASONS."""
    size = len(datagram)
    if size > max_size:
        raise GwmpError("oversized", f"{size} bytes, limit {max_size}")
    if size < HEADER_SIZE:
        raise GwmpError("truncated", f"{size} bytes, a header has {HEADER_SIZE}")
    version = datagram[0]
    if version not in ACCEPTED_VERSIONS:
        raise GwmpError("bad_version", f"protocol version {version}")
    kind = datagram[3]
    if kind not in KIND_NAMES:
        raise GwmpError("unknown_kind", f"kind byte {kind}")
    token = (datagram[1] << 8) | datagram[2]
    body_start = HEADER_SIZE
    eui = None
    if kind in _WITH_EUI:
        body_start += EUI_SIZE
        if size < body_start:
            raise GwmpError("truncated", f"{KIND_NAMES[kind]} of {size} bytes has no gateway EUI")
        eui = bytes(datagram[HEADER_SIZE:body_start])
    payload = None
    if size > body_start:
        if kind not in _JSON_REQUIRED and kind not in _JSON_OPTIONAL:
            raise GwmpError(
                "unexpected_data", f"{size - body_start} bytes after {KIND_NAMES[kind]}"
            )
        payload = _parse_json(datagram[body_start:])
    elif kind in _JSON_REQUIRED:
        raise GwmpError("bad_json", f"{KIND_NAMES[kind]} without a JSON object")
    return Packet(version, token, kind, eui, payload)


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)  # strict: UTF-8, RFC 8259 (no NaN), nesting limited
    except orjson.JSONDecodeError as exc:
        raise GwmpError("bad_json", str(exc)[:120]) from None
    if not isinstance(obj, dict):
        raise GwmpError("bad_json", f"top level is {type(obj).__name__}, not an object")
    return obj


# --- rxpk / txpk ------------------------------------------------------------------------

_DATR = re.compile(r"SF(\d{1,2})BW(\d{2,3})\Z")
_LORA_BW_KHZ = (125, 250, 500)


def datr(sf: int, bw_khz: int) -> str:
    """LoRa data-rate string as GWMP writes it: datr(7, 125) == "SF7BW125"."""
    if not 5 <= sf <= 12 or bw_khz not in _LORA_BW_KHZ:
        raise ValueError(f"no LoRa data rate SF{sf} BW{bw_khz}")
    return f"SF{sf}BW{bw_khz}"


def parse_datr(text: str) -> tuple[int, int]:
    """ "SF7BW125" -> (7, 125). Raises GwmpError("bad_rxpk") for anything else (FSK included)."""
    match = _DATR.match(text) if isinstance(text, str) else None
    if match is None:
        raise GwmpError("bad_rxpk", f"datr {text!r} is not a LoRa data rate")
    sf, bw = int(match.group(1)), int(match.group(2))
    if not 5 <= sf <= 12 or bw not in _LORA_BW_KHZ:
        raise GwmpError("bad_rxpk", f"datr {text!r} is not a LoRa data rate")
    return sf, bw


@dataclass(slots=True)
class RxPacket:
    """One received LoRa frame from an rxpk object. `tmst` is the concentrator's 32-bit
    microsecond counter at the end of the frame (what downlink `tmst` values refer to)."""

    data: bytes
    freq_hz: int
    sf: int
    bw_khz: int
    tmst: int
    rssi: float
    snr: float
    crc_ok: bool
    codr: str = "4/5"
    chan: int = 0
    rfch: int = 0
    time: str | None = None


def build_rxpk(
    data: bytes,
    *,
    freq_hz: int,
    sf: int,
    bw_khz: int,
    tmst: int,
    rssi: float,
    snr: float,
    codr: str = "4/5",
    chan: int = 0,
    rfch: int = 0,
    crc_ok: bool = True,
    time: str | None = None,
) -> dict[str, Any]:
    """An rxpk object as a packet forwarder writes it into PUSH_DATA."""
    rxpk: dict[str, Any] = {
        "tmst": tmst & 0xFFFFFFFF,
        "chan": chan,
        "rfch": rfch,
        "freq": round(freq_hz / 1e6, 6),
        "stat": 1 if crc_ok else -1,
        "modu": "LORA",
        "datr": datr(sf, bw_khz),
        "codr": codr,
        "rssi": rssi,
        "lsnr": snr,
        "size": len(data),
        "data": base64.b64encode(data).decode(),
    }
    if time is not None:
        rxpk["time"] = time
    return rxpk


def _field(obj: dict[str, Any], name: str, kinds: tuple[type, ...]) -> Any:
    value = obj.get(name)
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise GwmpError("bad_rxpk", f"field {name!r} missing or not {kinds[0].__name__}")
    if type(value) is float and not math.isfinite(value):  # Python's json reads NaN/Infinity
        raise GwmpError("bad_rxpk", f"field {name!r} is not a finite number")
    return value


def _number(obj: dict[str, Any], name: str) -> float | int:
    # The hot path's version of _field for numbers: exact type checks are cheaper.
    value: Any = obj.get(name)
    kind = type(value)
    if kind is float:
        if value - value != 0.0:  # NaN or an infinity (Python's json accepts both)
            raise GwmpError("bad_rxpk", f"field {name!r} is not a finite number")
        return float(value)
    if kind is int:
        return int(value)
    raise GwmpError("bad_rxpk", f"field {name!r} missing or not a number")


_DATR_TABLE = {f"SF{sf}BW{bw}": (sf, bw) for sf in range(5, 13) for bw in _LORA_BW_KHZ}


def parse_rxpk(rxpk: Any) -> RxPacket:
    """Checks and converts one rxpk object. Raises GwmpError("bad_rxpk") naming the field."""
    if type(rxpk) is not dict:
        raise GwmpError("bad_rxpk", "rxpk entry is not an object")
    get = rxpk.get
    if get("modu", "LORA") != "LORA":
        raise GwmpError("bad_rxpk", f"modulation {get('modu')!r} is not LORA")
    text = get("data")
    if type(text) is not str:
        raise GwmpError("bad_rxpk", "field 'data' missing or not a string")
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise GwmpError("bad_rxpk", "field 'data' is not base64") from None
    rate = get("datr")
    sf_bw = _DATR_TABLE.get(rate) if type(rate) is str else None
    if sf_bw is None:
        raise GwmpError("bad_rxpk", f"datr {rate!r} is not a LoRa data rate")
    freq = _number(rxpk, "freq")
    tmst = get("tmst")
    if type(tmst) is not int:
        raise GwmpError("bad_rxpk", "field 'tmst' missing or not an integer")
    rssi = _number(rxpk, "rssi")
    snr = _number(rxpk, "lsnr") if "lsnr" in rxpk else 0.0
    codr, chan, rfch, time = get("codr"), get("chan"), get("rfch"), get("time")
    return RxPacket(
        data,
        int(round(freq * 1e6)),
        sf_bw[0],
        sf_bw[1],
        tmst & 0xFFFFFFFF,
        float(rssi),
        float(snr),
        get("stat", 1) == 1,
        codr if type(codr) is str else "4/5",
        chan if type(chan) is int else 0,
        rfch if type(rfch) is int else 0,
        time if type(time) is str else None,
    )


@dataclass(frozen=True, slots=True)
class TxPacket:
    """One downlink from a txpk object. `tmst` None means send immediately (`imme`)."""

    data: bytes
    freq_hz: int
    sf: int
    bw_khz: int
    tmst: int | None
    power_dbm: int = 14
    codr: str = "4/5"
    ipol: bool = True
    rfch: int = 0


def build_txpk(
    data: bytes,
    *,
    freq_hz: int,
    sf: int,
    bw_khz: int,
    tmst: int | None,
    power_dbm: int = 14,
    codr: str = "4/5",
    ipol: bool = True,
    rfch: int = 0,
) -> dict[str, Any]:
    """A txpk object for PULL_RESP. Downlinks to nodes use inverted polarity (ipol true)."""
    txpk: dict[str, Any] = {}
    if tmst is None:
        txpk["imme"] = True
    else:
        txpk["tmst"] = tmst & 0xFFFFFFFF
    txpk.update(
        {
            "freq": round(freq_hz / 1e6, 6),
            "rfch": rfch,
            "powe": power_dbm,
            "modu": "LORA",
            "datr": datr(sf, bw_khz),
            "codr": codr,
            "ipol": ipol,
            "size": len(data),
            "data": base64.b64encode(data).decode(),
        }
    )
    return txpk


def parse_txpk(txpk: Any) -> TxPacket:
    """Checks and converts one txpk object (the `txpk` member of a PULL_RESP payload)."""
    if not isinstance(txpk, dict):
        raise GwmpError("bad_rxpk", "txpk is not an object")
    if txpk.get("modu", "LORA") != "LORA":
        raise GwmpError("bad_rxpk", f"modulation {txpk.get('modu')!r} is not LORA")
    try:
        data = base64.b64decode(_field(txpk, "data", (str,)), validate=True)
    except (binascii.Error, ValueError):
        raise GwmpError("bad_rxpk", "field 'data' is not base64") from None
    sf, bw = parse_datr(txpk.get("datr"))  # type: ignore[arg-type]
    freq = _field(txpk, "freq", (float, int))
    tmst = None if txpk.get("imme") is True else _field(txpk, "tmst", (int,)) & 0xFFFFFFFF
    powe = txpk.get("powe", 14)
    return TxPacket(
        data=data,
        freq_hz=int(round(freq * 1e6)),
        sf=sf,
        bw_khz=bw,
        tmst=tmst,
        power_dbm=int(powe) if isinstance(powe, int | float) else 14,
        codr=str(txpk.get("codr", "4/5")),
        ipol=bool(txpk.get("ipol", True)),
        rfch=int(txpk.get("rfch", 0)) if isinstance(txpk.get("rfch"), int) else 0,
    )


def tx_ack_error(packet: Packet) -> str:
    """The error code of a decoded TX_ACK ("NONE" when the forwarder sent no JSON)."""
    if packet.payload is None:
        return "NONE"
    ack = packet.payload.get("txpk_ack")
    if isinstance(ack, dict) and isinstance(ack.get("error"), str):
        return ack["error"]
    return "NONE"
