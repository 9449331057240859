"""REST API: registry, provisioning, roles, audit log — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from allmende.fleet.ingest import ReadingIn, ReadingStore
from allmende.fleet.models import Role
from allmende.fleet.settings import FleetSettings
from fastapi.testclient import TestClient


def make_gateway(client: TestClient, admin: dict[str, str], gateway_id: str) -> dict:
    r = client.post("/api/v1/gateways", json={"gateway_id": gateway_id, "name": gateway_id},
                    headers=admin)
    assert r.status_code == 201, r.text
    return r.json()


def make_device(client: TestClient, headers: dict[str, str], **fields: object) -> dict:
    r = client.post("/api/v1/devices", json=fields, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_health_needs_no_token(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_every_api_route_refuses_requests_without_a_valid_token(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    checked = 0
    for path, methods in paths.items():
        if not path.startswith("/api/"):
            continue
        concrete = (path.replace("{dev_eui}", "0011223344556677")
                    .replace("{gateway_id}", "gw-x").replace("{site_id}", "1"))
        for method in methods:
            for headers in ({}, {"Authorization": "Bearer alm_wrong"}):
                r = client.request(method.upper(), concrete, headers=headers, json={})
                assert r.status_code == 401, (method, path, r.status_code)
                checked += 1
    assert checked > 20


def test_device_provisioning_from_mac_with_generated_app_key(
        client: TestClient, admin: dict[str, str], engine: sa.Engine) -> None:
    make_gateway(client, admin, "gw-a")
    created = make_device(client, admin, mac="24:6f:28:aa:bb:cc", home_gateway_id="gw-a",
                          board="heltec-wifi-lora-32-v3", tags=["pilot"])
    device, bundle = created["device"], created["bundle"]
    assert device["dev_eui"] == "246F28FFFEAABBCC"
    assert device["state"] == "provisioned"
    assert len(bundle["app_key"]) == 32 and int(bundle["app_key"], 16) >= 0
    # The same bundle again on request, and the key is not stored in the clear.
    again = client.get(f"/api/v1/devices/{device['dev_eui']}/bundle", headers=admin).json()
    assert again["app_key"] == bundle["app_key"]
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT app_key_encrypted FROM device_key")).scalar_one()
    assert bundle["app_key"] not in stored.upper()
    assert bytes.fromhex(bundle["app_key"]).hex() not in stored.lower()
    # Duplicates and dangling references are refused, not stored.
    assert client.post("/api/v1/devices", json={"mac": "246F28AABBCC"},
                       headers=admin).status_code == 409
    assert client.post("/api/v1/devices", json={"dev_eui": "0011223344556677",
                                                "home_gateway_id": "nope"},
                       headers=admin).status_code == 422
    assert client.post("/api/v1/devices", json={"dev_eui": "xyz"}, headers=admin).status_code == 422


def test_sites_and_device_update(client: TestClient, admin: dict[str, str]) -> None:
    site = client.post("/api/v1/sites", json={"name": "Wohnblock Nord", "kind": "building",
                                              "latitude": 49.87, "longitude": 8.65},
                       headers=admin).json()
    dev = make_device(client, admin, dev_eui="00-11-22-33-44-55-66-77")["device"]
    r = client.patch(f"/api/v1/devices/{dev['dev_eui']}",
                     json={"site_id": site["id"], "flat_ref": "N-3-12", "name": None},
                     headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["site_id"] == site["id"] and r.json()["flat_ref"] == "N-3-12"
    listed = client.get("/api/v1/devices", params={"site_id": site["id"]}, headers=admin).json()
    assert [d["dev_eui"] for d in listed] == ["0011223344556677"]
    assert client.patch("/api/v1/sites/999", json={"name": "x"}, headers=admin).status_code == 404


def test_decommission_and_replace_keep_history(client: TestClient, admin: dict[str, str],
                                               engine: sa.Engine,
                                               settings: FleetSettings) -> None:
    make_gateway(client, admin, "gw-a")
    old = make_device(client, admin, dev_eui="0011223344556677", home_gateway_id="gw-a",
                      flat_ref="S-1-1")["device"]
    store = ReadingStore(engine, settings)
    store.store([reading("0011223344556677", fcnt=1)])
    r = client.post("/api/v1/devices/0011223344556677/replace",
                    json={"mac": "AABBCCDDEEFF"}, headers=admin)
    assert r.status_code == 201, r.text
    new = r.json()["device"]
    assert new["dev_eui"] == "AABBCCFFFEDDEEFF" and new["replaces"] == old["dev_eui"]
    assert new["flat_ref"] == "S-1-1" and new["home_gateway_id"] == "gw-a"
    old_now = client.get(f"/api/v1/devices/{old['dev_eui']}", headers=admin).json()
    assert old_now["state"] == "decommissioned" and old_now["replaced_by"] == new["dev_eui"]
    history = client.get("/api/v1/readings", params={"device": old["dev_eui"]},
                         headers=admin).json()
    assert len(history["items"]) == 1
    # Readings from the decommissioned device are refused from now on.
    result = store.store([reading("0011223344556677", fcnt=2)])
    assert (result.stored, result.rejected) == (0, 1)


def reading(dev: str, *, fcnt: int, quantity: str = "PM2.5", value: float = 12.5,
            time: datetime | None = None, gateway: str = "gw-a",
            flags: list[str] | None = None) -> ReadingIn:
    t = time or datetime(2026, 11, 21, 23, 40, tzinfo=UTC) + timedelta(seconds=fcnt)
    return ReadingIn(key=f"{dev}/26011234-0001/{fcnt}/{quantity}", device=dev,
                     kind="air_quality", quantity=quantity, value=value, unit="ug/m3", time=t,
                     fcnt=fcnt, session="26011234-0001", gateway=gateway, rssi=-61.0, snr=9.5,
                     flags=flags or [], fw="0.1.0")


def test_readings_by_time_range_with_pagination(client: TestClient, admin: dict[str, str],
                                                engine: sa.Engine,
                                                settings: FleetSettings) -> None:
    make_device(client, admin, dev_eui="0011223344556677")
    ReadingStore(engine, settings).store([reading("0011223344556677", fcnt=i, value=i)
                                          for i in range(25)])
    start = datetime(2026, 11, 21, 23, 40, 5, tzinfo=UTC)
    end = start + timedelta(seconds=15)
    seen: list[float] = []
    after = None
    while True:
        params: dict[str, object] = {"device": "0011223344556677", "start": start.isoformat(),
                                     "end": end.isoformat(), "limit": 4}
        if after is not None:
            params["after"] = after
        page = client.get("/api/v1/readings", params=params, headers=admin).json()
        seen += [item["value"] for item in page["items"]]
        after = page["next_cursor"]
        if after is None:
            break
    assert seen == [float(i) for i in range(5, 20)]
    dev = client.get("/api/v1/devices/0011223344556677", headers=admin).json()
    assert dev["state"] == "active" and dev["firmware_version"] == "0.1.0"
    assert dev["last_seen"].startswith("2026-11-21T23:40:24")


def test_roles(client: TestClient, admin: dict[str, str], token_for) -> None:  # noqa: ANN001
    gw_a = make_gateway(client, admin, "gw-a")
    make_gateway(client, admin, "gw-b")
    technician = token_for(Role.technician)
    platform = token_for(Role.platform)
    operator = token_for(Role.operator)
    gateway_a = {"Authorization": f"Bearer {gw_a['api_token']}"}

    # A technician provisions devices but cannot create or change gateways.
    make_device(client, technician, dev_eui="00000000000000A1", home_gateway_id="gw-a")
    make_device(client, technician, dev_eui="00000000000000B1", home_gateway_id="gw-b")
    assert client.post("/api/v1/gateways", json={"gateway_id": "gw-c"},
                       headers=technician).status_code == 403
    assert client.patch("/api/v1/gateways/gw-a", json={"name": "x"},
                        headers=technician).status_code == 403
    assert client.patch("/api/v1/gateways/gw-a", json={"name": "Nord"},
                        headers=operator).status_code == 200
    # The platform reads but never provisions, and never sees keys.
    assert client.get("/api/v1/readings", headers=platform).status_code == 200
    assert client.post("/api/v1/devices", json={"dev_eui": "00000000000000C1"},
                       headers=platform).status_code == 403
    assert client.get("/api/v1/devices/00000000000000A1/bundle",
                      headers=platform).status_code == 403
    # Only admins manage users and read the audit log.
    assert client.get("/api/v1/audit", headers=operator).status_code == 403
    assert client.post("/api/v1/users", json={"name": "x", "role": "admin"},
                       headers=operator).status_code == 403
    # A gateway sees only its own devices, and syncs only its own keys.
    listed = client.get("/api/v1/devices", headers=gateway_a).json()
    assert [d["dev_eui"] for d in listed] == ["00000000000000A1"]
    assert client.get("/api/v1/devices/00000000000000B1", headers=gateway_a).status_code == 404
    assert client.get("/api/v1/gateways/gw-b/sync", headers=gateway_a).status_code == 403
    assert client.get("/api/v1/gateways/gw-a/sync", headers=technician).status_code == 403
    sync = client.get("/api/v1/gateways/gw-a/sync", headers=gateway_a)
    assert sync.status_code == 200
    assert [d["dev_eui"] for d in sync.json()["devices"]] == ["00000000000000A1"]
    bundle = client.get("/api/v1/devices/00000000000000A1/bundle", headers=admin).json()
    assert sync.json()["devices"][0]["app_key"] == bundle["app_key"]
    assert [g["gateway_id"] for g in client.get("/api/v1/gateways",
                                                 headers=gateway_a).json()] == ["gw-a"]


def test_audit_log_is_a_hash_chain(client: TestClient, admin: dict[str, str],
                                   engine: sa.Engine) -> None:
    make_gateway(client, admin, "gw-a")
    make_device(client, admin, dev_eui="0011223344556677", home_gateway_id="gw-a")
    client.post("/api/v1/devices/0011223344556677/decommission", headers=admin)
    entries = client.get("/api/v1/audit", headers=admin).json()
    actions = [e["action"] for e in entries]
    assert {"gateway.create", "device.create", "device.decommission"} <= set(actions)
    assert all(e["prev_hash"] == p["hash"] for p, e in zip(entries, entries[1:], strict=False))
    assert client.get("/api/v1/audit/verify", headers=admin).json()["ok"] is True
    # Rewriting history is detected.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_entry SET actor = 'mallory' WHERE action = "
                             "'device.create'"))
    verdict = client.get("/api/v1/audit/verify", headers=admin).json()
    assert verdict["ok"] is False
    bad = next(e["id"] for e in entries if e["action"] == "device.create")
    assert verdict["first_bad_id"] == bad
