"""Mosquitto as a child process: on a free localhost port, with a config written for it.

Used by the demo (`allmende demo`) and by the test suites; production runs the
distribution's mosquitto service with the config `allmende fleet broker` writes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


@dataclass
class Broker:
    port: int
    config: Path
    proc: subprocess.Popen[bytes]

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its password file and ACL."""
        self.proc.send_signal(1)


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `timeout`."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


@contextlib.contextmanager
def run_mosquitto(directory: Path, *, config_lines: list[str] | None = None,
                  port: int | None = None) -> Iterator[Broker]:
    """A mosquitto on a free localhost port. Without config lines: anonymous access allowed."""
    if not os.path.exists(MOSQUITTO):
        raise RuntimeError("mosquitto is not installed: run ./dev.sh test (apt installs it)")
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "mosquitto.conf"
    lines = config_lines if config_lines is not None else ["allow_anonymous true"]
    if os.geteuid() == 0 and not any(line.startswith("user ") for line in lines):
        # As root, mosquitto would switch to the `mosquitto` user, which cannot read files in
        # the test's private temp dir; stay the invoking user, as for a non-root developer.
        lines = ["user root", *lines]
    config.write_text("\n".join([f"listener {port} 127.0.0.1", "persistence false",
                                 "log_dest stderr", *lines, ""]))
    log = open(directory / "mosquitto.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=log)
    try:
        wait_for_port(port, proc)
        yield Broker(port=port, config=config, proc=proc)
    finally:
        stop_process(proc)
        log.close()
