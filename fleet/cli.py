"""`allmende fleet ...`: run the service, and a staff client for its REST API with tables."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain aligned table: columns are (key, header); None shows as '-'."""

    def cell(value: Any) -> str:
        if value is None or value == "":
            return "-"
        if isinstance(value, list):
            return ",".join(str(v) for v in value) or "-"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    body = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, (_, h) in enumerate(columns)]
    lines = ["  ".join(h.upper().ljust(w) for (_, h), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(line.rstrip() for line in lines)


class ApiError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    if not args.token:
        raise ApiError(401, "no API token: pass --token or set ALLMENDE_TOKEN")
    try:
        response = httpx.request(method, args.url.rstrip("/") + "/api/v1" + path,
                                 headers={"Authorization": f"Bearer {args.token}"},
                                 timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        raise ApiError(0, f"cannot reach the fleet at {args.url} ({exc}); is it running? "
                          "(allmende fleet serve)") from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise ApiError(response.status_code, detail)
    return response.json()


DEVICE_COLUMNS = [("dev_eui", "dev_eui"), ("name", "name"), ("kind", "kind"),
                  ("state", "state"), ("home_gateway_id", "gateway"),
                  ("firmware_version", "fw"), ("battery", "battery"), ("rssi", "rssi"),
                  ("last_seen", "last seen")]
GATEWAY_COLUMNS = [("gateway_id", "gateway"), ("name", "name"), ("state", "state"),
                   ("last_seen", "last seen")]
SITE_COLUMNS = [("id", "id"), ("name", "name"), ("kind", "kind"), ("address", "address")]
READING_COLUMNS = [("time", "time"), ("device", "device"), ("quantity", "quantity"),
                   ("value", "value"), ("unit", "unit"), ("gateway", "gateway"),
                   ("flags", "flags")]
ALERT_COLUMNS = [("time", "time"), ("severity", "severity"), ("kind", "kind"),
                 ("device", "device"), ("gateway", "gateway"), ("message", "message")]


def _output(args: argparse.Namespace, data: Any, columns: Sequence[tuple[str, str]]) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        rows = data if isinstance(data, list) else [data]
        print(render_table(rows, columns))


def cmd_devices(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("state", args.state), ("gateway", args.gateway)) if v}
    _output(args, _request(args, "GET", "/devices", params={**params, "limit": args.limit}),
            DEVICE_COLUMNS)
    return 0


def cmd_device_add(args: argparse.Namespace) -> int:
    body = {k: v for k, v in {"dev_eui": args.dev_eui, "mac": args.mac, "name": args.name,
                              "kind": args.kind, "board": args.board,
                              "home_gateway_id": args.gateway, "site_id": args.site,
                              "flat_ref": args.flat, "parking_bay_ref": args.bay,
                              "tags": args.tag or None}.items() if v is not None}
    created = _request(args, "POST", "/devices", json=body)
    if args.bundle:
        Path(args.bundle).write_text(json.dumps(created["bundle"], indent=2) + "\n")
        os.chmod(args.bundle, 0o600)
    if args.json:
        print(json.dumps(created, indent=2))
    else:
        print(render_table([created["device"]], DEVICE_COLUMNS))
        if args.bundle:
            print(f"provisioning bundle (with the AppKey) written to {args.bundle}")
    return 0


def cmd_gateways(args: argparse.Namespace) -> int:
    _output(args, _request(args, "GET", "/gateways"), GATEWAY_COLUMNS)
    return 0


def cmd_gateway_add(args: argparse.Namespace) -> int:
    created = _request(args, "POST", "/gateways",
                       json={"gateway_id": args.gateway_id, "name": args.name or ""})
    print(json.dumps(created, indent=2) if args.json else
          render_table([created["gateway"]], GATEWAY_COLUMNS) +
          f"\nMQTT user {created['mqtt_username']}  password {created['mqtt_password']}"
          f"\nAPI token {created['api_token']}  (shown once: store them now)")
    return 0


def cmd_sites(args: argparse.Namespace) -> int:
    _output(args, _request(args, "GET", "/sites"), SITE_COLUMNS)
    return 0


def cmd_readings(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit, "order": "desc"}
    if args.device:
        params["device"] = args.device
    page = _request(args, "GET", "/readings", params=params)
    _output(args, page["items"], READING_COLUMNS)
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    _output(args, _request(args, "GET", "/alerts"), ALERT_COLUMNS)
    return 0


def _settings() -> Any:
    from .settings import FleetSettings

    return FleetSettings()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    settings = _settings()
    app = create_app(settings, ingest_workers=args.ingest_workers,
                     forward=not args.no_forward)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from .db import make_engine, migrate

    migrate(make_engine(_settings().database_url))
    print("database schema is up to date")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Creates a user with a token directly in the database (bootstrap, no API needed)."""
    from sqlmodel import Session

    from .db import make_engine, migrate
    from .models import Role
    from .provisioning import ProvisioningError, create_user

    engine = make_engine(_settings().database_url)
    migrate(engine)
    with Session(engine) as session:
        try:
            created = create_user(session, name=args.name, role=Role(args.role), actor="cli")
        except ProvisioningError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        session.commit()
    print(created.token)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    """Writes mosquitto's password file and ACL from the registry."""
    from sqlmodel import Session

    from .broker import write_broker_files
    from .db import make_engine, migrate

    settings = _settings()
    if not (settings.mqtt_username and settings.mqtt_password):
        print("error: set ALLMENDE_MQTT_USERNAME and ALLMENDE_MQTT_PASSWORD (the fleet's own "
              "broker user) first", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    migrate(engine)
    with Session(engine) as session:
        files = write_broker_files(session, Path(args.directory),
                                   service_users={settings.mqtt_username: settings.mqtt_password})
    print(f"wrote {files.password_file} and {files.acl_file}; reload mosquitto (SIGHUP)")
    return 0


def _client_handler(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ApiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="fleet_command", metavar="COMMAND")

    def client_parser(name: str, help_text: str, fn: Callable[[argparse.Namespace], int],
                      parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text,
                                                        description=help_text)
        p.add_argument("--url", default=os.environ.get("ALLMENDE_API_URL", DEFAULT_URL),
                       help="fleet API base URL (ALLMENDE_API_URL)")
        p.add_argument("--token", default=os.environ.get("ALLMENDE_TOKEN"),
                       help="API token (ALLMENDE_TOKEN)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.set_defaults(handler=_client_handler(fn))
        return p

    serve = sub.add_parser("serve", help="run the API (and ingest workers)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--ingest-workers", type=int, default=1,
                       help="MQTT ingest workers in this process (0: API only)")
    serve.add_argument("--no-forward", action="store_true",
                       help="do not forward readings to the urban data platform")
    serve.set_defaults(handler=cmd_serve)

    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        handler=cmd_migrate)

    token = sub.add_parser("token", help="create a user and print its API token (bootstrap)")
    token.add_argument("name")
    token.add_argument("--role", default="admin",
                       choices=["admin", "operator", "technician", "platform"])
    token.set_defaults(handler=cmd_token)

    broker = sub.add_parser("broker", help="write mosquitto's password file and ACL")
    broker.add_argument("directory")
    broker.set_defaults(handler=cmd_broker)

    devices = client_parser("devices", "list devices", cmd_devices)
    devices.add_argument("--state")
    devices.add_argument("--gateway")
    devices.add_argument("--limit", type=int, default=100)

    device = sub.add_parser("device", help="one device").add_subparsers(
        dest="device_command", metavar="ACTION")
    add = client_parser("add", "register a device and generate its AppKey", cmd_device_add,
                        device)
    add.add_argument("--dev-eui")
    add.add_argument("--mac", help="the board's MAC; the DevEUI is derived from it")
    add.add_argument("--name")
    add.add_argument("--kind", choices=["air_quality", "parking", "energy", "other"])
    add.add_argument("--board")
    add.add_argument("--gateway", help="home gateway id")
    add.add_argument("--site", type=int)
    add.add_argument("--flat")
    add.add_argument("--bay")
    add.add_argument("--tag", action="append")
    add.add_argument("--bundle", help="write the provisioning bundle (JSON) to this file")

    client_parser("gateways", "list gateways", cmd_gateways)
    gateway = sub.add_parser("gateway", help="one gateway").add_subparsers(
        dest="gateway_command", metavar="ACTION")
    gw_add = client_parser("add", "register a gateway; prints its credentials once",
                           cmd_gateway_add, gateway)
    gw_add.add_argument("gateway_id")
    gw_add.add_argument("--name")

    client_parser("sites", "list sites", cmd_sites)
    readings = client_parser("readings", "latest readings", cmd_readings)
    readings.add_argument("--device")
    readings.add_argument("--limit", type=int, default=20)
    client_parser("alerts", "active alerts", cmd_alerts)
