"""Gateways: registry, credentials (MQTT + API token) and the device-sync feed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlmodel import SQLModel, col, select

from ... import audit, provisioning
from ...models import (
    MAX_ID,
    Gateway,
    GatewayCreate,
    GatewayCredentials,
    GatewayPublic,
    GatewaySync,
    GatewayUpdate,
    Role,
    User,
)
from ..deps import FleetManager, RegistryReader, SessionDep, VaultDep

router = APIRouter(prefix="/gateways", tags=["gateways"])

GatewayId = Annotated[str, Path(min_length=1, max_length=63)]


class MqttCredentials(SQLModel):
    mqtt_username: str
    mqtt_password: str


def load_gateway(session: SessionDep, gateway_id: str, user: User) -> Gateway:
    gateway = session.get(Gateway, gateway_id)
    if gateway is None or (user.role == Role.gateway and user.gateway_id != gateway_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"gateway '{gateway_id}' not found")
    return gateway


@router.get("", response_model=list[GatewayPublic])
def list_gateways(
    session: SessionDep,
    user: RegistryReader,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Gateway]:
    query = select(Gateway)
    if user.role == Role.gateway:
        query = query.where(Gateway.gateway_id == user.gateway_id)
    return list(session.exec(query.order_by(col(Gateway.gateway_id)).offset(offset).limit(limit)))


@router.post("", response_model=GatewayCredentials, status_code=status.HTTP_201_CREATED)
def create_gateway(data: GatewayCreate, session: SessionDep,
                   user: FleetManager) -> GatewayCredentials:
    """Register a gateway; the answer holds its MQTT password and API token (shown once)."""
    credentials = provisioning.create_gateway(session, data, actor=user.name)
    session.commit()
    return credentials


@router.get("/{gateway_id}", response_model=GatewayPublic)
def get_gateway(gateway_id: GatewayId, session: SessionDep, user: RegistryReader) -> Gateway:
    return load_gateway(session, gateway_id, user)


@router.patch("/{gateway_id}", response_model=GatewayPublic)
def update_gateway(gateway_id: GatewayId, data: GatewayUpdate, session: SessionDep,
                   user: FleetManager) -> Gateway:
    gateway = load_gateway(session, gateway_id, user)
    changes = data.model_dump(exclude_unset=True)
    provisioning.check_refs(session, site_id=changes.get("site_id"), gateway_id=None)
    provisioning.apply_changes(gateway, changes)
    session.add(gateway)
    audit.record(session, actor=user.name, action="gateway.update", entity="gateway",
                 entity_id=gateway_id, data=data.model_dump(exclude_unset=True, mode="json"))
    session.commit()
    session.refresh(gateway)
    return gateway


@router.post("/{gateway_id}/mqtt-credentials", response_model=MqttCredentials)
def rotate_mqtt_credentials(gateway_id: GatewayId, session: SessionDep,
                            user: FleetManager) -> MqttCredentials:
    """A new MQTT password (rewrite the broker's password file afterwards)."""
    gateway = load_gateway(session, gateway_id, user)
    password = provisioning.rotate_gateway_password(session, gateway, actor=user.name)
    session.commit()
    return MqttCredentials(mqtt_username=gateway_id, mqtt_password=password)


@router.get("/{gateway_id}/sync", response_model=GatewaySync)
def sync_devices(gateway_id: GatewayId, session: SessionDep, user: RegistryReader,
                 vault: VaultDep) -> GatewaySync:
    """The gateway's own devices with their keys; only that gateway (or an admin) may ask."""
    if not (user.role == Role.admin or
            (user.role == Role.gateway and user.gateway_id == gateway_id)):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "only the gateway itself or an admin may read its device keys")
    load_gateway(session, gateway_id, user)
    return provisioning.gateway_sync(session, vault, gateway_id)
