"""Fixtures of the gateway suite: a real Mosquitto, free ports, a gateway process factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.services import Broker, run_mosquitto
from tests.gateway.sim import (
    GatewayProcess,
    SimNode,
    free_tcp_port,
    free_udp_port,
    write_config,
    write_devices,
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with run_mosquitto(tmp_path / "mosquitto") as b:
        yield b


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Builds (not starts) gateway processes: factory(nodes, mqtt_port=..., extra=...)."""
    started: list[GatewayProcess] = []

    def make(
        nodes: list[SimNode],
        *,
        mqtt_port: int | None,
        extra: str = "",
        network: str = "",
        name: str = "gw",
    ) -> GatewayProcess:
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        devices = write_devices(directory / "devices.json", nodes)
        udp_port, metrics_port = free_udp_port(), free_tcp_port()
        config = write_config(
            directory,
            udp_port=udp_port,
            mqtt_port=mqtt_port,
            metrics_port=metrics_port,
            devices=devices,
            extra=extra,
            network=network,
        )
        gw = GatewayProcess(config, metrics_port, directory / "gateway.log")
        gw.udp_port = udp_port  # type: ignore[attr-defined]
        gw.directory = directory  # type: ignore[attr-defined]
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
