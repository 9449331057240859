"""Network server and downlink scheduling in-process: checks, counters, joins, ADR, EU868."""

from __future__ import annotations

import pytest
from allmende.gateway import gwmp, lorawan, region
from allmende.gateway.config import NetworkConfig
from allmende.gateway.devices import parse_device
from allmende.gateway.downlink import DownlinkScheduler
from allmende.gateway.metrics import Metrics
from allmende.gateway.network import NetworkServer, QueuedDownlink, Reception, Reject, Session

from tests.gateway.sim import SimNode


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def make_server(nodes, **config):
    clock = Clock()
    server = NetworkServer(NetworkConfig(**config), clock=clock)
    server.set_devices({n.dev_eui: parse_device(n.device_entry(), "test") for n in nodes})
    return server, clock


def reception(phy, clock, *, via="fwd-a", snr=9.5, rssi=-60.0, freq=868_100_000, sf=7, tmst=5_000):
    rx = gwmp.RxPacket(phy, freq, sf, 125, tmst, rssi, snr, True)
    return Reception(phy, rx, via, clock())


def reason(server, rec):
    with pytest.raises(Reject) as err:
        server.handle(rec)
    return err.value.reason


def test_fcnt_rollover_and_replays():
    node = SimNode.abp(1)
    server, clock = make_server([node])
    node.fcnt = 0xFFFE
    for _ in range(3):  # 0xFFFF, 0x10000, 0x10001: across the 16-bit rollover
        uplink, new = server.handle(reception(node.uplink(), clock))
        assert new and uplink.fcnt == node.fcnt
    clock.t += 5
    old = node.uplink(fcnt=0xFFFF)  # before the rollover: MIC valid one epoch lower
    assert reason(server, reception(old, clock)) == "replay"
    forged = bytearray(node.uplink(fcnt=0x10005))
    forged[-1] ^= 1
    assert reason(server, reception(bytes(forged), clock)) == "mic"
    assert server.sessions[node.dev_eui][0].fcnt_up == 0x10001


def test_copies_within_the_window_are_duplicates_not_replays():
    node = SimNode.abp(2)
    server, clock = make_server([node], dedupe_window_ms=500)
    phy = node.uplink()
    first, new = server.handle(reception(phy, clock, via="a", snr=1.0))
    assert new
    clock.t += 0.2
    again, new = server.handle(reception(phy, clock, via="b", snr=7.0))
    assert not new and again is first and len(first.receptions) == 2
    assert first.best().transmitter == "b"
    clock.t += 1.0
    assert reason(server, reception(phy, clock)) == "repeat"


def test_session_state_survives_a_restart_through_snapshots():
    node = SimNode.abp(3)
    server, clock = make_server([node])
    for _ in range(4):
        server.handle(reception(node.uplink(), clock))
    rows, _, _ = server.take_changes()
    restored, _ = make_server([])
    restored.restore([Session.from_snapshot(r) for r in rows], {})
    restored.set_devices({node.dev_eui: parse_device(node.device_entry(), "t")})
    old = node.uplink(fcnt=2)
    assert reason(restored, reception(old, clock)) == "replay"
    uplink, _ = restored.handle(reception(node.uplink(), clock))
    assert uplink.fcnt == 5


def test_a_rekeyed_abp_device_on_the_same_devaddr_starts_a_new_session():
    # Its frame counter starts again: the readings must not share idempotency keys with the
    # old session's, or the fleet would drop them as duplicates.
    node = SimNode.abp(5)
    server, clock = make_server([node])
    first, _ = server.handle(reception(node.uplink(), clock))
    node.nwk_s_key, node.app_s_key = bytes(range(16)), bytes(range(16, 32))
    node.fcnt = 0
    server.set_devices({node.dev_eui: parse_device(node.device_entry(), "t")})
    clock.t += 5
    second, new = server.handle(reception(node.uplink(), clock))
    assert new and second.fcnt == first.fcnt == 1
    assert second.session.session_id != first.session.session_id
    assert second.session.session_id == node.session  # the test's own derivation
    assert node.nwk_s_key.hex() not in second.session.session_id


