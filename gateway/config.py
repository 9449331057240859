"""The gateway's configuration file (TOML): loaded once, validated, errors name the bad field."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_GATEWAY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class UdpConfig:
    """Semtech UDP (GWMP) ingress. `listen` is "HOST:PORT"."""

    listen: str = "0.0.0.0:1700"
    max_datagram: int = 32 * 1024
    receive_buffer: int = 4 * 1024 * 1024  # SO_RCVBUF; Linux caps it at net.core.rmem_max

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class SerialConfig:
    """A serial LoRa modem (an ESP32 LoRa board running firmware/bridge)."""

    port: str
    baudrate: int = 115200
    frequency: int = 868_100_000  # Hz the bridge listens on
    sf: int = 7
    bw: int = 125  # kHz
    name: str = ""  # transmitter name in metrics and logs; defaults to the port


@dataclass(frozen=True)
class MqttConfig:
    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None  # default: allmende-gw-<gateway id>
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive: int = 30
    topic_prefix: str = "allmende/gw"
    batch_max_readings: int = 1000
    batch_max_bytes: int = 512 * 1024
    max_in_flight: int = 8  # unacknowledged `up` messages at once
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    stats_interval_s: float = 60.0


@dataclass(frozen=True)
class OutboxConfig:
    path: str = ""  # default: <data_dir>/outbox.sqlite
    max_readings: int = 2_000_000  # beyond this the oldest unsent readings are evicted
    commit_interval_ms: float = 20.0  # how long readings gather before one commit
    max_pending_readings: int = 200_000  # received, not yet committed (while the disk fails)
    synchronous: str = "FULL"  # SQLite PRAGMA synchronous; FULL survives power loss
    max_db_pages: int = 0  # 0: no limit; a page limit makes the database "full" (tests)


@dataclass(frozen=True)
class NetworkConfig:
    net_id: int = 0x000000
    dev_addr_prefix: str = "00000000/7"  # NwkID of NetID 0; new OTAA DevAddrs fall inside
    rx1_delay_s: int = 1
    rx1_dr_offset: int = 0
    rx2_frequency: int = 869_525_000
    rx2_dr: int = 0
    tx_power_dbm: int = 14
    dedupe_window_ms: float = 1000.0  # copies of one frame within this window are duplicates
    downlink_collect_ms: float = 150.0  # wait for more copies before choosing the forwarder
    adr: bool = True
    adr_history: int = 20
    adr_margin_db: float = 10.0
    downlink_queue_size: int = 16  # queued application downlinks per device


@dataclass(frozen=True)
class FleetConfig:
    """Devices and keys from the fleet (GET /api/v1/gateways/<id>/sync), cached in the
    device file. The gateway's API token comes from `token_file` (or `token`)."""

    url: str
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    interval_s: float = 60.0

    def read_token(self) -> str:
        if self.token:
            return self.token
        assert self.token_file is not None
        return Path(self.token_file).read_text().strip()


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9108"  # "" disables the HTTP endpoint


@dataclass(frozen=True)
class GatewayConfig:
    gateway_id: str
    data_dir: Path
    devices_file: Path
    devices_reload_s: float = 5.0
    udp: UdpConfig | None = UdpConfig()
    serial: tuple[SerialConfig, ...] = ()
    mqtt: MqttConfig | None = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    network: NetworkConfig = NetworkConfig()
    metrics: MetricsConfig = MetricsConfig()
    fleet: FleetConfig | None = None
    log_level: str = "info"
    source: Path | None = None

    @property
    def outbox_path(self) -> Path:
        return Path(self.outbox.path) if self.outbox.path else self.data_dir / "outbox.sqlite"


def _convert(section: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"[{section}] unknown key {unknown[0]!r}; known: {', '.join(sorted(names))}"
        )
    values = {}
    for name, value in raw.items():
        values[name] = _check(f"{section}.{name}", hints[name], value)
    try:
        return cls(**values)
    except TypeError as exc:  # a required key is missing
        raise ConfigError(f"[{section}] {exc}") from None


def _check(where: str, hint: Any, value: Any) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option in (str, bool) and isinstance(value, option):
            return value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{where} = {value!r}: expected {names}")


