"""Configuration and device files: the shipped example loads, mistakes name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from allmende.gateway.config import ConfigError, load_config
from allmende.gateway.devices import DeviceListError, load_devices

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway" / "gateway.example.toml"


def test_example_config_loads():
    config = load_config(EXAMPLE)
    assert config.gateway_id == "gw-stadtmitte-01"
    assert config.udp is not None and config.udp.port == 1700
    assert config.outbox_path == Path("/var/lib/allmende-gateway/outbox.sqlite")
    assert config.outbox.synchronous == "FULL" and config.network.rx2_frequency == 869_525_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing [gateway]"),
        ('[gateway]\nid = "a/b"\ndata_dir = "d"\ndevices = "x"\n[udp]\n', "gateway.id"),
        ('[gateway]\nid = "a"\ndata_dir = "d"\ndevices = "x"\n', "no ingress"),
        (
            '[gateway]\nid = "a"\ndata_dir = "d"\ndevices = "x"\n[udp]\n[mqtt]\nport = "1883"\n',
            "mqtt.port",
        ),
        (
            '[gateway]\nid = "a"\ndata_dir = "d"\ndevices = "x"\n[udp]\nlisten = "nowhere"\n',
            "udp.listen",
        ),
        (
            '[gateway]\nid = "a"\ndata_dir = "d"\ndevices = "x"\n[udp]\n'
            '[network]\ndev_addr_prefix = "26/7"\n',
            "dev_addr_prefix",
        ),
        (
            '[gateway]\nid = "a"\ndata_dir = "d"\ndevices = "x"\n[udp]\n[mqqt]\n',
            "unknown section [mqqt]",
        ),
        ("[gateway\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_field(tmp_path, text, message):
    path = tmp_path / "gw.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path)


def test_device_file_toml_and_errors(tmp_path):
    good = tmp_path / "devices.toml"
    good.write_text(
        '[[devices]]\ndev_eui = "70B3D57ED0000001"\njoin_eui = "0000000000000001"\n'
        'app_key = "000102030405060708090a0b0c0d0e0f"\nkind = "air_quality"\n\n'
        '[[devices]]\ndev_eui = "70-b3-d5-7e-d0-00-00-02"\ndev_addr = "26011234"\n'
        'nwk_s_key = "00112233445566778899aabbccddeeff"\n'
        'app_s_key = "ffeeddccbbaa99887766554433221100"\n'
        'kind = "air_quality"\nfw = "0.1.0"\n'
    )
    devices = load_devices(good)
    otaa, abp = (
        devices[bytes.fromhex("70b3d57ed0000001")],
        devices[bytes.fromhex("70b3d57ed0000002")],
    )
    assert otaa.otaa and not abp.otaa and abp.dev_addr == 0x26011234
    assert "00112233" not in repr(abp) and "000102" not in repr(otaa)  # keys stay out of reprs
    bad = tmp_path / "bad.json"
    cases = [
        ('{"devices": [{"dev_eui": "70b3d57ed0000001", "kind": "x"}]}', "needs app_key"),
        (
            '[{"dev_eui": "70b3d57ed0000001", "kind": "x", "app_key": "zz"}]',
            "app_key must be 32 hex digits",
        ),
        ('[{"dev_eui": "01", "kind": "x"}]', "dev_eui must be 16 hex digits"),
        (
            '[{"dev_eui": "70b3d57ed0000001", "kind": "x", "app_key": "'
            + "0" * 32
            + '", "color": 1}]',
            "unknown field 'color'",
        ),
        (
            '[{"dev_eui": "70b3d57ed0000001", "kind": "x", "app_key": "' + "0" * 32 + '"},'
            ' {"dev_eui": "70b3d57ed0000001", "kind": "x", "app_key": "' + "0" * 32 + '"}]',
            "listed twice",
        ),
        ("[{", "cannot parse"),
    ]
    for text, message in cases:
        bad.write_text(text)
        with pytest.raises(DeviceListError, match=message) as err:
            load_devices(bad)
        assert "0" * 32 not in str(err.value)
