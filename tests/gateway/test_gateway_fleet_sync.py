"""The gateway's device list from the fleet: only its own devices, keys as the fleet holds
them, decommissioned ones dropped, and a fleet that cannot be reached changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from allmende.fleet.app import create_app
from allmende.fleet.models import DeviceCreate, GatewayCreate
from allmende.fleet.mosquitto import free_port
from allmende.fleet.provisioning import create_device, create_gateway
from allmende.fleet.security import KeyVault
from allmende.fleet.settings import FleetSettings
from allmende.gateway import fleet_sync
from allmende.gateway.devices import load_devices
from sqlmodel import Session

from tests.fixtures.services import serve_app


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], dict[str, str], FleetSettings]]:
    """A served fleet with two gateways: gw-a has two devices, gw-b one."""
    settings = FleetSettings(database_url=f"sqlite:///{tmp_path / 'fleet.db'}",
                             secret_key="sync-test-secret-0123", admin_token="alm_sync_admin")
    app = create_app(settings)
    engine = app.state.engine
    tokens, keys = {}, {}
    with Session(engine) as session:
        for gw in ("gw-a", "gw-b"):
            tokens[gw] = create_gateway(session, GatewayCreate(gateway_id=gw), actor="t").api_token
        for n, gw in enumerate(("gw-a", "gw-a", "gw-b")):
            device, app_key = create_device(
                session, KeyVault(settings.secret_key),
                DeviceCreate(dev_eui=f"70B3D57ED00000{n:02X}", home_gateway_id=gw), actor="t")
            keys[device.dev_eui] = app_key
        session.commit()
    with serve_app(app) as url:
        yield url, tokens, keys, settings


def test_a_gateway_gets_its_own_devices_and_keys(fleet, tmp_path: Path) -> None:
    url, tokens, keys, _ = fleet
    cache = tmp_path / "devices.json"
    result = fleet_sync.sync_once(url, "gw-a", tokens["gw-a"], cache)
    assert result.changed and result.devices == 2
    devices = load_devices(cache)  # the gateway's own loader accepts the file
    assert {d.dev_eui.hex().upper() for d in devices.values()} == {
        "70B3D57ED0000000", "70B3D57ED0000001"}
    for device in devices.values():
        assert device.app_key is not None
        assert device.app_key.hex().upper() == keys[device.dev_eui.hex().upper()].upper()
    assert cache.stat().st_mode & 0o077 == 0, "the cache holds keys: owner only"
    assert not fleet_sync.sync_once(url, "gw-a", tokens["gw-a"], cache).changed


def test_another_gateways_list_and_bad_tokens_are_refused(fleet, tmp_path: Path) -> None:
    url, tokens, _, _ = fleet
    cache = tmp_path / "devices.json"
    with pytest.raises(fleet_sync.FleetSyncError) as refused:
        fleet_sync.sync_once(url, "gw-b", tokens["gw-a"], cache)
    assert refused.value.reason == "unauthorized"
    with pytest.raises(fleet_sync.FleetSyncError) as bad:
        fleet_sync.sync_once(url, "gw-a", "alm_not-a-token", cache)
    assert bad.value.reason == "unauthorized"
    assert not cache.exists()


def test_decommissioned_devices_leave_and_a_dead_fleet_keeps_the_list(fleet, tmp_path) -> None:
    url, tokens, _, _ = fleet
    cache = tmp_path / "devices.json"
    fleet_sync.sync_once(url, "gw-a", tokens["gw-a"], cache)
    import httpx

    r = httpx.post(f"{url}/api/v1/devices/70B3D57ED0000001/decommission",
                   headers={"Authorization": "Bearer alm_sync_admin"})
    assert r.status_code == 200, r.text
    assert fleet_sync.sync_once(url, "gw-a", tokens["gw-a"], cache).devices == 1
    kept = cache.read_text()
    with pytest.raises(fleet_sync.FleetSyncError) as dead:
        fleet_sync.sync_once(f"http://127.0.0.1:{free_port()}", "gw-a", tokens["gw-a"], cache)
    assert dead.value.reason == "unreachable"
    assert cache.read_text() == kept
    assert json.loads(kept)["devices"][0]["dev_eui"] == "70B3D57ED0000000"
