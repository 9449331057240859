"""Database and API models of the fleet: one family per entity (Base → Create/Update/Public)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import field_validator
from sqlmodel import JSON, Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_utc(t: datetime) -> str:
    """ISO 8601 with a "Z", as the platforms' APIs write UTC times."""
    return t.isoformat().replace("+00:00", "Z")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone otherwise)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# 64-bit row ids on PostgreSQL; SQLite needs INTEGER for its rowid alias (autoincrement).
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Role(StrEnum):
    admin = "admin"
    operator = "operator"
    technician = "technician"
    gateway = "gateway"
    platform = "platform"


class DeviceState(StrEnum):
    provisioned = "provisioned"  # registered, never heard
    active = "active"  # heard at least once
    decommissioned = "decommissioned"  # readings from it are rejected; history is kept


class DeviceKind(StrEnum):
    air_quality = "air_quality"
    parking = "parking"
    energy = "energy"
    other = "other"


def _hex(value: str, nbytes: int, field: str) -> str:
    cleaned = value.replace(":", "").replace("-", "").strip().upper()
    if len(cleaned) != 2 * nbytes or any(c not in "0123456789ABCDEF" for c in cleaned):
        raise ValueError(f"{field} must be {nbytes} bytes as hex, got {value!r}")
    return cleaned


# --- sites -----------------------------------------------------------------------------------


class SiteBase(SQLModel):
    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(default="building", max_length=40, description="building, street, area")
    address: str | None = Field(default=None, max_length=300)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


class SiteCreate(SiteBase):
    pass