def test_a_session_stored_under_an_older_name_is_renamed_on_restore():
    node = SimNode.abp(6)
    server, clock = make_server([node])
    server.handle(reception(node.uplink(), clock))
    rows, _, _ = server.take_changes()
    old_row = (rows[0][0], f"{node.dev_addr:08x}", *rows[0][2:])  # the DevAddr-only name
    restored, _ = make_server([])
    restored.restore([Session.from_snapshot(old_row)], {})
    upserts, deleted, _ = restored.take_changes()
    assert deleted == [(node.dev_eui.hex(), f"{node.dev_addr:08x}")]
    assert [r[1] for r in upserts] == [node.session] and upserts[0][6] == 1  # FCnt kept


def test_join_accept_session_and_devnonce_reuse():
    node = SimNode.otaa(4)
    server, clock = make_server([node])
    uplink, _ = server.handle(reception(node.join_request(0x0102), clock))
    assert uplink.kind == "join"
    accept = node.accept(uplink.join_accept)
    assert accept.rx_delay == 1 and accept.rx2_dr == 0
    assert accept.dev_addr >> 25 == 0  # inside the configured prefix 00000000/7
    clock.t += 5
    assert reason(server, reception(node.join_request(0x0102), clock)) == "devnonce_reuse"
    data, _ = server.handle(reception(node.uplink(), clock))
    assert data.session.session_id == f"{accept.dev_addr:08x}-0102" == node.session
    assert data.session.active
    rows, _, nonces = server.take_changes()
    assert nonces == [(node.dev_eui.hex(), 0x0102)]


def test_wrong_app_key_and_unknown_devices():
    node = SimNode.otaa(5)
    server, clock = make_server([node])
    stranger = SimNode.otaa(6)
    assert reason(server, reception(stranger.join_request(1), clock)) == "unknown_device"
    wrong_key = SimNode.otaa(5)
    wrong_key.app_key = bytes(16)
    assert reason(server, reception(wrong_key.join_request(1), clock)) == "mic"
    assert reason(server, reception(SimNode.abp(7).uplink(), clock)) == "unknown_device"


def test_confirmed_uplink_gets_an_ack_and_link_check_answer():
    node = SimNode.abp(8)
    server, clock = make_server([node])
    phy = node.uplink(confirmed=True, fopts=bytes([lorawan.CID_LINK_CHECK]))
    uplink, _ = server.handle(reception(phy, clock, snr=2.5, sf=9))
    server.handle(reception(phy, clock, via="other"))
    assert uplink.wants_downlink
    down = server.build_downlink(uplink)
    frame = lorawan.parse_data_frame(down)
    assert frame.mtype == lorawan.UNCONFIRMED_DATA_DOWN and frame.ack
    assert lorawan.check_data_mic(frame, node.nwk_s_key, 0)
    margin = int(9.5 - region.REQUIRED_SNR_DB[7])  # best copy: SNR 9.5 at SF7
    assert frame.fopts == bytes([lorawan.CID_LINK_CHECK, margin, 2])
    assert uplink.session.fcnt_down == 1


def test_adr_asks_a_strong_node_to_speed_up_and_applies_the_answer():
    node = SimNode.abp(9)
    server, clock = make_server([node], adr_history=5)
    uplink = None
    for _ in range(5):
        uplink, _ = server.handle(reception(node.uplink(adr=True), clock, snr=10.0, sf=12))
    assert uplink.wants_downlink
    frame = lorawan.parse_data_frame(server.build_downlink(uplink))
    assert frame.fopts[0] == lorawan.CID_LINK_ADR
    dr, power = frame.fopts[1] >> 4, frame.fopts[1] & 0x0F
    # SNR 10 at SF12 (floor -20) with a 10 dB margin: 20 dB -> 6 steps: DR0 -> DR5, power -1 step.
    assert (dr, power) == (5, 1)
    answer, _ = server.handle(
        reception(node.uplink(fopts=bytes([lorawan.CID_LINK_ADR, 0x07])), clock)
    )
    assert answer.session.tx_power_index == 1
    assert not answer.wants_downlink


