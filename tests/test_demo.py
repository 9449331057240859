"""The whole path, as `allmende demo` runs it: virtual nodes (MicroPython unix port) → radio
medium → gateway daemon → Mosquitto (password file + ACL from the fleet) → fleet → a real
SensorThings server. Observations there must equal what the simulated world was."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from allmende.firmware.app import payload

from allmende.demo import DemoOptions, running
from tests.fixtures.services import run_sensorthings

pytestmark = pytest.mark.slow

# quantity -> (field of the simulated world, UCUM unit, tolerance: half a payload step plus
# the sensor's own resolution)
FIELDS = {quantity: (name, unit) for name, quantity, unit, _ in payload.fields(1, 1)}
TOLERANCE = {"pm25": 0.05, "pm10": 0.05, "temperature": 0.006, "humidity": 0.26,
             "pressure": 0.06, "battery": 0.011, "co2": 0.5}


async def _observations(url: str) -> dict[tuple[str, str], tuple[dict[str, Any], list[dict]]]:
    """(device, quantity) -> (datastream, observations), read from the server's API."""
    out = {}
    async with httpx.AsyncClient(timeout=20) as client:
        streams = (await client.get(f"{url}/Datastreams", params={"$top": 100})).json()["value"]
        for stream in streams:
            device, quantity = stream["name"].split(" ", 1)
            obs = await client.get(f"{url}/Datastreams('{stream['@iot.id']}')/Observations",
                                   params={"$top": 100, "$orderby": "resultTime"})
            out[device, quantity] = (stream, obs.json()["value"])
    return out


def test_virtual_nodes_reach_sensorthings_with_the_simulated_values(tmp_path: Path) -> None:
    nodes = 2

    async def scenario() -> tuple[Any, dict, dict[str, list[dict]], float]:
        opts = DemoOptions(workdir=tmp_path / "demo", nodes=nodes, interval_s=10, quiet=True,
                           sensorthings_url=sta.url)
        started = time.time()
        async with running(opts) as demo:
            deadline = time.monotonic() + 240
            observed: dict = {}
            while time.monotonic() < deadline:
                await asyncio.sleep(3)
                observed = await _observations(sta.url)
                counts = [len(obs) for (_, q), (_, obs) in observed.items() if q == "PM2.5"]
                if len(counts) == nodes and min(counts) >= 2:
                    break
            summary = await demo.summary()
            truth = {eui: node.truth() for eui, node in demo.node_by_eui.items()}
        return summary, observed, truth, started

    with run_sensorthings(tmp_path / "sta") as sta:
        summary, observed, truth, started = asyncio.run(scenario())

    assert summary.devices_seen == nodes and summary.node_crashes == 0
    assert summary.readings_forwarded >= nodes * 2 * len(FIELDS)
    assert {device for device, _ in observed} == set(truth)
    for (device, quantity), (stream, observations) in observed.items():
        name, unit = FIELDS[quantity]
        assert stream["unitOfMeasurement"]["symbol"] == unit
        assert observations, f"no observations of {device} {quantity}"
        world = [t[name] for t in truth[device]]
        for obs in observations:
            # Each value is one the simulated sensor really saw during one of the wakes.
            assert min(abs(obs["result"] - v) for v in world) <= TOLERANCE[name], (
                device, quantity, obs["result"], world)
            when = datetime.fromisoformat(obs["phenomenonTime"].replace("Z", "+00:00"))
            assert when.tzinfo is not None and when.utcoffset().total_seconds() == 0
            assert started - 2 <= when.timestamp() <= time.time()


def test_quick_start_demo_runs_for_a_while_and_summarises(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "allmende.cli", "demo", "--for", "35", "--nodes", "2",
         "--interval", "10", "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "admin token" in out and "allmende fleet readings" in out
    assert "devices seen:       2 of 2" in out, out[-2000:]
    stored = int(out.split("readings stored:")[1].split()[0])
    assert stored >= 2 * len(FIELDS)
    assert "(0 crashed)" in out


def test_a_node_flashed_from_the_fleet_joins_and_its_readings_reach_the_fleet(
        tmp_path: Path) -> None:
    """Issue 5's loop: staff register a device, the gateway syncs it, a technician flashes a
    (virtual, pty) board with the fleet's bundle, and the node's OTAA readings are stored."""
    from allmende.boards.virtual.pty_board import PtyBoard

    from allmende.cli import main

    async def scenario() -> tuple[int, list[dict], dict]:
        opts = DemoOptions(workdir=tmp_path / "demo", nodes=0, interval_s=10, quiet=True)
        async with running(opts) as demo:
            created = await demo._api("POST", "/devices", {
                "mac": "02:42:ac:00:00:77", "name": "aq-flashed", "kind": "air_quality",
                "board": "virtual", "home_gateway_id": "gw-demo-1",
                "latitude": 49.4, "longitude": 8.7})
            dev_eui = created["device"]["dev_eui"]
            deadline = time.monotonic() + 60
            cache = demo.gateway_devices
            while not cache.exists() or dev_eui.lower() not in cache.read_text().lower():
                assert time.monotonic() < deadline, "the gateway never synced the new device"
                await asyncio.sleep(0.5)
            board = PtyBoard(tmp_path / "board", medium=demo.medium.address,
                             node_id="0242ac000077")
            port = await asyncio.to_thread(board.start)
            try:
                code = await asyncio.to_thread(
                    main, ["node", "flash", "--board", "virtual", "--port", port, "--fleet",
                           demo.api_url, "--token", demo.admin_token, "--device", dev_eui,
                           "--start"])
                readings: list[dict] = []
                deadline = time.monotonic() + 150
                while code == 0 and not readings and time.monotonic() < deadline:
                    await asyncio.sleep(2)
                    page = await demo._api("GET", f"/readings?device={dev_eui}")
                    readings = page["items"]
                device = await demo._api("GET", f"/devices/{dev_eui}")
            finally:
                await asyncio.to_thread(board.stop)
        return code, readings, device

    code, readings, device = asyncio.run(scenario())
    assert code == 0, "flashing from the fleet failed"
    assert readings, "no reading of the flashed node reached the fleet"
    assert {r["gateway"] for r in readings} == {"gw-demo-1"}
    assert device["state"] == "active" and device["firmware_version"]
