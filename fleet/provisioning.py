"""Provisioning: devices with generated AppKeys, gateways with broker and API credentials,
users with tokens. Every change is audited in the same transaction."""

from __future__ import annotations

import secrets
from typing import Any

from sqlmodel import Session, SQLModel, select

from . import audit
from .models import (
    ApiToken,
    Device,
    DeviceCreate,
    DeviceKey,
    DeviceKeys,
    DeviceReplace,
    DeviceState,
    Gateway,
    GatewayCreate,
    GatewayCredentials,
    GatewayPublic,
    GatewaySync,
    ProvisioningBundle,
    Role,
    Site,
    SyncDevice,
    User,
    UserPublic,
    UserWithToken,
)
from .security import KeyVault, hash_token, mosquitto_password_hash, new_app_key, new_token


class ProvisioningError(Exception):
    """A request that conflicts with the registry; `status` is the HTTP status to answer."""

    def __init__(self, message: str, *, status: int = 409, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields


def dev_eui_from_mac(mac_hex: str) -> str:
    """EUI-64 from a 6-byte MAC the IEEE way: OUI ‖ FFFE ‖ NIC."""
    return (mac_hex[:6] + "FFFE" + mac_hex[6:]).upper()


def topic_prefix(gateway_id: str) -> str:
    return f"allmende/gw/{gateway_id}/"


def apply_changes(row: SQLModel, changes: dict[str, Any]) -> None:
    """Apply a PATCH; a null for a column that cannot be null means "leave it" (not a 500)."""
    columns = row.__table__.c  # type: ignore[attr-defined]
    row.sqlmodel_update({k: v for k, v in changes.items()
                         if v is not None or columns[k].nullable})


def check_refs(session: Session, *, site_id: int | None, gateway_id: str | None) -> None:
    if site_id is not None and session.get(Site, site_id) is None:
        raise ProvisioningError(f"site {site_id} does not exist", status=422,
                                fields=("site_id",))
    if gateway_id is not None and session.get(Gateway, gateway_id) is None:
        raise ProvisioningError(f"gateway '{gateway_id}' does not exist", status=422,
                                fields=("home_gateway_id",))


def create_device(session: Session, vault: KeyVault, data: DeviceCreate, *,
                  actor: str) -> tuple[Device, str]:
    """Register a device and generate its AppKey; returns the device and the clear AppKey."""
    if data.dev_eui is None and data.mac is None:
        raise ProvisioningError("give dev_eui or the board's mac", status=422)
    dev_eui = data.dev_eui or dev_eui_from_mac(data.mac or "")
    if session.exec(select(Device).where(Device.dev_eui == dev_eui)).first() is not None:
        raise ProvisioningError(f"device {dev_eui} already exists")
    check_refs(session, site_id=data.site_id, gateway_id=data.home_gateway_id)
    device = Device.model_validate(data, update={"dev_eui": dev_eui})
    session.add(device)
    session.flush()
    app_key = new_app_key()
    assert device.id is not None
    session.add(DeviceKey(device_id=device.id, join_eui=data.join_eui,
                          app_key_encrypted=vault.encrypt(dev_eui, app_key)))
    audit.record(session, actor=actor, action="device.create", entity="device",
                 entity_id=dev_eui, data=data.model_dump(exclude={"mac"}, mode="json"))
    return device, app_key


def device_keys(session: Session, vault: KeyVault, device: Device) -> DeviceKeys:
    key = session.get(DeviceKey, device.id)
    if key is None:
        raise ProvisioningError(f"device {device.dev_eui} has no key", status=404)
    return DeviceKeys(dev_eui=device.dev_eui, join_eui=key.join_eui,
                      app_key=vault.decrypt(device.dev_eui, key.app_key_encrypted))


def bundle(session: Session, vault: KeyVault, device: Device, *, actor: str) -> ProvisioningBundle:
    keys = device_keys(session, vault, device)
    audit.record(session, actor=actor, action="device.bundle", entity="device",
                 entity_id=device.dev_eui)
    return ProvisioningBundle(dev_eui=keys.dev_eui, join_eui=keys.join_eui, app_key=keys.app_key,
                              kind=device.kind, board=device.board,
                              home_gateway_id=device.home_gateway_id)


def decommission(session: Session, device: Device, *, actor: str) -> Device:
    if device.state == DeviceState.decommissioned:
        return device
    device.state = DeviceState.decommissioned
    session.add(device)
    audit.record(session, actor=actor, action="device.decommission", entity="device",
                 entity_id=device.dev_eui)
    return device


def replace(session: Session, vault: KeyVault, old: Device, data: DeviceReplace, *,
            actor: str) -> tuple[Device, str]:
    """Swap hardware: a new device takes over the old one's place (site, flat or bay, gateway,
    tags); the old one is decommissioned and keeps its readings, linked both ways."""
    if old.state == DeviceState.decommissioned:
        raise ProvisioningError(f"device {old.dev_eui} is already decommissioned")
    key = session.get(DeviceKey, old.id)
    create = DeviceCreate(
        **{name: getattr(old, name) for name in (
            "name", "kind", "board", "site_id", "latitude", "longitude", "flat_ref",
            "parking_bay_ref", "home_gateway_id", "tags")},
        dev_eui=data.dev_eui, mac=data.mac, join_eui=key.join_eui if key else "0" * 16,
    )
    new, app_key = create_device(session, vault, create, actor=actor)
    new.replaces = old.dev_eui
    old.replaced_by = new.dev_eui
    decommission(session, old, actor=actor)
    audit.record(session, actor=actor, action="device.replace", entity="device",
                 entity_id=old.dev_eui, data={"replaced_by": new.dev_eui})
    session.add_all([old, new])
    return new, app_key


def create_user(session: Session, *, name: str, role: Role, actor: str,
                gateway_id: str | None = None, token: str | None = None) -> UserWithToken:
    if session.exec(select(User).where(User.name == name)).first() is not None:
        raise ProvisioningError(f"user '{name}' already exists")
    user = User(name=name, role=role, gateway_id=gateway_id)
    session.add(user)
    session.flush()
    token = token or new_token()
    assert user.id is not None
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
    audit.record(session, actor=actor, action="user.create", entity="user", entity_id=name,
                 data={"role": role.value, "gateway_id": gateway_id})
    return UserWithToken(user=UserPublic.model_validate(user), token=token)


def ensure_admin_token(session: Session, token: str) -> None:
    """Make `token` a valid admin token (idempotent): the fresh-install bootstrap."""
    found = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if found is not None:
        return
    name = "admin"
    n = 1
    while session.exec(select(User).where(User.name == name)).first() is not None:
        n += 1
        name = f"admin{n}"
    create_user(session, name=name, role=Role.admin, actor="bootstrap", token=token)
    session.commit()


def create_gateway(session: Session, data: GatewayCreate, *, actor: str) -> GatewayCredentials:
    if session.get(Gateway, data.gateway_id) is not None:
        raise ProvisioningError(f"gateway '{data.gateway_id}' already exists")
    check_refs(session, site_id=data.site_id, gateway_id=None)
    password = secrets.token_urlsafe(24)
    gateway = Gateway.model_validate(data, update={
        "mqtt_password_hash": mosquitto_password_hash(password)})
    session.add(gateway)
    session.flush()
    audit.record(session, actor=actor, action="gateway.create", entity="gateway",
                 entity_id=data.gateway_id, data=data.model_dump(mode="json"))
    user = create_user(session, name=f"gateway:{data.gateway_id}", role=Role.gateway,
                       gateway_id=data.gateway_id, actor=actor)
    return GatewayCredentials(gateway=GatewayPublic.model_validate(gateway),
                              mqtt_username=data.gateway_id, mqtt_password=password,
                              api_token=user.token, topic_prefix=topic_prefix(data.gateway_id))


def rotate_gateway_password(session: Session, gateway: Gateway, *, actor: str) -> str:
    password = secrets.token_urlsafe(24)
    gateway.mqtt_password_hash = mosquitto_password_hash(password)
    session.add(gateway)
    audit.record(session, actor=actor, action="gateway.rotate_mqtt", entity="gateway",
                 entity_id=gateway.gateway_id)
    return password


def gateway_sync(session: Session, vault: KeyVault, gateway_id: str) -> GatewaySync:
    """The devices a gateway serves (home gateway = it), with keys, for its session checks."""
    devices = session.exec(
        select(Device).where(Device.home_gateway_id == gateway_id,
                             Device.state != DeviceState.decommissioned).order_by(Device.dev_eui)
    ).all()
    out = []
    for device in devices:
        keys = device_keys(session, vault, device)
        out.append(SyncDevice(dev_eui=device.dev_eui, join_eui=keys.join_eui,
                              app_key=keys.app_key, kind=device.kind, state=device.state))
    return GatewaySync(gateway_id=gateway_id, devices=out)
