"""Readings of a flat's meter: who may read them, and under which name (the flat's pseudonym)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from allmende.fleet.ingest import ReadingStore
from allmende.fleet.models import Role
from allmende.fleet.pseudonym import flat_pseudonym
from allmende.fleet.settings import FleetSettings
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.fixtures.fleet_records import provision_device, uplink

T = datetime(2026, 11, 21, 23, 40, tzinfo=UTC)
METER, SENSOR, FLAT = "00000000000000E1", "00000000000000A1", "N-3-12"


@pytest.fixture
def stored(settings: FleetSettings, engine: sa.Engine) -> None:
    provision_device(engine, settings, METER, kind="energy", flat_ref=FLAT)
    provision_device(engine, settings, SENSOR)
    ReadingStore(engine, settings).store(
        uplink(METER, 7, T, {"active_power": (412.0, "W"), "energy_import": (1234567, "W.h")},
               kind="energy")
        + uplink(SENSOR, 7, T, {"PM2.5": (9.0, "ug/m3")}))


@pytest.mark.usefixtures("stored")
@pytest.mark.parametrize("role", [Role.operator, Role.technician, Role.platform])
def test_only_an_admin_reads_a_flats_readings(client: TestClient, token_for, role: Role) -> None:  # noqa: ANN001
    headers = token_for(role)
    listed = client.get("/api/v1/readings", headers=headers)
    assert listed.status_code == 200
    assert [r["device"] for r in listed.json()["items"]] == [SENSOR]
    asked = client.get("/api/v1/readings", params={"device": METER}, headers=headers)
    assert asked.status_code == 403 and "personal data" in asked.json()["detail"]


@pytest.mark.usefixtures("stored")
def test_a_gateway_reads_no_readings(client: TestClient, token_for) -> None:  # noqa: ANN001
    assert client.get("/api/v1/readings", headers=token_for(Role.gateway)).status_code == 403


@pytest.mark.usefixtures("stored")
def test_an_admin_sees_the_flat_under_its_pseudonym(
        client: TestClient, admin: dict[str, str], settings: FleetSettings) -> None:
    name = flat_pseudonym(settings.pseudonym_key, FLAT)
    r = client.get("/api/v1/readings", params={"device": METER}, headers=admin)
    assert r.status_code == 200
    items = r.json()["items"]
    assert {(i["device"], i["quantity"], i["value"]) for i in items} == {
        (name, "active_power", 412.0), (name, "energy_import", 1234567)}
    # Nothing in the answer names the meter or the flat.
    assert METER not in r.text and FLAT not in r.text
    # The pseudonym is a handle an admin can ask by, with the same answer.
    again = client.get("/api/v1/readings", params={"device": name}, headers=admin).json()
    assert again["items"] == items
    everything = client.get("/api/v1/readings", headers=admin)
    assert METER not in everything.text and len(everything.json()["items"]) == 3


def test_pseudonyms_are_keyed_stable_and_short() -> None:
    key, other = SecretStr("key-one-0123"), SecretStr("key-two-0123")
    name = flat_pseudonym(key, FLAT)
    assert name == flat_pseudonym(key, FLAT) and name.startswith("flat-") and len(name) == 16
    assert flat_pseudonym(other, FLAT) != name
    assert flat_pseudonym(key, "N-3-13") != name
    assert FLAT not in name


def test_the_pseudonym_key_and_the_platform_token_stay_out_of_reprs() -> None:
    settings = FleetSettings(pseudonym_key="pseudo-key-4711", ngsi_ld_token="token-4711")
    shown = repr(settings) + str(settings) + str(settings.model_dump())
    assert "4711" not in shown
