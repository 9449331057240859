"""`allmende node`: flash and provision a node, show what is on it, self-test it, its REPL."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from allmende.boards import UnknownBoard, load_board


def _fail(message: str, *, changed: bool = False) -> int:
    print(f"error: {message}", file=sys.stderr)
    if not changed:
        print("Nothing on the board was changed.", file=sys.stderr)
    return 2


def _port_missing(port: str) -> str | None:
    if port.startswith("/dev/") and not Path(port).exists():
        from allmende.firmware.flash import PORT_HELP

        return f"there is no serial port {port}: {PORT_HELP}"
    return None


def _flash(args: argparse.Namespace) -> int:
    from allmende.firmware import flash

    try:
        board = load_board(args.board)
    except UnknownBoard as exc:
        return _fail(str(exc))
    missing = _port_missing(args.port)
    if missing:
        return _fail(missing)
    token = args.token or os.environ.get("ALLMENDE_FLEET_TOKEN")
    if args.firmware == "bridge":
        return _flash_bridge(args, board)
    try:
        if args.bundle:
            bundle = flash.load_bundle_file(args.bundle)
        else:
            if not (args.fleet and token and args.device):
                return _fail("give a provisioning bundle: --bundle FILE, or --fleet URL "
                             "--token TOKEN (or $ALLMENDE_FLEET_TOKEN) --device DEVEUI")
            bundle = flash.fetch_bundle(args.fleet, token, args.device)
        print(f"flashing {board['name']} on {args.port} as device {bundle.dev_eui}"
              + (f" ({bundle.device})" if bundle.device else ""))
        result = flash.flash(args.port, board, bundle, expect_device=args.device,
                             reprovision=args.reprovision, say=lambda s: print("  " + s))
    except flash.FlashError as exc:
        code = _fail(str(exc), changed=exc.changed)
        if exc.changed:
            print("The previous slot stays active until a flash completes: run the same "
                  "command again.", file=sys.stderr)
        return code
    print("self-test:")
    for line in result.lines:
        print("  " + line.removeprefix("selftest: "))
    if args.fleet and token:
        with flash.Connection(args.port, soft_reset=False) as conn:
            info = flash.probe(conn)
        print(flash.report_to_fleet(args.fleet, token, bundle.dev_eui,
                                    result.report(args.port, info)))
    if result.ok:
        if args.start:
            flash.start_node(args.port)
        started = ("it restarted and now joins the network" if args.start else
                   "reset or power-cycle it to start it")
        print(f"PASS: device {bundle.dev_eui} is flashed (slot {result.slot}) and its "
              f"self-test passed; {started}.")
        return 0
    failed = ", ".join(k for k, v in result.selftest.items() if not v.get("ok"))
    print(f"FAIL: device {bundle.dev_eui} is flashed (slot {result.slot}) but its self-test "
          f"failed: {failed}. Check the wiring of what failed, then `allmende node selftest "
          f"--port {args.port}`.")
    return 1


def _flash_bridge(args: argparse.Namespace, board: dict[str, object]) -> int:
    from allmende.firmware import flash

    if args.bundle or args.fleet or args.device:
        return _fail("the gateway bridge firmware takes no provisioning bundle (a bridge "
                     "holds no keys): leave out --bundle/--fleet/--device")
    print(f"flashing the gateway bridge firmware onto {board['name']} on {args.port}")
    try:
        result = flash.flash(args.port, board, None, firmware="bridge",
                             reprovision=args.reprovision, say=lambda s: print("  " + s))
    except flash.FlashError as exc:
        return _fail(str(exc), changed=exc.changed)
    print("self-test:")
    for line in result.lines:
        print("  " + line.removeprefix("selftest: "))
    if result.ok:
        print(f"PASS: the bridge firmware is flashed (slot {result.slot}) and its radio "
              "answers. Point the gateway's serial modem at this port.")
        return 0
    print(f"FAIL: the bridge firmware is flashed (slot {result.slot}) but the radio does not "
          "answer: check the board type and the radio's wiring.")
    return 1


def _info(args: argparse.Namespace) -> int:
    from allmende.firmware import flash

    missing = _port_missing(args.port)
    if missing:
        return _fail(missing)
    try:
        info = flash.board_info(args.port)
    except flash.FlashError as exc:
        return _fail(str(exc), changed=exc.changed)
    cfg = info.config or {}
    summary = {k: v for k, v in cfg.items() if k not in flash.KEY_FIELDS or k == "dev_eui"}
    keys = sorted(k for k in cfg if k in flash.KEY_FIELDS and k != "dev_eui")
    data = {
        "port": args.port,
        "micropython": info.version_text,
        "mpy": f"v{info.mpy_version[0]}.{info.mpy_version[1]}",
        "arch": info.arch,
        "platform": info.platform,
        "machine": info.machine,
        "chip_id": info.chip_id,
        "board": info.board_name,
        "slot": info.slot,
        "free_kb": info.free_kb,
        "config": summary or None,
        "keys": keys,  # names only: keys never leave the board through this command
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for name, value in data.items():
        if name == "config" and value:
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif name == "keys":
            value = ", ".join(value) + " (set)" if value else "none"
        print(f"{name:12} {value if value is not None else '-'}")
    return 0


def _selftest(args: argparse.Namespace) -> int:
    from allmende.firmware import flash

    missing = _port_missing(args.port)
    if missing:
        return _fail(missing)
    try:
        ok, _, lines = flash.run_selftest(args.port)
    except flash.FlashError as exc:
        return _fail(str(exc), changed=exc.changed)
    for line in lines:
        print(line.removeprefix("selftest: "))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def _console(args: argparse.Namespace) -> int:
    from allmende.firmware import flash

    missing = _port_missing(args.port)
    if missing:
        return _fail(missing)
    return flash.console(args.port)


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fl = sub.add_parser("flash", help="flash, provision and self-test a node",
                        description="Compiles the firmware for the board, copies it into the "
                        "inactive slot, writes config and keys, switches the slot, resets and "
                        "runs the on-board self-test. Safe to repeat. --firmware bridge "
                        "flashes the gateway's serial-modem bridge instead (no bundle).")
    fl.add_argument("--board", required=True, help="board type (allmende board list)")
    fl.add_argument("--firmware", choices=("node", "bridge"), default="node",
                    help="node (default) or bridge: the gateway's serial LoRa modem")
    fl.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    fl.add_argument("--bundle", type=Path, help="provisioning bundle (JSON file)")
    fl.add_argument("--fleet", help="fleet URL to fetch the bundle from and report to")
    fl.add_argument("--token", help="fleet API token (default: $ALLMENDE_FLEET_TOKEN)")
    fl.add_argument("--device", help="DevEUI of the device being flashed")
    fl.add_argument("--reprovision", action="store_true",
                    help="allow giving a board that is another device a new identity")
    fl.add_argument("--start", action="store_true",
                    help="after a passing self-test, hard-reset the board into its application "
                         "(default: it stays at the REPL until reset or power-cycled)")
    fl.set_defaults(handler=_flash)
    for name, handler, text in (
        ("info", _info, "MicroPython version, board, slot, config (no keys)"),
        ("selftest", _selftest, "run the on-board self-test"),
        ("console", _console, "the node's REPL (mpremote)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
        if name == "info":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(handler=handler)
