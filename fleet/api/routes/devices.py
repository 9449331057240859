"""Devices: registry, provisioning (AppKey generated), bundle, decommission and replace."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlmodel import Field, Session, SQLModel, col, select

from ... import audit, provisioning
from ...models import (
    MAX_ID,
    Device,
    DeviceCreate,
    DeviceKind,
    DevicePublic,
    DeviceReplace,
    DeviceState,
    DeviceUpdate,
    ProvisioningBundle,
    Role,
    User,
)
from ..deps import DeviceWriter, RegistryReader, SessionDep, VaultDep

router = APIRouter(prefix="/devices", tags=["devices"])

DevEui = Annotated[str, Path(min_length=1, max_length=32, description="16 hex digits")]


class DeviceProvisioned(SQLModel):
    device: DevicePublic
    bundle: ProvisioningBundle


class FlashReport(SQLModel):
    """What `allmende node flash` found on the board: recorded in the audit log."""

    ok: bool
    board: str | None = Field(default=None, max_length=80)
    slot: str | None = Field(default=None, max_length=8)
    firmware: str | None = Field(default=None, max_length=40)
    micropython: str | None = Field(default=None, max_length=80)
    chip_id: str | None = Field(default=None, max_length=40)
    selftest: dict[str, Any] = Field(default_factory=dict)
    port: str | None = Field(default=None, max_length=200)
    time: str | None = Field(default=None, max_length=40)


class FlashRecorded(SQLModel):
    dev_eui: str
    ok: bool
    audit_id: int


def load_device(session: Session, dev_eui: str, user: User) -> Device:
    device = session.exec(select(Device).where(Device.dev_eui == dev_eui.upper())).first()
    # A gateway token must not even learn that other gateways' devices exist.
    if device is None or (user.role == Role.gateway and device.home_gateway_id != user.gateway_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"device {dev_eui} not found")
    return device


@router.get("", response_model=list[DevicePublic])
def list_devices(
    session: SessionDep,
    user: RegistryReader,
    state: DeviceState | None = None,
    kind: DeviceKind | None = None,
    site_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    gateway: Annotated[str | None, Query(max_length=63)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Device]:
    query = select(Device)
    if user.role == Role.gateway:
        query = query.where(Device.home_gateway_id == user.gateway_id)
    if state is not None:
        query = query.where(Device.state == state)
    if kind is not None:
        query = query.where(Device.kind == kind)
    if site_id is not None:
        query = query.where(Device.site_id == site_id)
    if gateway is not None:
        query = query.where(Device.home_gateway_id == gateway)
    return list(session.exec(query.order_by(col(Device.id)).offset(offset).limit(limit)).all())


@router.post("", response_model=DeviceProvisioned, status_code=status.HTTP_201_CREATED)
def create_device(data: DeviceCreate, session: SessionDep, user: DeviceWriter,
                  vault: VaultDep) -> DeviceProvisioned:
    device, _ = provisioning.create_device(session, vault, data, actor=user.name)
    bundle = provisioning.bundle(session, vault, device, actor=user.name)
    session.commit()
    session.refresh(device)
    return DeviceProvisioned(device=DevicePublic.model_validate(device), bundle=bundle)


@router.get("/{dev_eui}", response_model=DevicePublic)
def get_device(dev_eui: DevEui, session: SessionDep, user: RegistryReader) -> Device:
    return load_device(session, dev_eui, user)


@router.patch("/{dev_eui}", response_model=DevicePublic)
def update_device(dev_eui: DevEui, data: DeviceUpdate, session: SessionDep,
                  user: DeviceWriter) -> Device:
    device = load_device(session, dev_eui, user)
    changes = data.model_dump(exclude_unset=True)
    provisioning.check_refs(session, site_id=changes.get("site_id"),
                             gateway_id=changes.get("home_gateway_id"))
    provisioning.apply_changes(device, changes)
    session.add(device)
    audit.record(session, actor=user.name, action="device.update", entity="device",
                 entity_id=device.dev_eui, data=data.model_dump(exclude_unset=True, mode="json"))
    session.commit()
    session.refresh(device)
    return device


@router.get("/{dev_eui}/bundle", response_model=ProvisioningBundle)
def get_bundle(dev_eui: DevEui, session: SessionDep, user: DeviceWriter,
               vault: VaultDep) -> ProvisioningBundle:
    """The provisioning bundle for the flasher (contains the AppKey; the access is audited)."""
    device = load_device(session, dev_eui, user)
    result = provisioning.bundle(session, vault, device, actor=user.name)
    session.commit()
    return result


@router.post("/{dev_eui}/flash-reports", response_model=FlashRecorded,
             status_code=status.HTTP_201_CREATED)
def record_flash(dev_eui: DevEui, report: FlashReport, session: SessionDep,
                 user: DeviceWriter) -> FlashRecorded:
    """A technician's flash of this device and its on-board self-test, for the history."""
    device = load_device(session, dev_eui, user)
    if report.ok and report.firmware:
        device.firmware_version = report.firmware
        session.add(device)
    entry = audit.record(session, actor=user.name, action="flash", entity="device",
                         entity_id=device.dev_eui, data=report.model_dump())
    session.commit()
    assert entry.id is not None
    return FlashRecorded(dev_eui=device.dev_eui, ok=report.ok, audit_id=entry.id)


@router.post("/{dev_eui}/decommission", response_model=DevicePublic)
def decommission_device(dev_eui: DevEui, session: SessionDep, user: DeviceWriter) -> Device:
    device = provisioning.decommission(session, load_device(session, dev_eui, user),
                                       actor=user.name)
    session.commit()
    session.refresh(device)
    return device


@router.post("/{dev_eui}/replace", response_model=DeviceProvisioned,
             status_code=status.HTTP_201_CREATED)
def replace_device(dev_eui: DevEui, data: DeviceReplace, session: SessionDep,
                   user: DeviceWriter, vault: VaultDep) -> DeviceProvisioned:
    old = load_device(session, dev_eui, user)
    new, _ = provisioning.replace(session, vault, old, data, actor=user.name)
    bundle = provisioning.bundle(session, vault, new, actor=user.name)
    session.commit()
    session.refresh(new)
    return DeviceProvisioned(device=DevicePublic.model_validate(new), bundle=bundle)
