"""`allmende fleet ...` against a served fleet (uvicorn, in-process ingest worker)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import uvicorn
from allmende.fleet.app import create_app
from allmende.fleet.cli import render_table
from allmende.fleet.settings import FleetSettings

from allmende.cli import main
from tests.fixtures.services import Broker, free_port

from .conftest import ADMIN_TOKEN


@pytest.fixture
def served(settings: FleetSettings, broker: Broker) -> Iterator[str]:
    settings = settings.model_copy(update={"mqtt_port": broker.port})
    app = create_app(settings, ingest_workers=1)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and all(w.ready.is_set() for w in app.state.ingest_workers)):
        assert time.monotonic() < deadline, "fleet did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


def fleet(url: str, *args: str) -> list[str]:
    return ["fleet", *args[:2], "--url", url, "--token", ADMIN_TOKEN, *args[2:]] \
        if args[0] in ("device", "gateway") else \
        ["fleet", args[0], "--url", url, "--token", ADMIN_TOKEN, *args[1:]]


def test_staff_cli_provisions_and_lists_live_values(
        served: str, broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(fleet(served, "gateway", "add", "gw-a", "--json")) == 0
    gateway = json.loads(capsys.readouterr().out)
    bundle = tmp_path / "bundle.json"
    assert main(fleet(served, "device", "add", "--mac", "24:6F:28:AA:BB:CC", "--gateway",
                      "gw-a", "--name", "Luft Nord", "--bundle", str(bundle))) == 0
    out = capsys.readouterr().out
    assert "246F28FFFEAABBCC" in out and "Luft Nord" in out
    assert json.loads(bundle.read_text())["dev_eui"] == "246F28FFFEAABBCC"

    # The gateway publishes a reading; the served fleet's ingest worker stores it.
    reading = {"key": "246F28FFFEAABBCC/01-02/7/PM2.5", "device": "246F28FFFEAABBCC",
               "kind": "air_quality", "quantity": "PM2.5", "value": 12.3, "unit": "ug/m3",
               "time": "2026-11-21T23:40:00.123Z", "fcnt": 7, "session": "01-02",
               "gateway": "gw-a", "rssi": -61.0, "snr": 9.5, "flags": [], "fw": "0.1.0"}
    gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    gw.connect("127.0.0.1", broker.port)
    gw.loop_start()
    gw.publish("allmende/gw/gw-a/up", json.dumps(
        {"gateway": "gw-a", "sent": "2026-11-21T23:40:01Z", "readings": [reading]}),
        qos=1).wait_for_publish(10)
    gw.loop_stop()
    gw.disconnect()
    deadline = time.monotonic() + 30
    while True:
        assert main(fleet(served, "readings", "--device", "246F28FFFEAABBCC")) == 0
        out = capsys.readouterr().out
        if "12.3" in out:
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.1)
    assert out.splitlines()[0].split() == ["TIME", "DEVICE", "QUANTITY", "VALUE", "UNIT",
                                           "GATEWAY", "FLAGS"]
    assert main(fleet(served, "devices")) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("DEV_EUI") and "active" in table[1] and "0.1.0" in table[1]
    assert main(fleet(served, "gateways")) == 0
    assert "gw-a" in capsys.readouterr().out
    assert gateway["mqtt_username"] == "gw-a"

    # Errors say what went wrong, with a non-zero exit.
    assert main(["fleet", "devices", "--url", served, "--token", "alm_wrong"]) == 1
    assert "401" in capsys.readouterr().err


def test_render_table_aligns_columns() -> None:
    text = render_table([{"a": "x", "b": None}, {"a": "longer", "b": [1, 2]}],
                        [("a", "name"), ("b", "tags")])
    assert text.splitlines() == ["NAME    TAGS", "x       -", "longer  1,2"]


def test_bootstrap_token_and_broker_files(settings: FleetSettings, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ALLMENDE_DATABASE_URL", settings.database_url)
    assert main(["fleet", "token", "ops", "--role", "operator"]) == 0
    assert capsys.readouterr().out.strip().startswith("alm_")
    assert main(["fleet", "token", "ops"]) == 1  # the name is taken
    assert "already exists" in capsys.readouterr().err
    assert main(["fleet", "broker", str(tmp_path / "broker")]) == 2  # no fleet broker user yet
    monkeypatch.setenv("ALLMENDE_MQTT_USERNAME", "fleet")
    monkeypatch.setenv("ALLMENDE_MQTT_PASSWORD", "s3cret-fleet")
    assert main(["fleet", "broker", str(tmp_path / "broker")]) == 0
    assert (tmp_path / "broker" / "passwd").read_text().startswith("fleet:$7$101$")
    assert "topic readwrite allmende/#" in (tmp_path / "broker" / "acl").read_text()
