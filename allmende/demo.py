"""`allmende demo`: the whole system on one machine, on embedded defaults.

A broker (Mosquitto when installed, with the password file and ACL the fleet writes; else
an in-process amqtt), the fleet on SQLite with its API, a gateway daemon provisioned
through that API (devices and keys synced from the fleet), the radio medium as its packet
forwarder, and virtual air-quality nodes on the MicroPython unix port. Staff-side the
demo prints the API URL, a token and the CLI command that lists live values, then every
reading the fleet stores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GATEWAY_ID = "gw-demo-1"
GATEWAY_EUI = "b827ebfffe000001"
FLEET_MQTT_USER = "fleet"


@dataclass
class DemoOptions:
    workdir: Path
    nodes: int = 3
    interval_s: int = 20
    duration_s: float | None = None  # None: until Ctrl-C
    broker: str = "auto"  # auto, mosquitto, amqtt
    sensorthings_url: str | None = None
    ngsi_ld_url: str | None = None
    api_port: int = 0  # 0: a free port
    quiet: bool = False


@dataclass
class Summary:
    devices: int
    devices_seen: int
    readings_stored: int
    readings_forwarded: int
    forwarded_to: str
    node_wakes: int
    node_crashes: int
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        return (
            f"devices seen:       {self.devices_seen} of {self.devices}\n"
            f"readings stored:    {self.readings_stored}\n"
            f"readings forwarded: {self.readings_forwarded} ({self.forwarded_to})\n"
            f"node wakes:         {self.node_wakes} ({self.node_crashes} crashed)"
        )


def _say(opts: DemoOptions, text: str) -> None:
    if not opts.quiet:
        print(text, flush=True)


def mosquitto_installed() -> bool:
    from allmende.fleet.mosquitto import MOSQUITTO

    return os.path.exists(MOSQUITTO)


class Demo:
    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts
        self.work = opts.workdir
        self.stack = contextlib.AsyncExitStack()
        self.nodes: list[Any] = []
        self.node_by_eui: dict[str, Any] = {}
        self.api_url = ""
        self.admin_token = ""
        self.broker_kind = ""
        self.printed = 0

    # -- the parts, in the order a utility would bring them up -----------------------------
    async def start(self) -> None:
        from allmende.fleet.mosquitto import free_port

        self.work.mkdir(parents=True, exist_ok=True)
        for stale in ("fleet.db", "gateway", "nodes", "broker"):
            path = self.work / stale
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        self.broker_kind = self._choose_broker()
        self.broker_port = free_port()
        self.fleet_mqtt_password = secrets.token_urlsafe(18)
        await self._start_fleet()
        credentials, bundles = await self._provision()
        await self._start_broker()
        gateway_udp = await self._start_gateway(credentials)
        await self._start_radio(gateway_udp, bundles)

    def _choose_broker(self) -> str:
        choice = self.opts.broker
        if choice == "auto":
            choice = "mosquitto" if mosquitto_installed() else "amqtt"
        if choice == "mosquitto" and not mosquitto_installed():
            raise SystemExit("mosquitto is not installed (apt install mosquitto), "
                             "or use --broker amqtt")
        return choice

    async def _start_fleet(self) -> None:
        import uvicorn

        from allmende.fleet.app import create_app
        from allmende.fleet.mosquitto import free_port
        from allmende.fleet.settings import FleetSettings

        self.admin_token = "alm_demo_" + secrets.token_urlsafe(12)
        mosquitto = self.broker_kind == "mosquitto"
        settings = FleetSettings(
            database_url=f"sqlite:///{self.work / 'fleet.db'}",
            admin_token=self.admin_token,
            mqtt_port=self.broker_port,
            mqtt_username=FLEET_MQTT_USER if mosquitto else None,
            mqtt_password=self.fleet_mqtt_password if mosquitto else None,
            ingest_group="fleet" if mosquitto else "",  # amqtt has no shared subscriptions
            uplink_interval_s=self.opts.interval_s,
            sensorthings_url=self.opts.sensorthings_url,
            ngsi_ld_url=self.opts.ngsi_ld_url,
        )
        self.settings = settings
        self.app = create_app(settings, ingest_workers=1,
                              forward=bool(self.opts.sensorthings_url or self.opts.ngsi_ld_url))
        port = self.opts.api_port or free_port()
        server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve(), name="fleet-api")

        async def stop_api() -> None:
            server.should_exit = True
            await asyncio.wait_for(task, 15)

        self.stack.push_async_callback(stop_api)
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the fleet API did not start")
            await asyncio.sleep(0.05)
        self.api_url = f"http://127.0.0.1:{port}"

    async def _api(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        async with httpx.AsyncClient(base_url=self.api_url, timeout=20,
                                     headers={"Authorization": f"Bearer {self.admin_token}"}) as c:
            response = await c.request(method, f"/api/v1{path}", json=body)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    async def _provision(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """As the utility's staff would, through the API: a gateway, then the nodes."""
        credentials = await self._api("POST", "/gateways", {
            "gateway_id": GATEWAY_ID, "name": "Demo gateway, Marktplatz",
            "latitude": 49.41, "longitude": 8.69})
        bundles = []
        for i in range(self.opts.nodes):
            provisioned = await self._api("POST", "/devices", {
                "mac": f"02:42:ac:00:00:{i + 1:02x}", "name": f"aq-demo-{i + 1}",
                "kind": "air_quality", "board": "virtual", "home_gateway_id": GATEWAY_ID,
                "latitude": 49.41 + i / 1000, "longitude": 8.69})
            bundles.append(provisioned["bundle"])
        return credentials, bundles

    async def _start_broker(self) -> None:
        if self.broker_kind == "amqtt":
            await self._start_amqtt()
            return
        from sqlmodel import Session

        from allmende.fleet.broker import write_broker_files
        from allmende.fleet.mosquitto import run_mosquitto

        with Session(self.app.state.engine) as session:
            files = write_broker_files(session, self.work / "broker",
                                       service_users={FLEET_MQTT_USER: self.fleet_mqtt_password})
        self.stack.enter_context(run_mosquitto(
            self.work / "broker", port=self.broker_port,
            config_lines=["allow_anonymous false", f"password_file {files.password_file}",
                          f"acl_file {files.acl_file}"]))

    async def _start_amqtt(self) -> None:
        from amqtt.broker import Broker

        broker = Broker({"listeners": {"default": {"type": "tcp",
                                                   "bind": f"127.0.0.1:{self.broker_port}"}},
                         "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                                     {"allow_anonymous": True}}})
        await broker.start()
        self.stack.push_async_callback(broker.shutdown)
        _say(self.opts, "note: no Mosquitto installed; using the embedded amqtt broker "
                        "(anonymous, no per-gateway ACL: for trying out only)")

    async def _start_gateway(self, credentials: dict[str, Any]) -> int:
        from allmende.fleet.mosquitto import free_port

        gw_dir = self.work / "gateway"
        gw_dir.mkdir(parents=True)
        token_file = gw_dir / "fleet.token"
        token_file.write_text(credentials["api_token"])
        token_file.chmod(0o600)
        udp_port = free_port()
        mqtt = [f"port = {self.broker_port}", 'host = "127.0.0.1"']
        if self.broker_kind == "mosquitto":
            mqtt += [f'username = "{credentials["mqtt_username"]}"',
                     f'password = "{credentials["mqtt_password"]}"']
        config = gw_dir / "gateway.toml"
        config.write_text("\n".join([
            "[gateway]", f'id = "{GATEWAY_ID}"', 'data_dir = "data"',
            'devices = "devices.json"', "",
            "[udp]", f'listen = "127.0.0.1:{udp_port}"', "",
            "[mqtt]", *mqtt, "",
            "[fleet]", f'url = "{self.api_url}"', 'token_file = "fleet.token"',
            "interval_s = 5", "",
            "[metrics]", 'listen = ""', "",
        ]))
        log = open(gw_dir / "gateway.log", "wb")  # noqa: SIM115 (closed on exit)
        proc = subprocess.Popen(
            [sys.executable, "-m", "allmende.cli", "gateway", "run", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT,
        )

        def stop_gateway() -> None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()

        self.stack.callback(stop_gateway)
        self.gateway = proc
        self.gateway_devices = gw_dir / "devices.json"
        return udp_port

    async def _start_radio(self, gateway_udp: int, bundles: list[dict[str, Any]]) -> None:
        from allmende.boards import load_board
        from allmende.boards.virtual.medium import ForwarderConfig, RadioMedium
        from allmende.boards.virtual.node import VirtualNode
        from allmende.firmware import build
        from allmende.firmware.flash import parse_bundle

        medium = self.medium = RadioMedium(seed=1, forwarders=[
            ForwarderConfig(GATEWAY_EUI, "127.0.0.1", gateway_udp)])
        await self.stack.enter_async_context(medium)
        board = load_board("virtual")
        for i, raw in enumerate(bundles):
            bundle = parse_bundle(raw, source="fleet")
            config = dict(bundle.config, interval_s=self.opts.interval_s,
                          sds011={"warmup_s": 5, "samples": 3})
            node = VirtualNode(self.work / "nodes" / bundle.dev_eui, medium=medium.address,
                               seed=i + 1, node_id=f"0242ac0000{i + 1:02x}")
            build.stage(node.flash, board=board, config=config)
            self.nodes.append(node)
            self.node_by_eui[bundle.dev_eui] = node
        for node in self.nodes:
            node.start()
            self.stack.push_async_callback(asyncio.to_thread, node.stop, 60)

    # -- watching ----------------------------------------------------------------------------
    async def print_readings(self) -> None:
        """Every reading the fleet stores, as the city's platform would see it."""
        import aiomqtt

        s = self.settings
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.broker_port,
                                          username=s.mqtt_username, password=s.mqtt_password,
                                          identifier=f"demo-printer-{secrets.token_hex(3)}") as c:
                    await c.subscribe(s.readings_topic, qos=1)
                    async for message in c.messages:
                        self._print_batch(message.payload)
            except aiomqtt.MqttError:
                await asyncio.sleep(1)

    def _print_batch(self, payload: Any) -> None:
        try:
            readings = json.loads(payload)["readings"]
        except (ValueError, KeyError, TypeError):
            return
        for r in readings:
            self.printed += 1
            _say(self.opts, f"{r.get('time', '')[:19]}  {r.get('device')}  "
                            f"{r.get('quantity'):<17} {r.get('value'):>8} {r.get('unit')}  "
                            f"fcnt {r.get('fcnt')}  via {r.get('gateway')}")

    async def summary(self) -> Summary:
        devices = await self._api("GET", "/devices")
        counters = await self._api("GET", "/counters")
        platforms = [(name, counters.get(f"forwarded_{target}", 0)) for name, target, url in (
            ("SensorThings", "sensorthings", self.opts.sensorthings_url),
            ("NGSI-LD", "ngsi-ld", self.opts.ngsi_ld_url)) if url]
        if platforms:  # the first platform's count; each one's in the description
            forwarded = platforms[0][1]
            target = ", ".join(f"{name}: {count}" for name, count in platforms)
        else:  # the fleet's MQTT topic of normalized readings, as this demo received it
            target, forwarded = f"MQTT {self.settings.readings_topic}", self.printed
        wakes = [w for node in self.nodes for w in node.wakes]
        return Summary(
            devices=len(devices),
            devices_seen=sum(1 for d in devices if d.get("last_seen")),
            readings_stored=counters.get("readings_stored", 0),
            readings_forwarded=forwarded,
            forwarded_to=target,
            node_wakes=len(wakes),
            node_crashes=sum(1 for w in wakes if w.kind not in ("deepsleep", "power_cut")),
        )

    def banner(self) -> str:
        return "\n".join([
            "allmende demo is running",
            f"  fleet API   {self.api_url}/api/v1   (OpenAPI: {self.api_url}/docs)",
            f"  admin token {self.admin_token}",
            f"  broker      {self.broker_kind} on 127.0.0.1:{self.broker_port}",
            f"  gateway     {GATEWAY_ID} (log: {self.work / 'gateway' / 'gateway.log'})",
            f"  nodes       {len(self.nodes)} virtual air-quality nodes, every "
            f"{self.opts.interval_s} s (consoles: {self.work / 'nodes'}/*/state/console.log)",
            "  live values:",
            f"    ALLMENDE_API_URL={self.api_url} ALLMENDE_TOKEN={self.admin_token} "
            "allmende fleet readings",
            "",
        ])


@contextlib.asynccontextmanager
async def running(opts: DemoOptions) -> AsyncIterator[Demo]:
    demo = Demo(opts)
    async with demo.stack:
        await demo.start()
        printer = asyncio.create_task(demo.print_readings())
        try:
            yield demo
        finally:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer


async def run(opts: DemoOptions, *, on_ready: Callable[[Demo], None] | None = None) -> Summary:
    async with running(opts) as demo:
        _say(opts, demo.banner())
        if on_ready:
            on_ready(demo)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        deadline = None if opts.duration_s is None else time.monotonic() + opts.duration_s
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if demo.gateway.poll() is not None:
                raise RuntimeError(f"the gateway exited ({demo.gateway.returncode}); "
                                   f"see {demo.work / 'gateway' / 'gateway.log'}")
            await asyncio.sleep(0.5)
        _say(opts, "\nstopping: the nodes finish their wake, then everything shuts down")
        summary = await demo.summary()
    return summary


def _handler(args: argparse.Namespace) -> int:
    import logging

    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    # The services log to a file; the console is for the demo's own story.
    logging.basicConfig(filename=workdir / "demo.log", level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    opts = DemoOptions(
        workdir=workdir, nodes=args.nodes, interval_s=args.interval,
        duration_s=args.duration, broker=args.broker, sensorthings_url=args.sensorthings,
        ngsi_ld_url=args.ngsi_ld, api_port=args.port,
    )
    try:
        summary = asyncio.run(run(opts))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\nsummary\n" + summary.text())
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--for", dest="duration", type=float, metavar="SECONDS",
                        help="run this long, then stop and print a summary (default: until Ctrl-C)")
    parser.add_argument("--nodes", type=int, default=3, help="virtual air-quality nodes")
    parser.add_argument("--interval", type=int, default=20, help="uplink interval in seconds")
    parser.add_argument("--broker", choices=["auto", "mosquitto", "amqtt"], default="auto")
    parser.add_argument("--sensorthings", metavar="URL",
                        help="forward to this SensorThings service root (…/v1.1)")
    parser.add_argument("--ngsi-ld", metavar="URL",
                        help="forward to this NGSI-LD broker (base URL, without /ngsi-ld/v1)")
    parser.add_argument("--port", type=int, default=0, help="fleet API port (default: free)")
    parser.add_argument("--dir", default="var/demo", help="working directory (default: var/demo)")
    parser.set_defaults(handler=_handler)
