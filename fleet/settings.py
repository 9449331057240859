"""The fleet's one settings object, read from ALLMENDE_* environment variables."""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

_KEYS = ("secret_key", "pseudonym_key")


class FleetSettings(BaseSettings):
    """Everything the fleet service can be told; defaults run on one machine with no setup."""

    model_config = SettingsConfigDict(env_prefix="ALLMENDE_", extra="ignore")

    # SQLite by default (no setup); PostgreSQL via postgresql+psycopg://user:pw@host/db.
    database_url: str = "sqlite:///allmende-fleet.db"
    # Key that encrypts device AppKeys at rest: any string; a 256-bit AES key is derived
    # from it. Losing it makes every stored AppKey unreadable. Unset: see `secrets_file`.
    secret_key: SecretStr | None = Field(default=None, min_length=8)
    # An admin token created on start when set, so a fresh install can be used at once.
    admin_token: str | None = None

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    # Workers in one group split the gateways' uploads through a shared subscription.
    ingest_group: str = "fleet"
    ingest_batch_size: int = 500
    # A stable MQTT client id (prefix) for this process's workers: with it, a restarted worker
    # gets back what it had not acknowledged. Unique per process; unset: a fresh session.
    ingest_client_id: str | None = None
    # How long the broker keeps a stopped worker's session (and unacknowledged messages).
    ingest_session_expiry_s: int = 3600
    # Where the fleet publishes normalized readings for other consumers.
    readings_topic: str = "allmende/readings"

    # Monitoring: a device is offline after this many missed uplink intervals.
    uplink_interval_s: int = 300
    offline_after_missed: int = 3
    low_battery_v: float = 3.4
    # Readings of devices tied to a flat (personal data) are deleted after this many days.
    personal_retention_days: int = 90
    # Key of the flats' pseudonyms (HMAC-SHA256, pseudonym.py); changing it renames every flat.
    # A secret: kept out of reprs and logs.
    # Unset: see `secrets_file`.
    pseudonym_key: SecretStr | None = Field(default=None, min_length=8)
    # Where the two keys above are generated (once, random, mode 0600) and kept when they are
    # not set: back it up with the database. Default: beside a SQLite database, else
    # ./allmende-fleet.secrets. Several fleet processes must share the file or set both keys.
    secrets_file: Path | None = None
    # Building-level energy (energy.py): the flats' readings of each site are summed per
    # interval and published only when at least `energy_min_flats` flats contributed.
    energy_interval_s: int = Field(default=900, ge=60, le=86_400)
    energy_min_flats: int = Field(default=5, ge=2)
    # An interval is computed this long after it ended (gateways may deliver late); readings
    # arriving later still are not counted.
    energy_delay_s: int = Field(default=900, ge=0)

    # SensorThings forwarding: base URL up to and including the version, e.g.
    # http://host:8000/v1.1 ; empty disables that target.
    sensorthings_url: str | None = None
    sensorthings_batch_size: int = 100
    # Failed attempts (platform down, 5xx, ...) before an item is dead. Retries back off
    # to every FORWARD_BACKOFF_MAX_S (5 min), so the default rides out a week's outage.
    forward_max_attempts: int = Field(default=2016, ge=1)

    # NGSI-LD forwarding (FIWARE Smart Data Models): the broker's base URL, without
    # /ngsi-ld/v1, e.g. http://host:1026 ; empty disables that target.
    ngsi_ld_url: str | None = None
    # Sent as the NGSILD-Tenant header when set (a multi-tenant broker).
    ngsi_ld_tenant: str | None = None
    # Sent as `Authorization: Bearer ...` when set; never logged.
    ngsi_ld_token: SecretStr | None = None
    # The @context of every entity (JSON list of URLs); unset: the Smart Data Models' and the
    # core context (forward/smart_data_models.py).
    ngsi_ld_context: list[str] | None = None
    # Entities per upsert request.
    ngsi_ld_batch_size: int = 100


def default_secrets_file(database_url: str) -> Path | None:
    """Beside a SQLite database file; None for a server database, whose processes may run
    anywhere: they must be told where the keys are."""
    if database_url.startswith("sqlite:///") and database_url != "sqlite:///:memory:":
        database = Path(database_url.removeprefix("sqlite:///"))
        return database.with_name(database.name + ".secrets")
    return None


def with_keys(settings: FleetSettings) -> FleetSettings:
    """The settings with both keys set: the configured ones, else those of the secrets file,
    which is created with new random keys when it does not exist. There is no built-in key:
    one everybody knows would protect nothing. Raises OSError or ValueError (a file that is
    not this format) with the file's name."""
    missing = [name for name in _KEYS if getattr(settings, name) is None]
    if not missing:
        return settings
    path = settings.secrets_file or default_secrets_file(settings.database_url)
    if path is None:
        raise ValueError("set ALLMENDE_SECRET_KEY and ALLMENDE_PSEUDONYM_KEY, or "
                         "ALLMENDE_SECRETS_FILE (shared by every fleet process of this database)")
    stored = _read_secrets(path)
    new = [name for name in missing if not isinstance(stored.get(name), str)]
    if new and not stored:
        # First start: the complete file appears at once (link of a private temporary one)
        # and only if none is there, so of two processes starting together one writes the
        # keys and the other reads them.
        keys: dict[str, object] = {name: secrets.token_urlsafe(32) for name in _KEYS}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(keys, out)
                out.flush()
                os.fsync(out.fileno())
            os.link(tmp, path)
        except FileExistsError:
            stored = _read_secrets(path)
        else:
            stored = keys
            log.warning("fleet_keys_generated", extra={"fields": {
                "keys": list(_KEYS), "file": str(path),
                "action": "back this file up with the database"}})
        finally:
            tmp.unlink(missing_ok=True)
        new = [name for name in missing if not isinstance(stored.get(name), str)]
    if new:
        raise ValueError(f"secrets file {path} has no {', '.join(new)}: add it (a random "
                         "string) or set ALLMENDE_" + new[0].upper())
    return settings.model_copy(update={name: SecretStr(str(stored[name])) for name in missing})


def _read_secrets(path: Path) -> dict[str, object]:
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"secrets file {path}: {exc}") from None
    if not isinstance(stored, dict):
        raise ValueError(f"secrets file {path}: not a JSON object")
    return stored
