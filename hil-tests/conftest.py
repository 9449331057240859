"""The hardware-in-the-loop suite takes one board: `--board virtual` (the default: a virtual
board on a pty, started here) or `--board /dev/ttyUSB0 --board-type heltec-v3` for a real
board on a CI runner. Tests marked `fault_injection` need the virtual board's hooks (power
cuts, sensor faults) and are skipped on a real board."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from allmende.boards import board_names

MPREMOTE = str(Path(sys.executable).parent / "mpremote")
# A test identity (keys never used on a real network). A real board under test is a test
# board: the suite re-provisions it with this bundle unless --bundle names another.
TEST_BUNDLE = {
    "device": "hil-test-node",
    "dev_eui": "70B3D57ED000F001",
    "join_eui": "0000000000000000",
    "app_key": "2B7E151628AED2A6ABF7158809CF4F3C",
    "interval_s": 60,
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop board")
    group.addoption("--board", default="virtual",
                    help="'virtual' (default) or the serial port of a real board")
    group.addoption("--board-type", default=None,
                    help="board definition of the real board (allmende board list)")
    group.addoption("--bundle", default=None, type=Path,
                    help="provisioning bundle to flash (default: a test identity)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fault_injection: needs the virtual board's fault hooks; skipped on real boards")
    config.addinivalue_line(
        "markers", "hears_the_air: listens to the node's uplinks on the virtual radio medium; "
        "skipped on real boards (there a gateway job does it)")
    board = config.getoption("--board", default="virtual")
    board_type = config.getoption("--board-type", default=None)
    if board != "virtual" and not board_type:
        raise pytest.UsageError(f"--board {board} is a real board: say which with --board-type "
                                f"(one of: {', '.join(board_names())})")
    if board_type and board_type not in board_names():
        raise pytest.UsageError(f"--board-type {board_type}: unknown board; known boards: "
                                f"{', '.join(board_names())}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    board = config.getoption("--board", default="virtual")
    here = Path(__file__).parent
    for item in items:
        if here not in Path(str(item.path)).parents:
            continue
        item.add_marker(pytest.mark.hil)
        if board != "virtual" and item.get_closest_marker("fault_injection"):
            item.add_marker(pytest.mark.skip(
                reason=f"needs fault injection, only the virtual board has it (board: {board})"))
        elif board != "virtual" and item.get_closest_marker("hears_the_air"):
            item.add_marker(pytest.mark.skip(
                reason=f"hears uplinks on the virtual radio medium only (board: {board})"))


@dataclass
class HilBoard:
    """The board under test: its port and type, and the virtual board's hooks if virtual."""

    port: str
    type: str
    bundle: Path
    virtual: object | None  # allmende.boards.virtual.pty_board.PtyBoard
    air: socket.socket | None = None  # the virtual radio medium: the node's frames arrive here

    def mpremote(self, *args: str, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([MPREMOTE, "connect", self.port, *args], capture_output=True,
                              text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def node(self, *args: str) -> int:
        from allmende.cli import main

        return main(["node", *args])

    def flash(self, *extra: str) -> int:
        return self.node("flash", "--board", self.type, "--port", self.port, "--bundle",
                         str(self.bundle), "--reprovision", *extra)


@pytest.fixture(scope="session")
def board(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[HilBoard]:
    config = request.config
    where = config.getoption("--board")
    bundle = config.getoption("--bundle")
    if bundle is None:
        bundle = tmp_path_factory.mktemp("bundle") / "bundle.json"
        bundle.write_text(json.dumps(TEST_BUNDLE))
    if where == "virtual":
        from allmende.boards.virtual.pty_board import PtyBoard

        board_type = config.getoption("--board-type") or "virtual"
        air = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        air.bind(("127.0.0.1", 0))
        virtual = PtyBoard(tmp_path_factory.mktemp("vboard"), board=board_type,
                           medium=air.getsockname())
        port = virtual.start()
        try:
            yield HilBoard(port=port, type=board_type, bundle=bundle, virtual=virtual, air=air)
        finally:
            virtual.stop()
            air.close()
        return
    if not Path(where).exists():
        pytest.fail(f"--board {where}: there is no such serial port; is the board plugged in, "
                    "and may this user open it (group dialout, see docs/hil.md)?", pytrace=False)
    yield HilBoard(port=where, type=config.getoption("--board-type"), bundle=bundle,
                   virtual=None)


@pytest.fixture(scope="session")
def flashed(board: HilBoard) -> HilBoard:
    """The board, flashed and provisioned once for the tests that need firmware on it."""
    assert board.flash() == 0
    return board
