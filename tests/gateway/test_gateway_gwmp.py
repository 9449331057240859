"""GWMP v2 codec: every packet kind round-trips, malformed datagrams fail with a reason."""

from __future__ import annotations

import pytest
from allmende.gateway import gwmp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EUI = bytes.fromhex("0102030405060708")


def test_round_trip_every_kind():
    rxpk = gwmp.build_rxpk(
        b"\x40\x01", freq_hz=868_100_000, sf=7, bw_khz=125, tmst=123, rssi=-60, snr=9.5
    )
    cases = [
        (gwmp.push_data(0x1234, EUI, {"rxpk": [rxpk]}), gwmp.PUSH_DATA, EUI, {"rxpk": [rxpk]}),
        (gwmp.push_ack(0x1234), gwmp.PUSH_ACK, None, None),
        (gwmp.pull_data(7, EUI.hex()), gwmp.PULL_DATA, EUI, None),
        (gwmp.pull_ack(7), gwmp.PULL_ACK, None, None),
        (gwmp.tx_ack(9, EUI), gwmp.TX_ACK, EUI, None),
        (gwmp.tx_ack(9, EUI, "TOO_LATE"), gwmp.TX_ACK, EUI, {"txpk_ack": {"error": "TOO_LATE"}}),
    ]
    for datagram, kind, eui, payload in cases:
        packet = gwmp.decode(datagram)
        assert (packet.version, packet.kind, packet.gateway_eui, packet.payload) == (
            2,
            kind,
            eui,
            payload,
        )
    assert gwmp.decode(gwmp.push_ack(0x1234)).token == 0x1234
    assert gwmp.tx_ack_error(gwmp.decode(gwmp.tx_ack(9, EUI))) == "NONE"
    assert (
        gwmp.tx_ack_error(gwmp.decode(gwmp.tx_ack(9, EUI, "COLLISION_PACKET")))
        == "COLLISION_PACKET"
    )


def test_rxpk_and_txpk_helpers():
    rxpk = gwmp.build_rxpk(
        b"abc",
        freq_hz=868_300_000,
        sf=12,
        bw_khz=125,
        tmst=2**32 + 5,
        rssi=-110.0,
        snr=-7.25,
        time="2026-11-21T23:40:00.000000Z",
    )
    parsed = gwmp.parse_rxpk(rxpk)
    assert (parsed.data, parsed.freq_hz, parsed.sf, parsed.bw_khz, parsed.tmst) == (
        b"abc",
        868_300_000,
        12,
        125,
        5,
    )
    assert (parsed.rssi, parsed.snr, parsed.crc_ok, parsed.time) == (
        -110.0,
        -7.25,
        True,
        "2026-11-21T23:40:00.000000Z",
    )
    txpk = gwmp.build_txpk(
        b"xyz", freq_hz=869_525_000, sf=9, bw_khz=125, tmst=1_000_000, power_dbm=27
    )
    pull_resp = gwmp.decode(gwmp.pull_resp(3, txpk))
    assert pull_resp.kind == gwmp.PULL_RESP and pull_resp.gateway_eui is None
    tx = gwmp.parse_txpk(pull_resp.payload["txpk"])
    assert (tx.data, tx.freq_hz, tx.sf, tx.tmst, tx.power_dbm, tx.ipol) == (
        b"xyz",
        869_525_000,
        9,
        1_000_000,
        27,
        True,
    )
    assert (
        gwmp.parse_txpk(
            gwmp.build_txpk(b"", freq_hz=869_525_000, sf=12, bw_khz=125, tmst=None)
        ).tmst
        is None
    )
    assert gwmp.datr(7, 125) == "SF7BW125" and gwmp.parse_datr("SF10BW500") == (10, 500)
    for bad in ("SF13BW125", "SF7BW126", "50000", None, "SF7BW125x"):
        with pytest.raises(gwmp.GwmpError) as err:
            gwmp.parse_datr(bad)
        assert err.value.reason == "bad_rxpk"


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "truncated"),
        (b"\x02\x00", "truncated"),
        (b"\x02\x00\x01\x00\x01\x02", "truncated"),  # PUSH_DATA without a whole EUI
        (b"\x03\x00\x01\x01", "bad_version"),
        (b"\x02\x00\x01\x09", "unknown_kind"),
        (b"\x02\x00\x01\x00" + EUI, "bad_json"),  # PUSH_DATA without JSON
        (b"\x02\x00\x01\x00" + EUI + b"{nope", "bad_json"),
        (b"\x02\x00\x01\x00" + EUI + b"[1,2]", "bad_json"),
        (b"\x02\x00\x01\x00" + EUI + b"\xff\xfe{}", "bad_json"),
        (b"\x02\x00\x01\x01extra", "unexpected_data"),
        (b"\x02\x00\x01\x00" + EUI + b"{" + b" " * gwmp.MAX_DATAGRAM_SIZE + b"}", "oversized"),
    ],
)
def test_rejections_carry_a_reason(datagram, reason):
    with pytest.raises(gwmp.GwmpError) as err:
        gwmp.decode(datagram)
    assert err.value.reason == reason


def test_deeply_nested_json_is_bad_json():
    with pytest.raises(gwmp.GwmpError) as err:
        gwmp.decode(b"\x02\x00\x01\x00" + EUI + b"[" * 30000)
    assert err.value.reason == "bad_json"


# Machines shared with other jobs are slow now and then: no deadlines, no speed checks.
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RELAXED
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_gwmp_error(data):
    try:
        gwmp.decode(data)
    except gwmp.GwmpError as exc:
        assert exc.reason in gwmp.REASONS


@RELAXED
@given(
    st.dictionaries(
        st.sampled_from(["tmst", "freq", "datr", "data", "rssi", "lsnr", "modu", "stat"]),
        st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)),
    )
)
def test_random_rxpk_parse_or_raise_gwmp_error(obj):
    try:
        gwmp.parse_rxpk(obj)
    except gwmp.GwmpError as exc:
        assert exc.reason == "bad_rxpk"
