"""`allmende board`: list and show board definitions, run a virtual board on a pty."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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


def _virtual(args: argparse.Namespace) -> int:
    import signal
    import tempfile
    import threading
    from pathlib import Path

    from allmende.boards.virtual.pty_board import NO_MEDIUM, PtyBoard

    try:
        load_board(args.board)
    except UnknownBoard as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    medium = NO_MEDIUM
    if args.medium:
        host, _, port = args.medium.rpartition(":")
        if not host or not port.isdigit():
            print("error: --medium must be HOST:PORT, e.g. 127.0.0.1:1680", file=sys.stderr)
            return 2
        medium = (host, int(port))
    root = Path(tempfile.mkdtemp(prefix="allmende-vboard-"))
    board = PtyBoard(root, board=args.board, fs=args.fs, state=args.state, medium=medium,
                     node_id=args.node_id, seed=args.seed)
    port = board.start()
    print(port, flush=True)
    print(f"virtual {args.board} board on {port}\n  flash: {board.flash}\n  state: {board.state}\n"
          f"  try: mpremote connect {port} fs ls\nCtrl-C stops the board.", file=sys.stderr,
          flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("list", help="supported boards").set_defaults(handler=_list)
    show = sub.add_parser("show", help="one board's definition (pins, radio, sensors, flash)")
    show.add_argument("name")
    show.set_defaults(handler=_show)
    virtual = sub.add_parser(
        "virtual",
        help="run a virtual board (MicroPython unix port) behind a pty; prints the port",
        description="Starts a virtual board on a pty and prints the port's path (first line "
        "of stdout); mpremote and `allmende node` talk to it like to a USB board. Runs until "
        "Ctrl-C.",
    )
    virtual.add_argument("--board", default="virtual", help="board definition it simulates")
    virtual.add_argument("--fs", type=Path, help="flash directory (kept; default: a new one)")
    virtual.add_argument("--state", type=Path,
                         help="state directory: RTC memory, boot causes, console log")
    virtual.add_argument("--medium", help="radio medium HOST:PORT (default: nobody hears it)")
    virtual.add_argument("--node-id", default="0242ac000001", help="chip id / MAC (hex)")
    virtual.add_argument("--seed", type=int, default=1, help="seed of the simulated world")
    virtual.set_defaults(handler=_virtual)
