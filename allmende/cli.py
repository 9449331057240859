"""The `allmende` command: one entry point, a subcommand per role, imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# role -> module whose `register(subparsers)` adds that role's commands. Imported lazily so a
# gateway-only install (Raspberry Pi) never imports the fleet or the simulation tools.
ROLES: dict[str, tuple[str, str]] = {
    "demo": ("allmende.demo", "run the whole system on embedded defaults"),
    "board": ("allmende.boards.cli", "board definitions and the virtual board"),
    "node": ("allmende.firmware.cli", "build, flash and check node firmware"),
    "gateway": ("allmende.gateway.cli", "the gateway daemon"),
    "fleet": ("allmende.fleet.cli", "the fleet service and its staff client"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="allmende", description=__doc__)
    sub = parser.add_subparsers(dest="role", metavar="ROLE")
    wanted = argv[0] if argv and not argv[0].startswith("-") else None
    for role, (module, help_text) in ROLES.items():
        role_parser = sub.add_parser(role, help=help_text, description=help_text)
        if role != wanted:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            role_parser.set_defaults(_missing=f"'allmende {role}' is not installed here ({exc}). "
                                     f"Install the extra, e.g. pip install 'allmende[{role}]'.")
            continue
        mod.register(role_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    missing = getattr(args, "_missing", None)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args) or 0


if __name__ == "__main__":
    sys.exit(main())