def load_config(path: str | Path) -> GatewayConfig:
    """Reads and validates a gateway configuration file. Relative paths in it are relative to
    the file's directory."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    try:
        return _from_dict(raw, path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _from_dict(raw: dict[str, Any], path: Path) -> GatewayConfig:
    known = {"gateway", "udp", "serial", "mqtt", "outbox", "network", "metrics", "fleet", "log"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]; known: {', '.join(sorted(known))}")
    base = path.resolve().parent
    gw = raw.get("gateway")
    if not isinstance(gw, dict):
        raise ConfigError("missing [gateway] with id, data_dir and devices")
    gw_unknown = sorted(set(gw) - {"id", "data_dir", "devices", "devices_reload_s"})
    if gw_unknown:
        raise ConfigError(f"[gateway] unknown key {gw_unknown[0]!r}")
    gateway_id = gw.get("id")
    if not isinstance(gateway_id, str) or not _GATEWAY_ID.match(gateway_id):
        raise ConfigError(
            "gateway.id must be 1-64 characters of A-Z a-z 0-9 _ . - (an MQTT topic level)"
        )
    for key in ("data_dir", "devices"):
        if not isinstance(gw.get(key), str) or not gw[key]:
            raise ConfigError(f"gateway.{key} must be a path")
    reload_s = _check("gateway.devices_reload_s", float, gw.get("devices_reload_s", 5.0))

    udp = _convert("udp", UdpConfig, raw["udp"]) if "udp" in raw else None
    if udp is not None:
        try:
            if not 0 <= udp.port <= 65535 or not udp.host:
                raise ValueError
        except (ValueError, IndexError):
            raise ConfigError(f"udp.listen = {udp.listen!r}: expected HOST:PORT") from None
    serial_raw = raw.get("serial", [])
    if isinstance(serial_raw, dict):
        serial_raw = [serial_raw]
    if not isinstance(serial_raw, list):
        raise ConfigError("[[serial]] must be an array of tables")
    serial = tuple(_convert("serial", SerialConfig, s) for s in serial_raw)
    mqtt = _convert("mqtt", MqttConfig, raw["mqtt"]) if "mqtt" in raw else None
    outbox = _convert("outbox", OutboxConfig, raw.get("outbox", {}))
    if outbox.synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
        raise ConfigError("outbox.synchronous must be NORMAL, FULL or EXTRA")
    if outbox.max_readings < 1:
        raise ConfigError("outbox.max_readings must be at least 1")
    network = _convert("network", NetworkConfig, raw.get("network", {}))
    _check_prefix(network.dev_addr_prefix)
    metrics = _convert("metrics", MetricsConfig, raw.get("metrics", {}))
    log = raw.get("log", {})
    if not isinstance(log, dict) or set(log) - {"level"}:
        raise ConfigError("[log] takes only level")
    level = log.get("level", "info")
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level must be debug, info, warning or error")
    if udp is None and not serial:
        raise ConfigError("no ingress: configure [udp] and/or [[serial]]")

    def resolve(p: str) -> Path:
        return (base / p) if not Path(p).is_absolute() else Path(p)

    if outbox.path:
        outbox = dataclasses.replace(outbox, path=str(resolve(outbox.path)))
    fleet = _convert("fleet", FleetConfig, raw["fleet"]) if "fleet" in raw else None
    if fleet is not None:
        if not fleet.url.startswith(("http://", "https://")):
            raise ConfigError(f"fleet.url = {fleet.url!r}: expected http(s)://HOST[:PORT]")
        if bool(fleet.token) == bool(fleet.token_file):
            raise ConfigError("[fleet] needs exactly one of token_file (preferred) or token")
        if fleet.token_file:
            fleet = dataclasses.replace(fleet, token_file=str(resolve(fleet.token_file)))
    return GatewayConfig(
        gateway_id=gateway_id,
        data_dir=resolve(gw["data_dir"]),
        devices_file=resolve(gw["devices"]),
        devices_reload_s=reload_s,
        udp=udp,
        serial=serial,
        mqtt=mqtt,
        outbox=outbox,
        network=network,
        metrics=metrics,
        fleet=fleet,
        log_level=level,
        source=path,
    )


def parse_prefix(text: str) -> tuple[int, int]:
    """ "26000000/7" -> (0x26000000, 7): a DevAddr prefix and its length in bits."""
    addr, _, bits = text.partition("/")
    return int(addr, 16), int(bits)


def _check_prefix(text: str) -> None:
    try:
        addr, bits = parse_prefix(text)
        if not (0 <= addr <= 0xFFFFFFFF and 1 <= bits <= 31 and len(text.split("/")[0]) == 8):
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"network.dev_addr_prefix = {text!r}: expected 8 hex digits/bits, e.g. 00000000/7"
        ) from None
