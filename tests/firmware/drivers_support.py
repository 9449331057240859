"""Shared by the sensor-driver tests: driver code on the unix port, pure parts in CPython."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from allmende.boards.virtual import unix_port
from allmende.firmware.app import payload

HARNESS = Path(__file__).resolve().parent / "mp_drivers"
PATH = [unix_port.FIRMWARE_APP, unix_port.RUNTIME, HARNESS]
HEAP = "100k"  # an ESP32's free heap after boot


def run_mp(code: str) -> list[Any]:
    """Runs `code` on the unix port with the heap capped; returns every `report(...)` value."""
    proc = unix_port.run(code, path=PATH, heap=HEAP, timeout=60)
    assert proc.returncode == 0, f"unix port failed:\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    results = [json.loads(line[7:]) for line in lines if line.startswith("RESULT ")]
    assert results, f"no result reported:\n{proc.stdout}"
    return results


def load(path: Path, name: str) -> ModuleType:
    """Imports a firmware or runtime file in CPython (for its pure functions).

    Firmware modules import the codec by its on-board name, `payload`: that is the same file
    CPython knows as allmende.firmware.app.payload.
    """
    sys.modules.setdefault("payload", payload)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def driver(name: str) -> ModuleType:
    return load(unix_port.FIRMWARE_APP / "drivers" / f"{name}.py", f"_driver_{name}")


def sim(name: str) -> ModuleType:
    return load(unix_port.RUNTIME / f"{name}.py", f"_runtime_{name}")