def test_application_downlink_queue():
    node = SimNode.abp(10)
    server, clock = make_server([node])
    server.queue_downlink(node.dev_eui, QueuedDownlink(fport=5, data=b"\x01\x02"))
    with pytest.raises(ValueError):
        server.queue_downlink(node.dev_eui, QueuedDownlink(fport=0, data=b"x"))
    with pytest.raises(ValueError):
        server.queue_downlink(bytes(8), QueuedDownlink(fport=5, data=b"x"))
    uplink, _ = server.handle(reception(node.uplink(), clock))
    assert uplink.wants_downlink
    frame = lorawan.parse_data_frame(server.build_downlink(uplink))
    assert frame.fport == 5
    assert lorawan.decrypt_data_payload(frame, node.nwk_s_key, node.app_s_key, 0) == b"\x01\x02"


class Radio:
    def __init__(self, name="fwd-a", route=True):
        self.name = name
        self.route = route
        self.sent = []

    def send(self, token, tx):
        if self.route:
            self.sent.append((token, tx))
        return self.route


def scheduled(server, scheduler, clock, phy, **kw):
    uplink, _ = server.handle(reception(phy, clock, **kw))
    return scheduler.schedule(server.build_downlink(uplink), uplink)


def test_rx1_then_rx2_by_duty_cycle_then_dropped():
    node = SimNode.abp(11)
    server, clock = make_server([node])
    metrics = Metrics()
    scheduler = DownlinkScheduler(NetworkConfig(), metrics, clock=clock)
    radio = Radio()
    scheduler.register(radio)
    assert (
        scheduled(server, scheduler, clock, node.uplink(confirmed=True), tmst=7_000)
        == "scheduled_rx1"
    )
    tx = radio.sent[-1][1]
    assert (tx.freq_hz, tx.sf, tx.tmst) == (868_100_000, 7, 1_007_000)
    clock.t += 0.5  # RX1 of the next uplink falls in the off-time of the first answer (1 %)
    assert (
        scheduled(server, scheduler, clock, node.uplink(confirmed=True), tmst=9_000)
        == "scheduled_rx2"
    )
    tx = radio.sent[-1][1]
    assert (tx.freq_hz, tx.sf, tx.bw_khz, tx.tmst) == (869_525_000, 12, 125, 2_009_000)
    clock.t += 0.5  # RX2's SF12 air time closed the 10 % sub-band too
    assert scheduled(server, scheduler, clock, node.uplink(confirmed=True)) == "dropped_duty_cycle"
    clock.t += 60
    assert scheduled(server, scheduler, clock, node.uplink(confirmed=True)) == "scheduled_rx1"


def test_refused_rx1_falls_back_to_rx2_and_frees_its_air_time():
    node = SimNode.abp(12)
    server, clock = make_server([node])
    scheduler = DownlinkScheduler(NetworkConfig(), Metrics(), clock=clock)
    radio = Radio()
    scheduler.register(radio)
    assert scheduled(server, scheduler, clock, node.uplink(confirmed=True)) == "scheduled_rx1"
    token, _ = radio.sent[-1]
    scheduler.on_tx_ack("fwd-a", token, "TOO_LATE")
    assert radio.sent[-1][1].freq_hz == region.RX2_FREQUENCY_HZ
    assert scheduler.duty["fwd-a"].can_send(868_100_000, clock() + 1, 0.05)


def test_downlink_goes_through_a_receiver_with_a_route():
    node = SimNode.abp(13)
    server, clock = make_server([node])
    scheduler = DownlinkScheduler(NetworkConfig(), Metrics(), clock=clock)
    good, silent = Radio("a"), Radio("b", route=False)
    scheduler.register(good)
    scheduler.register(silent)
    phy = node.uplink(confirmed=True)
    uplink, _ = server.handle(reception(phy, clock, via="a", snr=-3.0))
    server.handle(reception(phy, clock, via="b", snr=8.0))
    assert scheduler.schedule(server.build_downlink(uplink), uplink) == "scheduled_rx1"
    assert good.sent and not silent.sent


def test_join_accept_windows():
    node = SimNode.otaa(14)
    server, clock = make_server([node], rx2_dr=3)
    scheduler = DownlinkScheduler(NetworkConfig(rx2_dr=3), Metrics(), clock=clock)
    radio = Radio()
    scheduler.register(radio)
    uplink, _ = server.handle(reception(node.join_request(7), clock, tmst=100))
    rx1, rx2 = scheduler.windows(uplink, uplink.first)
    assert (rx1.delay_s, rx2.delay_s, rx2.sf) == (5, 6, 12)  # RX2 at DR0 until the node joined
    assert node.accept(uplink.join_accept).rx2_dr == 3
