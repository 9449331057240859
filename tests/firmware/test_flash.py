"""`allmende node flash/info/selftest` against the virtual board on a pty: provisioning works
and is safe to repeat, and every refusal says what to do and leaves the board untouched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from allmende.boards import load_board
from allmende.boards.virtual.pty_board import PtyBoard
from allmende.firmware import flash
from allmende.fleet.app import create_app
from allmende.fleet.models import DeviceCreate
from allmende.fleet.provisioning import create_device
from allmende.fleet.security import KeyVault
from allmende.fleet.settings import FleetSettings
from sqlmodel import Session

from allmende.cli import main
from tests.fixtures.services import serve_app

DEV_EUI = "70B3D57ED0000001"
BUNDLE = {
    "device": "aq-marktplatz-01",
    "dev_eui": DEV_EUI,
    "join_eui": "0000000000000000",
    "app_key": "2B7E151628AED2A6ABF7158809CF4F3C",
    "interval_s": 120,
}


def snapshot(flash_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(flash_dir)): p.read_bytes()
            for p in sorted(flash_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def board(tmp_path: Path) -> Iterator[PtyBoard]:
    with PtyBoard(tmp_path / "board") as b:
        yield b


def write_bundle(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps({**BUNDLE, **changes}))
    return path


def node(*args: str) -> int:
    return main(["node", *args])


def test_flash_provisions_and_reflash_switches_slots(board: PtyBoard, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bundle = write_bundle(tmp_path)
    assert node("flash", "--board", "virtual", "--port", str(board.port), "--bundle",
                str(bundle)) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "radio" in out and "sds011" in out
    fl = board.flash
    assert (fl / "slot").read_text() == "a"
    assert json.loads((fl / "config.json").read_text())["dev_eui"] == DEV_EUI
    assert json.loads((fl / "board.json").read_text())["name"] == "virtual"
    assert (fl / "app_a" / "selftest.mpy").exists()
    # Only what this board needs: its radio is an SX1276, so no SX126x driver.
    assert (fl / "app_a" / "drivers" / "sx127x.mpy").exists()
    assert not (fl / "app_a" / "drivers" / "sx126x.mpy").exists()
    assert not list(fl.glob("*.new"))

    # The same device again: the other slot, the LoRaWAN session and old config kept.
    (fl / "lorawan.bin").write_bytes(b"session")
    assert node("flash", "--board", "virtual", "--port", str(board.port), "--bundle",
                str(bundle)) == 0
    assert (fl / "slot").read_text() == "b"
    assert (fl / "lorawan.bin").read_bytes() == b"session"
    assert json.loads((fl / "config.json.old").read_text())["dev_eui"] == DEV_EUI

    assert node("info", "--port", str(board.port)) == 0
    info = capsys.readouterr().out
    assert "slot         b" in info and DEV_EUI in info and "virtual" in info
    assert BUNDLE["app_key"] not in info and "app_key" in info  # named, never shown
    assert node("selftest", "--port", str(board.port)) == 0
    assert "PASS" in capsys.readouterr().out


def test_refusals_change_nothing(board: PtyBoard, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    port = str(board.port)
    assert node("flash", "--board", "virtual", "--port", port, "--bundle",
                str(write_bundle(tmp_path))) == 0
    capsys.readouterr()
    before = snapshot(board.flash)

    # A bundle that names another device than the one being flashed.
    assert node("flash", "--board", "virtual", "--port", port, "--device", "70B3D57ED0000002",
                "--bundle", str(write_bundle(tmp_path))) == 2
    err = capsys.readouterr().err
    assert "is for device 70B3D57ED0000001, not 70B3D57ED0000002" in err
    assert "Nothing on the board was changed" in err

    # This board is another device already.
    other = write_bundle(tmp_path, dev_eui="70B3D57ED0000009")
    assert node("flash", "--board", "virtual", "--port", port, "--bundle", str(other)) == 2
    assert "--reprovision" in capsys.readouterr().err

    # A bundle bound to another chip.
    chip = write_bundle(tmp_path, mac="02:42:ac:00:00:99")
    assert node("flash", "--board", "virtual", "--port", port, "--bundle", str(chip)) == 2
    assert "chip id 0242ac000099" in capsys.readouterr().err

    # The wrong board type for what runs on the port.
    assert node("flash", "--board", "heltec-v3", "--port", port, "--bundle",
                str(write_bundle(tmp_path))) == 2
    assert "check --board" in capsys.readouterr().err

    # An invalid bundle.
    bad = write_bundle(tmp_path, app_key="1234")
    assert node("flash", "--board", "virtual", "--port", port, "--bundle", str(bad)) == 2
    assert "app_key" in capsys.readouterr().err

    assert snapshot(board.flash) == before


def test_wrong_micropython_version_is_refused_with_what_to_install(board: PtyBoard) -> None:
    definition = load_board("virtual")
    definition["micropython"] = {**definition["micropython"], "version": "1.30",
                                 "mpy_sub_version": 4}
    before = snapshot(board.flash)
    bundle = flash.parse_bundle(dict(BUNDLE), source="test")
    with pytest.raises(flash.FlashError) as refused:
        flash.flash(str(board.port), definition, bundle, say=lambda s: None)
    message = str(refused.value)
    assert "runs MicroPython 1.29.0" in message and "needs MicroPython 1.30 (.mpy v6.4)" in message
    assert "Install MicroPython 1.30" in message
    assert not refused.value.changed
    assert snapshot(board.flash) == before


def test_reprovision_drops_the_old_devices_session(board: PtyBoard, tmp_path: Path) -> None:
    port = str(board.port)
    assert node("flash", "--board", "virtual", "--port", port, "--bundle",
                str(write_bundle(tmp_path))) == 0
    (board.flash / "lorawan.bin").write_bytes(b"old session")
    other = write_bundle(tmp_path, dev_eui="70B3D57ED0000009")
    assert node("flash", "--board", "virtual", "--port", port, "--bundle", str(other),
                "--reprovision") == 0
    assert json.loads((board.flash / "config.json").read_text())["dev_eui"] == "70B3D57ED0000009"
    # (the new firmware may have started a session of its own since)
    session = board.flash / "lorawan.bin"
    assert not session.exists() or session.read_bytes() != b"old session"
    assert not (board.flash / "config.json.old").exists()


def test_missing_port_and_missing_bundle(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    assert node("flash", "--board", "virtual", "--port", "/dev/ttyUSB77", "--bundle",
                str(write_bundle(tmp_path))) == 2
    err = capsys.readouterr().err
    assert "there is no serial port /dev/ttyUSB77" in err and "dialout" in err
    assert node("info", "--port", "/dev/ttyUSB77") == 2
    with pytest.raises(SystemExit):
        node("flash", "--board", "virtual", "--bundle", "x.json")  # no --port at all


def test_bundle_from_the_fleet_and_report_back(board: PtyBoard, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Against the real fleet service: the bundle it generated is flashed, the report lands
    in its audit log and sets the device's firmware version."""
    settings = FleetSettings(database_url=f"sqlite:///{tmp_path / 'fleet.db'}",
                             secret_key="flash-test-secret-01", admin_token="alm_flash_admin")
    app = create_app(settings)
    with Session(app.state.engine) as session:
        create_device(session, KeyVault(settings.secret_key),
                      DeviceCreate(dev_eui=DEV_EUI, board="virtual"), actor="test")
        session.commit()
    with serve_app(app) as url:
        assert node("flash", "--board", "virtual", "--port", str(board.port), "--fleet", url,
                    "--token", "alm_flash_admin", "--device", DEV_EUI) == 0
        # A device the fleet does not know: refused, nothing written.
        before = snapshot(board.flash)
        assert node("flash", "--board", "virtual", "--port", str(board.port), "--fleet", url,
                    "--token", "alm_flash_admin", "--device", "70B3D57ED00000FF") == 2
        assert snapshot(board.flash) == before
        headers = {"Authorization": "Bearer alm_flash_admin"}
        audit = httpx.get(f"{url}/api/v1/audit", params={"limit": 1000}, headers=headers).json()
        device = httpx.get(f"{url}/api/v1/devices/{DEV_EUI}", headers=headers).json()
    flashes = [e for e in audit if e["action"] == "flash"]
    assert len(flashes) == 1 and flashes[0]["entity_id"] == DEV_EUI
    report = flashes[0]["data"]
    assert report["ok"] is True and report["selftest"]["radio"]["ok"] is True
    assert device["firmware_version"] == report["firmware"]
    assert "flash report recorded" in capsys.readouterr().out


