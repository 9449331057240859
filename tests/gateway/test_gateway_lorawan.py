"""LoRaWAN 1.0.3 network side against the public vectors in ../shared/vectors/lorawan.json."""

from __future__ import annotations

import pytest
from allmende.gateway import lorawan, region
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.vectors import lorawan_vectors

VECTORS = lorawan_vectors()
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

h = bytes.fromhex


def le(hex_text: str) -> int:
    """An int from on-air (little-endian) hex."""
    return int.from_bytes(h(hex_text), "little")


@pytest.mark.parametrize("v", VECTORS["uplink_data"])
def test_uplink_data_vector(v):
    frame = lorawan.parse_data_frame(h(v["phy"]))
    assert frame.dev_addr == int(v["dev_addr"], 16)
    assert frame.fctrl == int(v["fctrl"], 16)
    assert frame.fport == v["fport"]
    assert frame.mic == h(v["mic"])
    fcnt = lorawan.reconstruct_fcnt(None, frame.fcnt16)
    assert fcnt == v["fcnt"]
    assert lorawan.check_data_mic(frame, h(v["nwk_s_key"]), fcnt)
    plain = lorawan.decrypt_data_payload(frame, h(v["nwk_s_key"]), h(v["app_s_key"]), fcnt)
    assert plain == v["frm_plain_ascii"].encode()
    rebuilt = lorawan.build_data_frame(
        mtype=frame.mtype,
        dev_addr=frame.dev_addr,
        fcnt=fcnt,
        nwk_s_key=h(v["nwk_s_key"]),
        app_s_key=h(v["app_s_key"]),
        fport=frame.fport,
        payload=plain,
        fctrl_flags=frame.fctrl,
    )
    assert rebuilt == h(v["phy"])


@pytest.mark.parametrize("v", VECTORS["frm_payload_crypt"])
def test_frm_payload_vector(v):
    key, addr, fcnt = h(v["key"]), int(v["dev_addr"], 16), v["fcnt"]
    assert lorawan.crypt_frm_payload(key, addr, fcnt, True, h(v["plain"])) == h(v["uplink_cipher"])
    assert lorawan.crypt_frm_payload(key, addr, fcnt, False, h(v["plain"])) == h(
        v["downlink_cipher"]
    )
    assert lorawan.crypt_frm_payload(key, addr, fcnt, True, h(v["uplink_cipher"])) == h(v["plain"])


@pytest.mark.parametrize("v", VECTORS["data_mic"])
def test_data_mic_vector(v):
    key, addr, fcnt, msg = h(v["key"]), int(v["dev_addr"], 16), v["fcnt"], h(v["msg"])
    assert lorawan.data_mic(key, msg, addr, fcnt, True) == h(v["uplink_mic"])
    assert lorawan.data_mic(key, msg, addr, fcnt, False) == h(v["downlink_mic"])


@pytest.mark.parametrize("v", VECTORS["join_request_mic"])
def test_join_request_mic_vector(v):
    msg = h(v["msg"])
    request = lorawan.parse_join_request(msg + h(v["mic"]))
    assert lorawan.check_join_request_mic(request, h(v["app_key"]))
    rebuilt = lorawan.build_join_request(
        h(v["app_key"]),
        join_eui=request.join_eui,
        dev_eui=request.dev_eui,
        dev_nonce=request.dev_nonce,
    )
    assert rebuilt == msg + h(v["mic"])


@pytest.mark.parametrize("v", VECTORS["join_accept"])
def test_join_accept_vector(v):
    app_key, plain = h(v["app_key"]), h(v["plain_after_mhdr"])
    accept = lorawan.decrypt_join_accept(app_key, h(v["phy"]))
    assert accept.app_nonce == le(plain[0:3].hex())
    assert accept.net_id == le(plain[3:6].hex())
    assert accept.dev_addr == le(plain[6:10].hex())
    built = lorawan.build_join_accept(
        app_key,
        app_nonce=accept.app_nonce,
        net_id=accept.net_id,
        dev_addr=accept.dev_addr,
        dl_settings=accept.dl_settings,
        rx_delay=accept.rx_delay,
        cf_list=accept.cf_list,
    )
    assert built == h(v["phy"])


