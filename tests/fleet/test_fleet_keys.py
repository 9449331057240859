"""The fleet's keys (AppKeys at rest, flat pseudonyms): never a built-in default."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from allmende.fleet.security import KeyVault
from allmende.fleet.settings import FleetSettings, with_keys


def test_missing_keys_are_generated_once_into_a_private_file_beside_the_database(
        tmp_path: Path) -> None:
    settings = FleetSettings(database_url=f"sqlite:///{tmp_path / 'fleet.db'}")
    first = with_keys(settings)
    path = tmp_path / "fleet.db.secrets"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert first.secret_key is not None and first.pseudonym_key is not None
    assert stored == {"secret_key": first.secret_key.get_secret_value(),
                      "pseudonym_key": first.pseudonym_key.get_secret_value()}
    assert len(stored["secret_key"]) >= 40 and stored["secret_key"] != stored["pseudonym_key"]
    # A restart reads the same keys: AppKeys sealed before stay readable.
    sealed = KeyVault(first.secret_key).encrypt("70B3D57ED0000001", "00" * 16)
    again = with_keys(FleetSettings(database_url=settings.database_url))
    assert KeyVault(again.secret_key).decrypt("70B3D57ED0000001", sealed) == "00" * 16
    assert again.pseudonym_key == first.pseudonym_key
    # Another installation gets other keys.
    other = with_keys(FleetSettings(database_url=f"sqlite:///{tmp_path / 'other.db'}"))
    assert other.secret_key != first.secret_key


def test_configured_keys_win_and_only_a_missing_one_is_generated(tmp_path: Path) -> None:
    file = tmp_path / "keys.json"
    settings = with_keys(FleetSettings(secret_key="configured-secret-key", secrets_file=file))
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == "configured-secret-key"
    assert set(json.loads(file.read_text())) == {"secret_key", "pseudonym_key"}
    both = FleetSettings(secret_key="k" * 20, pseudonym_key="p" * 20,
                         secrets_file=tmp_path / "never.json")
    assert with_keys(both) is both and not (tmp_path / "never.json").exists()


def test_a_server_database_needs_to_be_told_where_its_keys_are() -> None:
    # Its processes may run anywhere: a key file in whatever directory one started in would
    # give each of them other keys.
    with pytest.raises(ValueError, match="ALLMENDE_SECRETS_FILE"):
        with_keys(FleetSettings(database_url="postgresql+psycopg://fleet@db/fleet"))


def test_a_secrets_file_without_a_needed_key_is_an_error_not_rewritten(tmp_path: Path) -> None:
    file = tmp_path / "keys.json"
    file.write_text(json.dumps({"secret_key": "kept-secret-key-01"}))
    with pytest.raises(ValueError, match="pseudonym_key"):
        with_keys(FleetSettings(secrets_file=file))
    assert json.loads(file.read_text()) == {"secret_key": "kept-secret-key-01"}


def test_a_damaged_secrets_file_is_an_error_naming_it(tmp_path: Path) -> None:
    file = tmp_path / "keys.json"
    file.write_text("[not json")
    with pytest.raises(ValueError, match=str(file)):
        with_keys(FleetSettings(secrets_file=file))
    assert file.read_text() == "[not json"  # never overwritten: it may hold the only copy


def test_without_with_keys_there_is_no_key_to_fall_back_on() -> None:
    with pytest.raises(ValueError, match="no secret key"):
        KeyVault(FleetSettings().secret_key)


def test_a_fleet_refuses_to_start_with_a_key_that_does_not_open_its_stored_app_keys(
        tmp_path: Path) -> None:
    from allmende.fleet.app import create_app
    from allmende.fleet.db import make_engine

    from tests.fixtures.fleet_records import provision_device

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    first = with_keys(FleetSettings(database_url=url, secret_key="the-original-key-01"))
    engine = make_engine(url)
    create_app(first, engine=engine)
    provision_device(engine, first, "70B3D57ED0000001")
    create_app(first, engine=engine)  # the right key: starts
    with pytest.raises(ValueError, match="does not open the AppKeys"):
        create_app(FleetSettings(database_url=url, secret_key="another-key-0000001"),
                   engine=engine)