class SiteUpdate(SQLModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    kind: str | None = Field(default=None, max_length=40)
    address: str | None = Field(default=None, max_length=300)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


class Site(SiteBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SitePublic(SiteBase):
    id: int
    created_at: datetime


# --- gateways --------------------------------------------------------------------------------

MAX_ID = 2**31 - 1  # PostgreSQL integer
GATEWAY_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class GatewayBase(SQLModel):
    name: str = Field(default="", max_length=200)
    site_id: int | None = Field(default=None, foreign_key="site.id", ge=1, le=MAX_ID)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


class GatewayCreate(GatewayBase):
    # Also its MQTT user name and topic segment, hence the narrow alphabet (no + # / $).
    gateway_id: str = Field(regex=GATEWAY_ID_PATTERN)


class GatewayUpdate(SQLModel):
    name: str | None = Field(default=None, max_length=200)
    site_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


class Gateway(GatewayBase, table=True):
    gateway_id: str = Field(primary_key=True, max_length=63)
    state: str = Field(default="unknown", max_length=16)  # online, offline, unknown
    last_seen: datetime | None = Field(default=None, sa_type=UTCDateTime)
    stats: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    # The broker's password-file line for this gateway (PBKDF2-SHA512, mosquitto's $7$).
    mqtt_password_hash: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class GatewayPublic(GatewayBase):
    gateway_id: str
    state: str
    last_seen: datetime | None
    created_at: datetime


class GatewayCredentials(SQLModel):
    """Shown once, when a gateway is created or its credentials are rotated."""

    gateway: GatewayPublic
    mqtt_username: str
    mqtt_password: str
    api_token: str
    topic_prefix: str


# --- devices ---------------------------------------------------------------------------------


class DeviceBase(SQLModel):
    name: str = Field(default="", max_length=200)
    kind: DeviceKind = Field(default=DeviceKind.air_quality, sa_type=sa.String(20))
    board: str | None = Field(default=None, max_length=80)
    site_id: int | None = Field(default=None, foreign_key="site.id", ge=1, le=MAX_ID)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    flat_ref: str | None = Field(default=None, max_length=80)
    parking_bay_ref: str | None = Field(default=None, max_length=80)
    home_gateway_id: str | None = Field(default=None, foreign_key="gateway.gateway_id",
                                        max_length=63)
    tags: list[str] = Field(default_factory=list, sa_type=JSON, max_length=50)


class DeviceCreate(DeviceBase):
    dev_eui: str | None = Field(default=None, description="16 hex digits; else derived from mac")
    mac: str | None = Field(default=None, description="the board's MAC, e.g. 24:6F:28:AA:BB:CC")
    join_eui: str = Field(default="0000000000000000")

    @field_validator("dev_eui")
    @classmethod
    def _dev_eui(cls, v: str | None) -> str | None:
        return None if v is None else _hex(v, 8, "dev_eui")

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        return None if v is None else _hex(v, 6, "mac")

    @field_validator("join_eui")
    @classmethod
    def _join_eui(cls, v: str) -> str:
        return _hex(v, 8, "join_eui")


class DeviceUpdate(SQLModel):
    name: str | None = Field(default=None, max_length=200)
    board: str | None = Field(default=None, max_length=80)
    site_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    flat_ref: str | None = Field(default=None, max_length=80)
    parking_bay_ref: str | None = Field(default=None, max_length=80)
    home_gateway_id: str | None = Field(default=None, max_length=63)
    tags: list[str] | None = Field(default=None, max_length=50)


class Device(DeviceBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    dev_eui: str = Field(max_length=16, unique=True, index=True)
    state: DeviceState = Field(default=DeviceState.provisioned, sa_type=sa.String(20))
    firmware_version: str | None = Field(default=None, max_length=40)
    last_seen: datetime | None = Field(default=None, sa_type=UTCDateTime)
    battery: float | None = None
    rssi: float | None = None
    snr: float | None = None
    replaced_by: str | None = Field(default=None, max_length=16)
    replaces: str | None = Field(default=None, max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DevicePublic(DeviceBase):
    id: int
    dev_eui: str
    state: DeviceState
    firmware_version: str | None
    last_seen: datetime | None
    battery: float | None
    rssi: float | None
    snr: float | None
    replaced_by: str | None
    replaces: str | None
    created_at: datetime


class DeviceKey(SQLModel, table=True):
    """A device's OTAA root key, AES-GCM encrypted with the settings' secret key."""

    __tablename__ = "device_key"
    device_id: int = Field(primary_key=True, foreign_key="device.id")
    join_eui: str = Field(max_length=16)
    app_key_encrypted: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DeviceKeys(SQLModel):
    dev_eui: str
    join_eui: str
    app_key: str


class ProvisioningBundle(SQLModel):
    """What the technician's flasher writes to the node (config + keys); shown only on request."""

    dev_eui: str
    join_eui: str
    app_key: str
    kind: DeviceKind
    board: str | None
    home_gateway_id: str | None
    region: str = "EU868"
    activation: str = "OTAA"


class DeviceReplace(SQLModel):
    dev_eui: str | None = None
    mac: str | None = None

    @field_validator("dev_eui")
    @classmethod
    def _dev_eui(cls, v: str | None) -> str | None:
        return None if v is None else _hex(v, 8, "dev_eui")

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        return None if v is None else _hex(v, 6, "mac")


class SyncDevice(SQLModel):
    dev_eui: str
    join_eui: str
    app_key: str
    kind: DeviceKind
    state: DeviceState


class GatewaySync(SQLModel):
    gateway_id: str
    devices: list[SyncDevice]


# --- readings --------------------------------------------------------------------------------


class ReadingBase(SQLModel):
    key: str = Field(max_length=200)
    device: str = Field(max_length=16)
    kind: str = Field(max_length=40)
    quantity: str = Field(max_length=40)
    value: float
    unit: str = Field(max_length=40)
    time: datetime = Field(sa_type=UTCDateTime)
    fcnt: int
    session: str = Field(max_length=80)
    gateway: str = Field(max_length=63)
    rssi: float | None = None
    snr: float | None = None
    flags: list[str] = Field(default_factory=list, sa_type=JSON)
    fw: str | None = Field(default=None, max_length=40)


class Reading(ReadingBase, table=True):
    __table_args__ = (sa.Index("ix_reading_device_time", "device", "time"),)
    id: int | None = Field(default=None, primary_key=True, sa_type=BIGID)
    key: str = Field(max_length=200, unique=True)


class ReadingPublic(ReadingBase):
    id: int


class ReadingPage(SQLModel):
    items: list[ReadingPublic]
    next_cursor: int | None = Field(description="pass as `after` for the next page")


# --- events and alerts -----------------------------------------------------------------------


class Event(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    # device_offline, low_battery, sensor_fault, gateway_offline
    kind: str = Field(max_length=40)
    severity: str = Field(default="warning", max_length=16)
    device: str | None = Field(default=None, max_length=16)
    gateway: str | None = Field(default=None, max_length=63)
    message: str = Field(default="", max_length=500)
    # An alert is an active event; it resolves when the condition clears.
    active: bool = Field(default=True, index=True)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class EventPublic(SQLModel):
    id: int
    time: datetime
    kind: str
    severity: str
    device: str | None
    gateway: str | None
    message: str
    active: bool
    resolved_at: datetime | None


class Counter(SQLModel, table=True):
    """Monotonic counters shared by all workers (rejected readings, duplicates, ...)."""

    name: str = Field(primary_key=True, max_length=80)
    value: int = Field(default=0, sa_type=sa.BigInteger)


# --- users, tokens, audit --------------------------------------------------------------------


class UserBase(SQLModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role = Field(sa_type=sa.String(20))


class UserCreate(UserBase):
    pass


class User(UserBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    # Set for role=gateway: the only gateway this user may act as.
    gateway_id: str | None = Field(default=None, foreign_key="gateway.gateway_id")
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class UserPublic(UserBase):
    id: int
    gateway_id: str | None
    active: bool
    created_at: datetime


class UserWithToken(SQLModel):
    user: UserPublic
    token: str


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    # SHA-256 of the token: tokens are 256-bit random, so a slow hash adds nothing.
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked: bool = False


class AuditEntry(SQLModel, table=True):
    """Append-only, hash-chained record of every change (hash = H(prev_hash ‖ entry))."""

    __tablename__ = "audit_entry"
    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    actor: str = Field(max_length=100)
    action: str = Field(max_length=60)
    entity: str = Field(max_length=40)
    entity_id: str = Field(max_length=100)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class AuditPublic(SQLModel):
    id: int
    time: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerification(SQLModel):
    ok: bool
    entries: int
    first_bad_id: int | None = None


# --- platform outbox -------------------------------------------------------------------------


class OutboxItem(SQLModel, table=True):
    """A reading waiting to be forwarded to one platform target (written with the reading)."""

    __tablename__ = "outbox_item"
    __table_args__ = (
        sa.UniqueConstraint("target", "reading_id"),
        sa.Index("ix_outbox_pending", "target", "status", "next_attempt"),
    )
    id: int | None = Field(default=None, primary_key=True, sa_type=BIGID)
    target: str = Field(max_length=40)
    reading_id: int = Field(sa_type=sa.BigInteger)
    status: str = Field(default="pending", max_length=16)  # pending, delivered, dead
    attempts: int = 0
    next_attempt: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=1000)


class PlatformLink(SQLModel, table=True):
    """IDs the platform gave to things the fleet created there once (Thing, Datastream)."""

    __tablename__ = "platform_link"
    target: str = Field(primary_key=True, max_length=40)
    local_key: str = Field(primary_key=True, max_length=200)
    remote_id: str = Field(max_length=200)


# --- building-level energy -------------------------------------------------------------------


class EnergyAggregate(SQLModel, table=True):
    """One quantity of the flats of one building over one interval (energy.py). Published
    (values set, forwarded, served) only when at least `energy_min_flats` flats contributed;
    a suppressed interval keeps only its flat count, so it is not computed again."""

    __tablename__ = "energy_aggregate"
    __table_args__ = (sa.UniqueConstraint("site_id", "quantity", "start"),)
    id: int | None = Field(default=None, primary_key=True, sa_type=BIGID)
    site_id: int = Field(foreign_key="site.id", index=True)
    quantity: str = Field(max_length=40)
    unit: str = Field(max_length=40)
    start: datetime = Field(sa_type=UTCDateTime)
    interval_s: int
    flats: int
    published: bool
    total: float | None = None  # sum over the flats of each flat's last value
    mean: float | None = None  # total / flats
    computed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class EnergyAggregatePublic(SQLModel):
    site_id: int
    quantity: str
    unit: str
    start: datetime
    end: datetime
    flats: int
    total: float
    mean: float