@pytest.mark.parametrize("v", VECTORS["session_keys"])
def test_session_keys_vector(v):
    nwk, app = lorawan.derive_session_keys(
        h(v["app_key"]),
        app_nonce=le(v["app_nonce"]),
        net_id=le(v["net_id"]),
        dev_nonce=le(v["dev_nonce"]),
    )
    assert nwk == h(v["nwk_s_key"])
    assert app == h(v["app_s_key"])


@RELAXED
@given(key=st.binary(min_size=16, max_size=16), msg=st.binary(max_size=80))
def test_cmac_matches_reference_implementation(key, msg):
    ref = cmac.CMAC(algorithms.AES(key))
    ref.update(msg)
    assert lorawan.aes_cmac(key, msg) == ref.finalize()


@RELAXED
@given(
    mtype=st.sampled_from([2, 3, 4, 5]),
    addr=st.integers(0, 2**32 - 1),
    fcnt=st.integers(0, 2**32 - 1),
    fport=st.one_of(st.none(), st.integers(0, 223)),
    payload=st.binary(max_size=50),
    fopts=st.binary(max_size=15),
    flags=st.sampled_from([0, 0x80, 0x20, 0xA0]),
)
def test_data_frame_round_trip(mtype, addr, fcnt, fport, payload, fopts, flags):
    nwk, app = bytes(range(16)), bytes(range(16, 32))
    if fport is None:
        payload = b""
    if fport == 0:
        fopts = b""
    phy = lorawan.build_data_frame(
        mtype=mtype,
        dev_addr=addr,
        fcnt=fcnt,
        nwk_s_key=nwk,
        app_s_key=app,
        fport=fport,
        payload=payload,
        fopts=fopts,
        fctrl_flags=flags,
    )
    frame = lorawan.parse_data_frame(phy)
    assert (frame.mtype, frame.dev_addr, frame.fcnt16, frame.fport, frame.fopts) == (
        mtype,
        addr,
        fcnt & 0xFFFF,
        fport,
        fopts,
    )
    assert lorawan.check_data_mic(frame, nwk, fcnt)
    assert not lorawan.check_data_mic(frame, nwk, fcnt ^ 0x10000)
    assert lorawan.decrypt_data_payload(frame, nwk, app, fcnt) == payload


@pytest.mark.parametrize(
    ("last", "fcnt16", "expected"),
    [
        (None, 5, 5),
        (4, 5, 5),
        (5, 5, 5),
        (0xFFFF, 0, 0x10000),
        (0x1FFFE, 3, 0x20003),
        (0x10005, 4, 0x20004),
        (0x12345, 0x2345, 0x12345),
    ],
)
def test_reconstruct_fcnt(last, fcnt16, expected):
    assert lorawan.reconstruct_fcnt(last, fcnt16) == expected


@RELAXED
@given(data=st.binary(max_size=64))
def test_parsers_raise_only_lorawan_error(data):
    for parse in (lorawan.parse_data_frame, lorawan.parse_join_request):
        try:
            parse(data)
        except lorawan.LoRaWANError:
            pass


def test_mac_commands():
    cmds = lorawan.parse_uplink_mac_commands(bytes([0x02, 0x03, 0x07, 0x06, 0xFE, 0x0A]))
    assert cmds == [(0x02, b""), (0x03, b"\x07"), (0x06, b"\xfe\x0a")]
    with pytest.raises(lorawan.LoRaWANError):
        lorawan.parse_uplink_mac_commands(bytes([0x03]))
    assert lorawan.link_adr_req(data_rate=5, tx_power=1, ch_mask=0x0007) == bytes(
        [0x03, 0x51, 0x07, 0x00, 0x01]
    )


@pytest.mark.parametrize("v", VECTORS["time_on_air_ms"])
def test_time_on_air_vector(v):
    coding_rate = int(v["cr"].split("/")[1]) - 4
    toa = region.time_on_air_s(
        v["phy_len"],
        v["sf"],
        v["bw_khz"],
        coding_rate=coding_rate,
        preamble=v["preamble"],
        crc=v["crc"],
        low_dr_optimize=v.get("low_dr_optimize"),
    )
    assert toa * 1000 == pytest.approx(v["ms"], abs=1e-6)
