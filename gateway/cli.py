"""`allmende gateway ...`: run the daemon, or check a configuration and device file."""

from __future__ import annotations

import argparse
import sys


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="gateway_command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the gateway daemon",
        description="Run the gateway daemon "
        "(SIGHUP reloads the device list, SIGTERM stops cleanly).",
    )
    run.add_argument("--config", required=True, help="gateway configuration file (TOML)")
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="overrides [log] level of the configuration",
    )
    run.set_defaults(handler=_run)
    check = sub.add_parser("check", help="validate a configuration and its device list, then exit")
    check.add_argument("--config", required=True, help="gateway configuration file (TOML)")
    check.set_defaults(handler=_check)


def _load(path: str):  # type: ignore[no-untyped-def]
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from . import logs

    config = _load(args.config)
    if config is None:
        return 2
    logs.setup(args.log_level or config.log_level)
    from .app import run

    return run(config)


def _check(args: argparse.Namespace) -> int:
    from .devices import DeviceListError, load_devices

    config = _load(args.config)
    if config is None:
        return 2
    try:
        devices = load_devices(config.devices_file)
    except DeviceListError as exc:
        print(f"error: device list: {exc}", file=sys.stderr)
        return 2
    otaa = sum(1 for d in devices.values() if d.otaa)
    print(f"gateway {config.gateway_id}: config ok")
    print(f"  outbox   {config.outbox_path} (max {config.outbox.max_readings} readings)")
    print(f"  udp      {config.udp.listen if config.udp else 'off'}")
    print(f"  serial   {', '.join(s.port for s in config.serial) or 'off'}")
    print(f"  mqtt     {f'{config.mqtt.host}:{config.mqtt.port}' if config.mqtt else 'off'}")
    print(f"  metrics  {config.metrics.listen or 'off'}")
    abp = len(devices) - otaa
    print(f"  devices  {len(devices)} ({otaa} OTAA, {abp} ABP) from {config.devices_file}")
    return 0
