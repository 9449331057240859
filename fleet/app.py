"""The fleet's web application: `create_app(settings)` builds it, `allmende fleet serve` runs it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session, col, select

from . import monitoring, provisioning
from .api.routes import admin, devices, events, gateways, readings, sites
from .db import make_engine, migrate
from .forward.ngsi_ld import NgsiLdEnergyForwarder, NgsiLdForwarder
from .forward.outbox import OutboxForwarder
from .forward.sensorthings import SensorThingsEnergyForwarder, SensorThingsForwarder
from .ingest import IngestWorker
from .models import Device, DeviceKey
from .provisioning import ProvisioningError
from .security import KeyDecryptionError, KeyVault
from .settings import FleetSettings, with_keys

API_PREFIX = "/api/v1"


def _check_secret_key(session: Session, vault: KeyVault) -> None:
    """Refuses a secret key that does not open the AppKeys already stored (a key lost or
    replaced, e.g. a new one generated for an existing database): better no start than a
    fleet that cannot give a gateway or a flasher a single key."""
    row = session.exec(select(Device.dev_eui, DeviceKey.app_key_encrypted)
                       .join(DeviceKey, col(DeviceKey.device_id) == col(Device.id))
                       .limit(1)).first()
    if row is None:
        return
    try:
        vault.decrypt(row[0], row[1])
    except KeyDecryptionError:
        raise ValueError(
            "the secret key does not open the AppKeys stored in this database: set "
            "ALLMENDE_SECRET_KEY (or ALLMENDE_SECRETS_FILE) to the key they were sealed with"
        ) from None


def create_app(settings: FleetSettings | None = None, *, engine: sa.Engine | None = None,
               run_migrations: bool = True, ingest_workers: int = 0,
               forward: bool = False) -> FastAPI:
    """The API over one database; migrates it to the newest schema and, when the settings carry
    an admin token, makes sure it works. With `ingest_workers` > 0 the app also consumes the
    gateways' MQTT uploads while it runs, and with `forward` it forwards readings to the
    platform targets configured in the settings (SensorThings, NGSI-LD) — all in this process."""
    settings = with_keys(settings or FleetSettings())
    engine = engine or make_engine(settings.database_url)
    if run_migrations:
        migrate(engine)
    vault = KeyVault(settings.secret_key)
    with Session(engine) as session:
        _check_secret_key(session, vault)
        if settings.admin_token:
            provisioning.ensure_admin_token(session, settings.admin_token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        app.state.ingest_workers = [
            IngestWorker(settings, engine=engine, client_id=(
                f"{settings.ingest_client_id}-{i}" if settings.ingest_client_id else None))
            for i in range(ingest_workers)]
        tasks += [asyncio.create_task(w.run()) for w in app.state.ingest_workers]
        app.state.forwarders = []
        if ingest_workers:
            tasks.append(asyncio.create_task(monitoring.watch(engine, settings)))
        if forward:
            app.state.forwarders = forwarders(engine, settings)
            tasks += [asyncio.create_task(f.run()) for f in app.state.forwarders]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(title="allmende fleet", version="0.1.0", lifespan=lifespan,
                  description="Registry, provisioning, telemetry and alerts of a city's "
                              "LoRaWAN sensor fleet.")
    app.state.settings = settings
    app.state.engine = engine
    app.state.vault = vault

    api = APIRouter(prefix=API_PREFIX)
    for module in (devices, gateways, sites, readings, events, admin):
        api.include_router(module.router)
    app.include_router(api)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return {"status": "ok", "database": engine.dialect.name}

    _install_error_handlers(app)
    return app


def forwarders(engine: sa.Engine, settings: FleetSettings) -> list[OutboxForwarder]:
    """One forwarder per platform target whose URL the settings carry."""
    found: list[OutboxForwarder[Any]] = []
    if settings.sensorthings_url:
        found += [SensorThingsForwarder(engine, settings),
                  SensorThingsEnergyForwarder(engine, settings)]
    if settings.ngsi_ld_url:
        found += [NgsiLdForwarder(engine, settings), NgsiLdEnergyForwarder(engine, settings)]
    return found


def _error(status: int, detail: str, *, loc: tuple[str, ...] = ("body",)) -> JSONResponse:
    if status == 422:
        # The same shape as FastAPI's own validation errors, as the OpenAPI document says.
        return JSONResponse(status_code=422, content={"detail": [
            {"loc": list(loc), "msg": detail, "type": "value_error"}]})
    return JSONResponse(status_code=status, content={"detail": detail})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProvisioningError)
    async def _provisioning(_req: Request, exc: ProvisioningError) -> JSONResponse:
        return _error(exc.status, str(exc), loc=("body", *exc.fields))

    @app.exception_handler(sa.exc.IntegrityError)
    async def _integrity(_req: Request, exc: sa.exc.IntegrityError) -> JSONResponse:
        return _error(409, "the change conflicts with existing data (duplicate or dangling "
                           "reference)")

    @app.exception_handler(sa.exc.DataError)
    async def _data(_req: Request, exc: sa.exc.DataError) -> JSONResponse:
        # e.g. a NUL byte or an out-of-range number that validation let through.
        return _error(422, "a value cannot be stored (out of range or invalid characters)")

    @app.exception_handler(OverflowError)
    async def _overflow(_req: Request, exc: OverflowError) -> JSONResponse:
        return _error(422, f"a value is out of range: {exc}")

    @app.exception_handler(KeyDecryptionError)
    async def _keys(_req: Request, exc: KeyDecryptionError) -> JSONResponse:
        return _error(503, str(exc))


