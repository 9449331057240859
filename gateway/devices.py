"""The gateway's device list: DevEUI, keys and kind per node, from a local JSON or TOML file.

Until the fleet hands devices to gateways, a technician writes this file. Keys are kept out
of every repr and log line: only DevEUIs and DevAddrs ever leave this module in text.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEX = re.compile(r"[0-9A-Fa-f]+\Z")


class DeviceListError(ValueError):
    """A device file that cannot be used; the message names the entry and the field, never a key."""


@dataclass(frozen=True)
class Device:
    """One node. OTAA nodes have `app_key`; ABP nodes have `dev_addr` and both session keys."""

    dev_eui: bytes  # MSB first
    kind: str
    join_eui: bytes | None = None
    app_key: bytes | None = field(default=None, repr=False)
    dev_addr: int | None = None
    nwk_s_key: bytes | None = field(default=None, repr=False)
    app_s_key: bytes | None = field(default=None, repr=False)
    fw: str | None = None
    name: str | None = None

    @property
    def otaa(self) -> bool:
        return self.app_key is not None

    @property
    def dev_eui_hex(self) -> str:
        return self.dev_eui.hex()

    def abp_identity(self) -> tuple[int | None, bytes | None, bytes | None]:
        """What makes an ABP session: a change of any of these starts new frame counters."""
        return (self.dev_addr, self.nwk_s_key, self.app_s_key)


def _hex_field(
    entry: dict[str, Any], name: str, size: int, where: str, *, secret: bool = False
) -> bytes | None:
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DeviceListError(f"{where}: {name} must be a hex string")
    text = value.replace(":", "").replace("-", "").replace(" ", "")
    if len(text) != 2 * size or not _HEX.match(text):
        shown = "" if secret else f" ({value!r})"
        raise DeviceListError(f"{where}: {name} must be {2 * size} hex digits{shown}")
    return bytes.fromhex(text)


_FIELDS = {
    "dev_eui",
    "join_eui",
    "app_eui",
    "app_key",
    "dev_addr",
    "nwk_s_key",
    "app_s_key",
    "kind",
    "fw",
    "name",
}


def parse_device(entry: Any, where: str) -> Device:
    if not isinstance(entry, dict):
        raise DeviceListError(f"{where}: must be a table/object")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise DeviceListError(
            f"{where}: unknown field {unknown[0]!r}; known: {', '.join(sorted(_FIELDS))}"
        )
    dev_eui = _hex_field(entry, "dev_eui", 8, where)
    if dev_eui is None:
        raise DeviceListError(f"{where}: dev_eui is missing")
    where = f"{where} (dev_eui {dev_eui.hex()})"
    kind = entry.get("kind")
    if not isinstance(kind, str) or not kind:
        raise DeviceListError(f'{where}: kind is missing (e.g. "air_quality")')
    join_eui = _hex_field(entry, "join_eui", 8, where) or _hex_field(entry, "app_eui", 8, where)
    app_key = _hex_field(entry, "app_key", 16, where, secret=True)
    dev_addr_raw = _hex_field(entry, "dev_addr", 4, where)
    nwk = _hex_field(entry, "nwk_s_key", 16, where, secret=True)
    app = _hex_field(entry, "app_s_key", 16, where, secret=True)
    abp = (dev_addr_raw, nwk, app)
    if app_key is not None and any(x is not None for x in abp):
        raise DeviceListError(
            f"{where}: give either app_key (OTAA) or dev_addr + nwk_s_key + app_s_key (ABP)"
        )
    if app_key is None and any(x is None for x in abp):
        raise DeviceListError(
            f"{where}: needs app_key (OTAA) or all of dev_addr, nwk_s_key, app_s_key (ABP)"
        )
    for name in ("fw", "name"):
        if entry.get(name) is not None and not isinstance(entry[name], str):
            raise DeviceListError(f"{where}: {name} must be a string")
    return Device(
        dev_eui=dev_eui,
        kind=kind,
        join_eui=join_eui if app_key is not None else None,
        app_key=app_key,
        dev_addr=int.from_bytes(dev_addr_raw, "big") if dev_addr_raw else None,
        nwk_s_key=nwk,
        app_s_key=app,
        fw=entry.get("fw"),
        name=entry.get("name"),
    )


def load_devices(path: str | Path) -> dict[bytes, Device]:
    """Reads a device file (`.json`: {"devices": [...]} or a list; otherwise TOML with
    [[devices]] tables). Returns DevEUI -> Device. Raises DeviceListError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DeviceListError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        raw: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        # The parsers' messages quote no content beyond a position, so no key can leak here.
        raise DeviceListError(
            f"{path}: cannot parse ({type(exc).__name__} at {_position(exc)})"
        ) from None
    entries = raw.get("devices", []) if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise DeviceListError(f"{path}: expected a list of devices")
    devices: dict[bytes, Device] = {}
    abp_addrs: dict[int, bytes] = {}
    for i, entry in enumerate(entries):
        device = parse_device(entry, f"{path.name} device #{i + 1}")
        if device.dev_eui in devices:
            raise DeviceListError(
                f"{path.name} device #{i + 1}: dev_eui {device.dev_eui.hex()} listed twice"
            )
        if device.dev_addr is not None:
            if device.dev_addr in abp_addrs:
                raise DeviceListError(
                    f"{path.name} device #{i + 1}: dev_addr {device.dev_addr:08x} also used by "
                    f"{abp_addrs[device.dev_addr].hex()}"
                )
            abp_addrs[device.dev_addr] = device.dev_eui
        devices[device.dev_eui] = device
    return devices


def _position(exc: Exception) -> str:
    lineno = getattr(exc, "lineno", None)
    return f"line {lineno}" if lineno else "unknown position"


class DeviceFile:
    """A device file that is re-read when it changes (mtime/size) or on request (SIGHUP)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None

    def _current_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        return self._current_stamp() != self._stamp

    def load(self) -> dict[bytes, Device]:
        # The stamp is taken first and kept even when the file is bad: a broken file is
        # reported once, and read again on its next change (or an explicit reload).
        self._stamp = self._current_stamp()
        return load_devices(self.path)
