"""Flash, boot and self-test on the board under test, and a power cut in the middle of a flash
that must leave a board which can simply be flashed again."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from allmende.boards import load_board
from allmende.firmware import flash

if TYPE_CHECKING:  # the fixture's type, from this suite's conftest
    from conftest import HilBoard


def _slot_and_dev_eui(board: HilBoard) -> tuple[str, str]:
    out = board.mpremote("exec", "import json\nprint(open('slot').read().strip(), "
                         "json.load(open('config.json'))['dev_eui'])").stdout
    slot, dev_eui = out.split()
    return slot, dev_eui


def test_flash_provisions_and_passes_the_selftest(board: HilBoard,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert board.flash() == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "radio" in out
    expected = json.loads(board.bundle.read_text())["dev_eui"].upper()
    assert _slot_and_dev_eui(board)[1] == expected


def test_reflash_is_safe_and_switches_slot(flashed: HilBoard) -> None:
    before, dev_eui = _slot_and_dev_eui(flashed)
    assert flashed.flash() == 0
    after, again = _slot_and_dev_eui(flashed)
    assert {before, after} == {"a", "b"} and again == dev_eui


def test_board_boots_the_active_slot_after_a_hard_reset(flashed: HilBoard) -> None:
    slot = _slot_and_dev_eui(flashed)[0]
    flashed.mpremote("reset")
    time.sleep(0.5)  # the port may vanish for a moment on USB boards; not an assertion
    probe = ("import sys, json\nprint([p for p in sys.path if p.startswith('app_')], "
             "json.load(open('board.json'))['name'])")
    out = flashed.mpremote("exec", probe).stdout
    assert f"['app_{slot}']" in out and flashed.type in out


def test_selftest_command_reports_pass(flashed: HilBoard,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert flashed.node("selftest", "--port", flashed.port) == 0
    assert capsys.readouterr().out.strip().endswith("PASS")


@pytest.mark.fault_injection
def test_selftest_names_a_sensor_that_does_not_answer(flashed: HilBoard,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    virtual = flashed.virtual
    assert virtual is not None
    virtual.node.set_faults({"bme280": "nack"})  # type: ignore[attr-defined]
    try:
        assert flashed.node("selftest", "--port", flashed.port) == 1
        out = capsys.readouterr().out
        assert "bme280   FAIL" in out and "radio    ok" in out
    finally:
        virtual.node.set_faults({})  # type: ignore[attr-defined]


@pytest.mark.fault_injection
def test_power_cut_during_flashing_leaves_a_board_that_flashes_again(flashed: HilBoard) -> None:
    virtual = flashed.virtual
    assert virtual is not None
    fl: Path = virtual.flash  # type: ignore[attr-defined]
    active, dev_eui = _slot_and_dev_eui(flashed)
    target = fl / ("app_b" if active == "a" else "app_a")
    definition = load_board(flashed.type)
    bundle = flash.load_bundle_file(flashed.bundle)
    errors: list[Exception] = []
    writing = threading.Event()

    def progress(line: str) -> None:
        if line.startswith("compiled"):  # said just before the new slot is written
            writing.set()

    def flashing() -> None:
        try:
            flash.flash(flashed.port, definition, bundle, reprovision=True, say=progress)
        except flash.FlashError as exc:
            errors.append(exc)

    def stamps() -> dict[Path, int]:
        found = {}
        for p in list(target.rglob("*.mpy")):
            try:
                found[p] = p.stat().st_mtime_ns
            except FileNotFoundError:  # removed under our feet: the flasher clears the slot
                pass
        return found

    old_slot = stamps()  # what a previous flash left in the slot about to be rewritten

    worker = threading.Thread(target=flashing)
    worker.start()
    try:
        # Cut the power while the new slot is being written (a few modules in).
        assert writing.wait(60), f"the flash never got to writing: {errors}"
        deadline = time.monotonic() + 60
        while sum(1 for p, t in stamps().items() if old_slot.get(p) != t) < 3:
            assert worker.is_alive(), f"the flash ended before the cut: {errors}"
            assert time.monotonic() < deadline, "the flash never started writing"
            time.sleep(0.005)
        virtual.power_cut(restore=False)  # type: ignore[attr-defined]
        worker.join(60)
        assert not worker.is_alive()
        assert errors and errors[0].changed  # the flasher noticed; it says: repeat
    finally:
        virtual.power_on()  # type: ignore[attr-defined]
        worker.join(60)
    # Power back: the board still boots the old slot with the old config.
    assert _slot_and_dev_eui(flashed) == (active, dev_eui)
    assert flashed.flash() == 0
    assert _slot_and_dev_eui(flashed)[0] != active
