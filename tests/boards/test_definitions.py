"""Board definitions are complete and consistent: one source of truth for every pin."""

from __future__ import annotations

import pytest
from allmende.boards import board_names, load_board

from allmende.cli import main

REQUIRED = {"name", "title", "mcu", "micropython", "radio", "i2c", "uart", "sensors", "flash",
            "rtc_memory_bytes", "free_heap_kb"}


def test_the_supported_boards_are_defined() -> None:
    assert {"heltec-v2", "heltec-v3", "ttgo-lora32-v21", "virtual"} <= set(board_names())


@pytest.mark.parametrize("name", board_names())
def test_board_is_complete_and_pins_do_not_collide(name: str) -> None:
    board = load_board(name)
    assert REQUIRED <= board.keys()
    assert board["name"] == name
    radio = board["radio"]
    if radio["chip"].startswith("sx126"):
        assert radio["busy"] is not None and radio["dio1"] is not None
    else:
        assert radio["chip"].startswith("sx127") and radio["dio0"] is not None
    pins = [radio["spi"][k] for k in ("sck", "mosi", "miso")]
    pins += [radio[k] for k in ("cs", "reset", "dio0", "dio1", "busy") if radio[k] is not None]
    pins += [board["i2c"]["sda"], board["i2c"]["scl"]]
    pins += [board["uart"]["sds011"][k] for k in ("tx", "rx")]
    if board.get("battery"):
        pins.append(board["battery"]["adc"])
    assert len(pins) == len(set(pins)), f"{name}: a pin serves two roles: {sorted(pins)}"
    assert board["flash"]["slots"] == ["/app_a", "/app_b"]


def test_cli_lists_boards(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["board", "list"]) == 0
    out = capsys.readouterr().out
    assert "heltec-v3" in out and "sx1262" in out
    assert main(["board", "show", "no-such-board"]) == 2
    assert "known boards" in capsys.readouterr().err
