"""The generated password file and ACL, enforced by a real Mosquitto."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
import sqlalchemy as sa
from allmende.fleet.broker import write_broker_files
from allmende.fleet.db import make_engine, migrate
from allmende.fleet.models import Gateway, GatewayCreate, GatewayCredentials
from allmende.fleet.provisioning import create_gateway, rotate_gateway_password
from sqlmodel import Session

from tests.fixtures.services import Broker, run_mosquitto

FLEET_USER, FLEET_PASSWORD = "fleet", "fleet-service-password"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def gateways(registry: sa.Engine) -> dict[str, GatewayCredentials]:
    with Session(registry) as session:
        creds = {gw: create_gateway(session, GatewayCreate(gateway_id=gw), actor="test")
                 for gw in ("gw-a", "gw-b")}
        session.commit()
    return creds


@pytest.fixture
def secured_broker(tmp_path: Path, registry: sa.Engine,
                   gateways: dict[str, GatewayCredentials]) -> Iterator[Broker]:
    with Session(registry) as session:
        files = write_broker_files(session, tmp_path / "broker",
                                   service_users={FLEET_USER: FLEET_PASSWORD})
    with run_mosquitto(tmp_path / "mosquitto", config_lines=[
            "allow_anonymous false", f"password_file {files.password_file}",
            f"acl_file {files.acl_file}"]) as broker:
        yield broker


def client(broker: Broker, user: str | None, password: str | None) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", broker.port, username=user, password=password,
                          protocol=aiomqtt.ProtocolVersion.V5)


def test_gateway_cannot_publish_under_another_prefix(
        secured_broker: Broker, gateways: dict[str, GatewayCredentials]) -> None:
    a = gateways["gw-a"]

    async def scenario() -> list[str]:
        async with client(secured_broker, FLEET_USER, FLEET_PASSWORD) as fleet, \
                client(secured_broker, a.mqtt_username, a.mqtt_password) as gw:
            await fleet.subscribe("$share/fleet/allmende/gw/+/up", qos=1)
            await fleet.subscribe("allmende/gw/+/status", qos=1)
            # The forbidden one first: the broker keeps one client's order, so once the
            # allowed messages are in, the forbidden one would have been too.
            await gw.publish("allmende/gw/gw-b/up", b'{"spoofed": true}', qos=1)
            await gw.publish("allmende/other", b"x", qos=1)
            await gw.publish("allmende/gw/gw-a/up", b'{"gateway": "gw-a"}', qos=1)
            await gw.publish("allmende/gw/gw-a/status", b'{"state": "online"}', qos=1)
            seen = []
            async for message in fleet.messages:
                seen.append(message.topic.value)
                if len(seen) == 2:
                    return seen
        return []

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == [
        "allmende/gw/gw-a/up", "allmende/gw/gw-a/status"]


def test_gateway_reads_only_its_own_downlink_topic(
        secured_broker: Broker, gateways: dict[str, GatewayCredentials]) -> None:
    a = gateways["gw-a"]

    async def scenario() -> bytes:
        async with client(secured_broker, a.mqtt_username, a.mqtt_password) as gw, \
                client(secured_broker, FLEET_USER, FLEET_PASSWORD) as fleet:
            # Mosquitto 2.0 grants the subscription and filters on delivery (ACL "read").
            await gw.subscribe("allmende/gw/gw-b/down", qos=1)
            await gw.subscribe("allmende/gw/gw-a/down", qos=1)
            await fleet.publish("allmende/gw/gw-b/down", b"not for a", qos=1)
            await fleet.publish("allmende/gw/gw-a/down", b"for a", qos=1)
            async for message in gw.messages:
                assert isinstance(message.payload, bytes)
                return message.payload
        raise AssertionError("no downlink")

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == b"for a"


@pytest.mark.parametrize("user,password", [(None, None), ("gw-a", "wrong"), ("nobody", "x")])
def test_clients_without_valid_credentials_are_refused(secured_broker: Broker,
                                                       user: str | None,
                                                       password: str | None) -> None:
    async def connect() -> None:
        async with client(secured_broker, user, password):
            pass

    with pytest.raises(aiomqtt.MqttError):
        asyncio.run(connect())


def test_rotated_password_replaces_the_old_one_after_reload(
        tmp_path: Path, secured_broker: Broker, registry: sa.Engine,
        gateways: dict[str, GatewayCredentials]) -> None:
    old = gateways["gw-a"].mqtt_password
    with Session(registry) as session:
        gateway = session.get(Gateway, "gw-a")
        assert gateway is not None
        new = rotate_gateway_password(session, gateway, actor="test")
        session.commit()
        write_broker_files(session, tmp_path / "broker", service_users={FLEET_USER: FLEET_PASSWORD})
    secured_broker.reload()

    async def accepted(password: str) -> bool:
        try:
            async with client(secured_broker, "gw-a", password):
                return True
        except aiomqtt.MqttError:
            return False

    deadline = time.monotonic() + 20
    while asyncio.run(accepted(old)):
        assert time.monotonic() < deadline, "the broker still accepts the old password"
        time.sleep(0.1)
    assert asyncio.run(accepted(new))
