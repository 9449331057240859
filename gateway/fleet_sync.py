"""Keeps the gateway's device list in step with the fleet.

GET /api/v1/gateways/<id>/sync with the gateway's own API token returns its devices and
keys; they are written atomically into the device file, which stays the gateway's offline
cache: a fleet that cannot be reached leaves the last good list in force, and the gateway
keeps receiving. Decommissioned devices are left out, so their frames are rejected.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class FleetSyncError(RuntimeError):
    """The fleet did not answer with a usable device list; `reason` is short, for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class SyncResult:
    devices: int
    changed: bool


def fetch(url: str, gateway_id: str, token: str, *, timeout: float = 10.0) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/v1/gateways/{gateway_id}/sync",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        reason = "unauthorized" if exc.code in (401, 403) else f"http_{exc.code}"
        raise FleetSyncError(
            reason, f"the fleet answered {exc.code} for gateway {gateway_id}"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise FleetSyncError("unreachable", str(getattr(exc, "reason", exc))) from None
    except ValueError as exc:
        raise FleetSyncError("bad_body", f"not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("devices"), list):
        raise FleetSyncError("bad_body", "no device list in the answer")
    return body


def device_file_content(sync: dict[str, Any]) -> str:
    """The device file (JSON) for a sync answer: live devices only, sorted, stable bytes."""
    devices = []
    for d in sync["devices"]:
        if d.get("state") == "decommissioned":
            continue
        devices.append(
            {"dev_eui": d["dev_eui"], "join_eui": d["join_eui"], "app_key": d["app_key"],
             "kind": d["kind"]}
        )
    devices.sort(key=lambda d: d["dev_eui"])
    return json.dumps({"source": "fleet", "devices": devices}, indent=1) + "\n"


def write_if_changed(path: Path, content: str) -> bool:
    try:
        if path.read_text() == content:
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)  # keys inside
    os.replace(tmp, path)
    return True


def sync_once(url: str, gateway_id: str, token: str, devices_file: Path) -> SyncResult:
    body = fetch(url, gateway_id, token)
    content = device_file_content(body)
    count = content.count('"dev_eui"')
    return SyncResult(count, write_if_changed(devices_file, content))


async def keep_in_sync(
    *,
    url: str,
    gateway_id: str,
    token: str,
    devices_file: Path,
    interval_s: float,
    on_change: Callable[[], object],
    on_error: Callable[[str], object],
) -> None:
    """Syncs now and every `interval_s` until cancelled; the HTTP call runs off the loop."""
    while True:
        try:
            result = await asyncio.to_thread(sync_once, url, gateway_id, token, devices_file)
        except FleetSyncError as exc:
            on_error(exc.reason)
            log.warning("fleet device sync failed (%s); keeping the current device list", exc)
        else:
            if result.changed:
                log.info("fleet device sync: %d devices, list changed", result.devices)
                on_change()
        await asyncio.sleep(interval_s)