def test_gateway_bridge_firmware_is_flashed_the_same_way(board: PtyBoard, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         ) -> None:
    import serial

    port = str(board.port)
    assert node("flash", "--board", "virtual", "--port", port, "--bundle",
                str(write_bundle(tmp_path))) == 0
    # A provisioned node is not silently turned into a bridge: its keys would go.
    assert node("flash", "--firmware", "bridge", "--board", "virtual", "--port", port) == 2
    assert "--reprovision" in capsys.readouterr().err
    assert node("flash", "--firmware", "bridge", "--board", "virtual", "--port", port,
                "--reprovision") == 0
    assert "radio    ok" in capsys.readouterr().out
    fl = board.flash
    slot = fl / f"app_{(fl / 'slot').read_text()}"
    assert (slot / "bridge.mpy").exists() and (slot / "protocol.mpy").exists()
    assert not (slot / "airnode.mpy").exists() and not (slot / "drivers" / "bme280.mpy").exists()
    assert not (fl / "config.json").exists()  # no keys on a bridge
    # After a reset the bridge firmware answers its line protocol on the same port.
    board.press_reset()
    with serial.Serial(port, 115200, timeout=1) as line:
        reply = b""
        for _ in range(30):
            line.write(b"HELLO\n")
            reply += line.read_until(b"\n")
            if b"HELLO allmende-bridge" in reply:
                break
    assert b"HELLO allmende-bridge 1 sx1276" in reply


def test_a_virtual_heltec_v3_takes_the_heltec_v3_firmware(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          ) -> None:
    with PtyBoard(tmp_path / "heltec", board="heltec-v3") as heltec:
        port = str(heltec.port)
        assert node("flash", "--board", "heltec-v3", "--port", port, "--bundle",
                    str(write_bundle(tmp_path))) == 0
        assert "sx1262 answers" in capsys.readouterr().out
        drivers = heltec.flash / "app_a" / "drivers"
        assert (drivers / "sx126x.mpy").exists() and not (drivers / "sx127x.mpy").exists()
        assert not (drivers / "scd4x.mpy").exists()  # not fitted on this board
        # The simulated hardware is a heltec-v3: the virtual board's firmware is refused.
        assert node("flash", "--board", "virtual", "--port", port, "--bundle",
                    str(write_bundle(tmp_path))) == 2
        assert "simulates a heltec-v3, not a virtual" in capsys.readouterr().err
