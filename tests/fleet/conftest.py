"""Fixtures of the fleet suite: every database test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from allmende.fleet.app import create_app
from allmende.fleet.db import make_engine, migrate
from allmende.fleet.models import Role
from allmende.fleet.provisioning import create_user
from allmende.fleet.settings import FleetSettings
from fastapi.testclient import TestClient

from tests.fixtures.ngsi_ld_broker import NGSI_TOKEN, NgsiLdBroker, run_ngsi_ld_broker
from tests.fixtures.services import (
    Broker,
    Postgres,
    SensorThings,
    run_mosquitto,
    run_postgres,
    run_sensorthings,
)

ADMIN_TOKEN = "alm_test-admin-token"
_db_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    with run_postgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database per test: a SQLite file, or a new database on the session's
    PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
        return
    pg: Postgres = request.getfixturevalue("postgres_server")
    name = f"fleet_test_{next(_db_numbers)}"
    admin = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield pg.url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def settings(database_url: str) -> FleetSettings:
    return FleetSettings(database_url=database_url, admin_token=ADMIN_TOKEN,
                         secret_key="test-secret-key-0123456789",
                         pseudonym_key="test-pseudonym-key-0123")


@pytest.fixture
def engine(settings: FleetSettings) -> Iterator[sa.Engine]:
    engine = make_engine(settings.database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def client(settings: FleetSettings, engine: sa.Engine) -> Iterator[TestClient]:
    app = create_app(settings, engine=engine)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def token_for(engine: sa.Engine, client: TestClient):  # noqa: ANN201
    """token_for(role) -> auth headers of a new user with that role."""
    from sqlmodel import Session

    counter = itertools.count()

    def make(role: Role) -> dict[str, str]:
        with Session(engine) as session:
            created = create_user(session, name=f"{role.value}-{next(counter)}", role=role,
                                  actor="test")
            session.commit()
        return {"Authorization": f"Bearer {created.token}"}

    return make


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A plain Mosquitto (anonymous allowed) for ingest tests."""
    with run_mosquitto(tmp_path / "mosquitto") as b:
        yield b



@pytest.fixture(scope="module")
def sta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SensorThings]:
    """A real SensorThings server (django-ogc-sensorthings), one per test module."""
    with run_sensorthings(tmp_path_factory.mktemp("sensorthings")) as server:
        yield server


@pytest.fixture
def ngsi_broker() -> Iterator[NgsiLdBroker]:
    """The stand-in NGSI-LD broker (tests/fixtures/ngsi_ld_broker.py), wanting a token."""
    with run_ngsi_ld_broker(token=NGSI_TOKEN) as b:
        yield b
