"""`allmende board`: list and show board definitions."""

from __future__ import annotations

import argparse
import json
import sys

from allmende.boards import UnknownBoard, board_names, load_board


def _list(args: argparse.Namespace) -> int:
    rows = [(name, load_board(name)) for name in board_names()]
    width = max(len(name) for name, _ in rows)
    print(f"{'BOARD':<{width}}  {'RADIO':<7}  {'MCU':<8}  TITLE")
    for name, board in rows:
        radio = (board.get("radio") or {}).get("chip", "-")
        print(f"{name:<{width}}  {radio:<7}  {board['mcu']:<8}  {board['title']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    try:
        print(json.dumps(load_board(args.name), indent=2))
    except UnknownBoard as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("list", help="supported boards").set_defaults(handler=_list)
    show = sub.add_parser("show", help="one board's definition (pins, radio, sensors, flash)")
    show.add_argument("name")
    show.set_defaults(handler=_show)
