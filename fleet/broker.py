"""Mosquitto configuration from the registry: password file and ACL.

Each gateway may publish only below `allmende/gw/<id>/` and read only its own `down` topic;
the fleet's own user reads and writes everything below `allmende/`. Clients without
credentials are refused (`allow_anonymous false` in the config this module writes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, col, select

from .models import Gateway
from .security import mosquitto_password_hash


@dataclass(frozen=True)
class BrokerFiles:
    password_file: Path
    acl_file: Path


def password_lines(session: Session, *, service_users: dict[str, str]) -> list[str]:
    """`user:hash` lines: the fleet's service users (clear passwords given) and every gateway."""
    lines = [f"{user}:{mosquitto_password_hash(pw)}" for user, pw in sorted(service_users.items())]
    for gateway in session.exec(select(Gateway).order_by(col(Gateway.gateway_id))):
        if gateway.mqtt_password_hash:
            lines.append(f"{gateway.gateway_id}:{gateway.mqtt_password_hash}")
    return lines


def acl_lines(session: Session, *, service_users: list[str]) -> list[str]:
    lines = ["# written by allmende fleet: do not edit, regenerate with `allmende fleet broker`"]
    for user in sorted(service_users):
        lines += ["", f"user {user}", "topic readwrite allmende/#"]
    for gateway in session.exec(select(Gateway).order_by(col(Gateway.gateway_id))):
        prefix = f"allmende/gw/{gateway.gateway_id}"
        lines += ["", f"user {gateway.gateway_id}",
                  f"topic write {prefix}/up", f"topic write {prefix}/status",
                  f"topic write {prefix}/stats", f"topic read {prefix}/down"]
    return lines


def _write_atomic(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_broker_files(session: Session, directory: Path, *,
                       service_users: dict[str, str]) -> BrokerFiles:
    """Write `passwd` and `acl` into `directory` (atomically: a broker reloading with SIGHUP
    never reads half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = BrokerFiles(directory / "passwd", directory / "acl")
    _write_atomic(files.password_file, password_lines(session, service_users=service_users))
    _write_atomic(files.acl_file, acl_lines(session, service_users=list(service_users)))
    return files


def mosquitto_config(files: BrokerFiles, *, port: int, bind: str = "127.0.0.1") -> str:
    """A minimal mosquitto.conf using the generated files (add TLS listeners in production)."""
    return "\n".join([
        "per_listener_settings false",
        f"listener {port} {bind}",
        "allow_anonymous false",
        f"password_file {files.password_file}",
        f"acl_file {files.acl_file}",
        "persistence false",
        "",
    ])
