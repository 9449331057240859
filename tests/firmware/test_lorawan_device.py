"""The LoRaWAN device MAC end to end on the unix port: OTAA join, uplinks decoded by an
independent network side (CPython `cryptography`), RX windows, confirmed traffic,
downlinks, frame counters and the duty cycle. Virtual time unless a test says otherwise."""

from __future__ import annotations

import json

h = bytes.fromhex

APP_KEY = h("2b7e151628aed2a6abf7158809cf4f3c")
DEV_EUI = h("70b3d57ed0000001")
JOIN_EUI = h("70b3d57ed0001000")
APP_NONCE = h("a1b2c3")
NET_ID = h("130000")
DEV_ADDR_AIR = h("04030226")  # 26020304
OTAA = f"dev_eui='{DEV_EUI.hex()}', join_eui='{JOIN_EUI.hex()}', app_key='{APP_KEY.hex()}'"

NWK = h("000102030405060708090a0b0c0d0e0f")
APP = h("f0e0d0c0b0a090807060504030201000")
ABP_ADDR = h("26011bda")
ABP_ADDR_AIR = ABP_ADDR[::-1]
ABP = f"dev_addr='{ABP_ADDR.hex()}', nwk_s_key='{NWK.hex()}', app_s_key='{APP.hex()}'"

PRELUDE = "from lwfakes import *\nimport json\nF = json.loads(%r)\n"


def test_otaa_join_then_uplinks_decode_on_the_network_side(lw_run, lw_net) -> None:
    cflist = lw_net.cflist([867100000, 867300000, 867500000, 867700000, 867900000])
    accept = lw_net.join_accept(APP_KEY, APP_NONCE, NET_ID, DEV_ADDR_AIR, 0x00, 1, cflist)
    code = PRELUDE % json.dumps({"accept": accept.hex()}) + (
        "c = Clock()\n"
        "r = Radio(c, [None, F['accept']])\n"  # nothing in RX1, the accept in RX2
        f"d = device(c, r, RTC(), {OTAA})\n"
        "before = d.joined\n"
        "ok = d.join(3)\n"
        "for i in range(3):\n"
        "    c.sleep_ms(600000)\n"
        "    res = d.send(2, ('reading %d' % i).encode())\n"
        "out(before=before, ok=ok, joined=d.joined, sent=r.sent, windows=r.windows,\n"
        "    dev_addr=hx(d.dev_addr), nonce=d.dev_nonce, fcnt=d.fcnt_up, sleeps=r.sleeps)\n"
    )
    (o,) = lw_run(code)
    assert (o["before"], o["ok"], o["joined"]) == (False, True, True)
    assert o["dev_addr"] == "26020304"
    join, *ups = o["sent"]
    join_eui, dev_eui, nonce = lw_net.join_request(h(join[0]), APP_KEY)
    assert (join_eui, dev_eui, nonce, o["nonce"]) == (JOIN_EUI, DEV_EUI, 0, 0)
    assert join[1] in (868100000, 868300000, 868500000) and join[2:4] == [7, 125]
    # RX1 on the join channel and data rate, RX2 at 869.525 MHz SF12; opened a bit early
    # after JOIN_ACCEPT_DELAY1 (5 s) and 6 s, counted from the end of the transmission.
    tx_end = join[4] + 62  # 23 bytes at SF7 BW125: 61.7 ms on air, rounded up
    rx1, rx2 = o["windows"][:2]
    assert rx1[:3] == [join[1], 7, 125] and rx2[:3] == [869525000, 12, 125]
    assert tx_end + 4700 <= rx1[4] <= tx_end + 5000
    assert tx_end + 5700 <= rx2[4] <= tx_end + 6000
    nwk, app = lw_net.session_keys(APP_KEY, APP_NONCE, NET_ID, nonce)
    freqs = set()
    for fcnt, (phy, freq, sf, bw, _t) in enumerate(ups):
        up = lw_net.uplink(h(phy), nwk, app, fcnt)
        assert up.mic_ok and up.mhdr == 0x40 and up.dev_addr == DEV_ADDR_AIR
        assert up.fcnt16 == fcnt and up.fport == 2
        assert up.payload == b"reading %d" % fcnt
        assert up.fctrl & 0x80  # ADR on by default
        assert (sf, bw) == (7, 125)
        freqs.add(freq)
    assert freqs <= {
        868100000,
        868300000,
        868500000,
        867100000,
        867300000,
        867500000,
        867700000,
        867900000,
    }
    assert o["fcnt"] == 3
    assert o["sleeps"] == 4  # the radio sleeps after every pair of windows


def test_join_without_answer_returns_false_and_uses_new_nonces(lw_run, lw_net) -> None:
    code = (
        "from lwfakes import *\n"
        "c = Clock()\n"
        "r = Radio(c)\n"
        f"d = device(c, r, RTC(), {OTAA})\n"
        "ok = d.join(3)\n"
        "out(ok=ok, joined=d.joined, sent=r.sent, windows=len(r.windows))\n"
    )
    (o,) = lw_run(code)
    assert (o["ok"], o["joined"], o["windows"]) == (False, False, 6)
    nonces = [lw_net.join_request(h(s[0]), APP_KEY)[2] for s in o["sent"]]
    assert nonces == [0, 1, 2]
    # Each try one data rate lower (SF7, SF8, SF9), waiting out the duty cycle in between.
    assert [s[2] for s in o["sent"]] == [7, 8, 9]


def test_join_accept_with_wrong_mic_is_ignored_and_counted(lw_run, lw_net) -> None:
    good = lw_net.join_accept(APP_KEY, APP_NONCE, NET_ID, DEV_ADDR_AIR)
    other = lw_net.join_accept(h("00" * 16), APP_NONCE, NET_ID, DEV_ADDR_AIR)
    code = PRELUDE % json.dumps({"bad": other.hex(), "good": good.hex()}) + (
        "c = Clock()\n"
        "r = Radio(c, [F['bad'], F['good']])\n"
        f"d = device(c, r, RTC(), {OTAA})\n"
        "out(ok=d.join(1), dropped=d.rx_dropped, addr=hx(d.dev_addr))\n"
    )
    assert lw_run(code) == [{"ok": True, "dropped": 1, "addr": "26020304"}]


def test_confirmed_uplink_ack_and_application_downlink(lw_run, lw_net) -> None:
    frames = {
        # send 1 (confirmed, FCnt 0): the ACK with an application payload in RX1
        "ack": lw_net.downlink(NWK, APP, ABP_ADDR_AIR, 0, fport=10, payload=b"\x01\x02", ack=True),
        # send 3 (confirmed): garbage in RX1, a confirmed downlink with FPending in RX2
        "junk": h("60") + ABP_ADDR_AIR + h("00010001020304"),
        "conf": lw_net.downlink(
            NWK, APP, ABP_ADDR_AIR, 1, confirmed=True, pending=True, fport=3, payload=b"x"
        ),
    }
    code = PRELUDE % json.dumps({k: v.hex() for k, v in frames.items()}) + (
        "c = Clock()\n"
        "r = Radio(c)\n"
        f"d = device(c, r, RTC(), {ABP})\n"
        "res = []\n"
        "for replies, confirmed in (([F['ack']], True), ([None, None], True),\n"
        "                           ([F['junk'], F['conf']], True), ([None, None], False)):\n"
        "    r.replies = replies\n"
        "    c.sleep_ms(300000)\n"
        "    x = d.send(1, b'up', confirmed)\n"
        "    res.append([x.fport, hx(x.payload), x.acked, x.pending])\n"
        "out(res=res, sent=r.sent, dropped=d.rx_dropped, windows=len(r.windows))\n"
    )
    (o,) = lw_run(code)
    assert o["res"] == [
        [10, "0102", True, False],
        [None, None, False, False],
        [3, "78", False, True],
        [None, None, False, False],
    ]
    assert o["dropped"] == 1 and o["windows"] == 1 + 2 + 2 + 2
    ups = [lw_net.uplink(h(s[0]), NWK, APP, i) for i, s in enumerate(o["sent"])]
    assert [u.mhdr for u in ups] == [0x80, 0x80, 0x80, 0x40]
    assert all(u.mic_ok for u in ups)
    # The confirmed downlink is acknowledged by the next uplink, and only by that one.
    assert [bool(u.fctrl & 0x20) for u in ups] == [False, False, False, True]


def test_rx1_uses_the_uplink_channel_and_rx2_the_default(lw_run) -> None:
    code = (
        "from lwfakes import *\n"
        "c = Clock()\n"
        "r = Radio(c)\n"
        f"d = device(c, r, RTC(), {ABP}, data_rate=3)\n"
        "d.send(1, b'x')\n"
        "out(sent=r.sent, windows=r.windows)\n"
    )
    (o,) = lw_run(code)
    ((phy, freq, sf, _bw, t),) = o["sent"]
    assert sf == 9  # DR3
    rx1, rx2 = o["windows"]
    assert rx1[:2] == [freq, 9] and rx2[:2] == [869525000, 12]
    assert rx1[3] >= 300 and rx2[3] >= rx1[3]  # generous windows, longer at SF12
    assert t + 1000 - 300 <= rx1[4] <= t + 1000 + 200
    assert rx2[4] - rx1[4] >= 900


def test_downlink_counter_reconstructs_32_bits_and_rejects_replays(lw_run, lw_net) -> None:
    def dl(fcnt: int) -> str:
        return lw_net.downlink(NWK, APP, ABP_ADDR_AIR, fcnt, fport=1, payload=b"%d" % fcnt).hex()

    bad_mic = bytearray.fromhex(dl(6))
    bad_mic[-1] ^= 0x80
    # replay, wrong MIC, gap, 16-bit wrap, replay
    downs = [dl(5), dl(5), bad_mic.hex(), dl(0xFFFF), dl(0x10002), dl(4)]
    code = PRELUDE % json.dumps(downs) + (
        "c = Clock()\n"
        "r = Radio(c)\n"
        f"d = device(c, r, RTC(), {ABP})\n"
        "got = []\n"
        "for f in F:\n"
        "    r.replies = [f, None]\n"
        "    c.sleep_ms(300000)\n"
        "    x = d.send(1, b'u')\n"
        "    got.append(None if x.payload is None else x.payload.decode())\n"
        "out(got=got, dropped=d.rx_dropped, fcnt_down=d._s.fcnt_down)\n"
    )
    (o,) = lw_run(code)
    assert o["got"] == ["5", None, None, str(0xFFFF), str(0x10002), None]
    assert o["dropped"] == 3 and o["fcnt_down"] == 0x10003


def test_a_downlink_replayed_after_a_power_cut_is_still_rejected(lw_run, lw_net) -> None:
    # The power cut loses RTC memory; what the node restores must know the downlink counter.
    def dl(fcnt: int) -> str:
        return lw_net.downlink(NWK, APP, ABP_ADDR_AIR, fcnt, fport=1, payload=b"%d" % fcnt).hex()

    code = PRELUDE % json.dumps([dl(5), dl(5), dl(6)]) + (
        "c = Clock()\n"
        "r = Radio(c)\n"
        f"d = device(c, r, RTC(), {ABP})\n"
        "got = []\n"
        "for i, f in enumerate(F):\n"
        "    if i == 1:\n"
        f"        d = device(c, r, RTC(), {ABP})  # power cut: fresh RTC, same flash\n"
        "    r.replies = [f, None]\n"
        "    c.sleep_ms(300000)\n"
        "    x = d.send(1, b'u')\n"
        "    got.append(None if x.payload is None else x.payload.decode())\n"
        "out(got=got, source=d.restored_from, dropped=d.rx_dropped)\n"
    )
    (o,) = lw_run(code)
    assert o["source"] == "flash"
    assert o["got"] == ["5", None, "6"] and o["dropped"] == 1


def test_uplink_counter_is_32_bits_with_16_on_air(lw_run, lw_net) -> None:
    code = (
        "from lwfakes import *\n"
        "c = Clock()\n"
        "r = Radio(c)\n"
        f"d = device(c, r, RTC(), {ABP})\n"
        "d._s.fcnt_up = 0x1FFFF\n"
        "for i in range(2):\n"
        "    c.sleep_ms(300000)\n"
        "    d.send(1, b'w')\n"
        "out(sent=r.sent, fcnt=d.fcnt_up)\n"
    )
    (o,) = lw_run(code)
    for fcnt, s in zip((0x1FFFF, 0x20000), o["sent"], strict=True):
        up = lw_net.uplink(h(s[0]), NWK, APP, fcnt)
        assert up.mic_ok and up.fcnt16 == fcnt & 0xFFFF
    assert o["fcnt"] == 0x20001


def test_an_exhausted_uplink_counter_ends_the_session_for_good(lw_run, lw_net) -> None:
    code = (
        "from lwfakes import *\n"
        "from lorawan.mac import NotJoined\n"
        "c = Clock()\n"
        "r = Radio(c)\n"
        "rtc = RTC()\n"
        f"d = device(c, r, rtc, {ABP})\n"
        "d._s.fcnt_up = 0xFFFFFFFE\n"
        "d.save()\n"
        "res = []\n"
        "for wake in range(3):\n"
        f"    d = device(c, r, rtc, {ABP})\n"
        "    c.sleep_ms(3600000)\n"
        "    try:\n"
        "        d.send(1, b'z')\n"
        "        res.append('sent')\n"
        "    except NotJoined:\n"
        "        res.append('exhausted')\n"
        "out(res=res, sent=r.sent, joined=d.joined)\n"
    )
    (o,) = lw_run(code)
    assert o["res"] == ["sent", "exhausted", "exhausted"] and not o["joined"]
    assert lw_net.uplink(h(o["sent"][0][0]), NWK, APP, 0xFFFFFFFE).mic_ok


def test_duty_cycle_defers_and_survives_deep_sleep(lw_run, lw_net) -> None:
    code = (
        "from lwfakes import *\n"
        "from lorawan.mac import DutyCycleDeferred\n"
        "c = Clock()\n"
        "r = Radio(c)\n"
        "rtc = RTC()\n"
        f"d = device(c, r, rtc, {ABP})\n"
        "d.send(1, bytes(40))\n"
        "waits = [d.time_until_send_ms()]\n"
        "try:\n"
        "    d.send(1, b'too soon')\n"
        "    waits.append('sent')\n"
        "except DutyCycleDeferred as e:\n"
        "    waits.append(e.wait_ms)\n"
        "fcnt_after_deferral = d.fcnt_up\n"
        "c.sleep_ms(1000)\n"
        f"d = device(c, r, rtc, {ABP})\n"  # deep sleep: RAM gone, RTC memory kept
        "waits.append(d.time_until_send_ms())\n"
        "try:\n"
        "    d.send(1, b'still too soon')\n"
        "except DutyCycleDeferred as e:\n"
        "    waits.append(e.wait_ms)\n"
        "c.sleep_ms(waits[-1])\n"
        "waits.append(d.time_until_send_ms())\n"
        "d.send(1, b'now')\n"
        "waits.append(d.time_until_send_ms())\n"
        "x = d.send(1, b'waits inside', max_wait_ms=10000000)\n"
        "out(waits=waits, fcnt_after_deferral=fcnt_after_deferral, sent=r.sent, now=c.now)\n"
    )
    (o,) = lw_run(code)
    (_, f0, _, _, t0), (_, f1, _, _, t1), (_, f2, _, _, t2) = o["sent"]
    # 1 % sub-band: after a TX of T ms it stays blocked for 99 T.
    assert t1 >= t0 + 100 * lw_net.airtime_ms(13 + 40, 7)
    w = o["waits"]
    assert w[0] == w[1] > 0 and w[2] == w[3] == w[1] - 1000
    assert w[4] == 0 and w[5] > 0
    assert o["fcnt_after_deferral"] == 1  # a deferred send consumes no frame counter
    assert len(o["sent"]) == 3 and t2 >= t1 + 100 * lw_net.airtime_ms(13 + 3, 7)
    assert {f0, f1, f2} <= {868100000, 868300000, 868500000}


def test_other_sub_band_is_used_while_one_is_blocked(lw_run, lw_net) -> None:
    # NewChannelReq for 867.1 MHz (sub-band 865-868 MHz) in the first downlink.
    fopts = bytes([0x07, 3]) + (867100000 // 100).to_bytes(3, "little") + bytes([0x50])
    down = lw_net.downlink(NWK, APP, ABP_ADDR_AIR, 0, fopts=fopts)
    code = PRELUDE % json.dumps(down.hex()) + (
        "c = Clock()\n"
        "r = Radio(c, [F])\n"
        f"d = device(c, r, RTC(), {ABP})\n"
        "d.send(1, b'a')\n"
        "d.send(1, b'b')\n"
        "wait = d.time_until_send_ms()\n"
        "out(freqs=[s[1] for s in r.sent], wait=wait)\n"
    )
    (o,) = lw_run(code)
    assert o["freqs"][1] == 867100000 and o["freqs"][0] != 867100000
    assert o["wait"] > 0  # now both sub-bands are blocked


def test_real_time_send_with_the_board_clock(lw_run, lw_net) -> None:
    # No virtual time: time.ticks_ms/sleep_ms and time.time_ns as on a board (about 2 s).
    # Behaviour only; how long it took is not asserted.
    down = lw_net.downlink(NWK, APP, ABP_ADDR_AIR, 0, fport=9, payload=b"ok")
    code = PRELUDE % json.dumps(down.hex()) + (
        "class R:\n"
        "    sent = []\n"
        "    replies = [None, F]\n"
        "    def transmit(self, data, freq, sf, bw):\n"
        "        self.sent.append(hx(data))\n"
        "    def receive(self, freq, sf, bw, timeout_ms):\n"
        "        r = self.replies.pop(0)\n"
        "        return r and uh(r)\n"
        "    def sleep(self):\n"
        "        pass\n"
        "from lorawan.mac import Device\n"
        f"d = Device(R(), RTC(), 'session.bin', {ABP})\n"
        "x = d.send(9, b'hi')\n"
        "out(fport=x.fport, payload=hx(x.payload), sent=R.sent, wait=d.time_until_send_ms())\n"
    )
    (o,) = lw_run(code)
    assert (o["fport"], o["payload"]) == (9, "6f6b")  # heard in RX2, after the real delays
    assert lw_net.uplink(h(o["sent"][0]), NWK, APP, 0).payload == b"hi"
    assert o["wait"] > 0  # the real wall clock drives the duty cycle too


def test_adr_ack_req_and_backoff_without_downlinks(lw_run, lw_net) -> None:
    down = lw_net.downlink(NWK, APP, ABP_ADDR_AIR, 0, fport=1, payload=b"")
    code = PRELUDE % json.dumps(down.hex()) + (
        "c = Clock()\n"
        "r = Radio(c)\n"
        "r.windows = None\n"
        f"d = device(c, r, RTC(), {ABP})\n"
        "d._s.tx_power = 2\n"
        "for i in range(170):\n"
        "    r.replies = [F] if i == 165 else []\n"
        "    c.sleep_ms(3600000)\n"
        "    d.send(1, b'a')\n"
        "    out(fctrl=uh(r.sent[-1][0])[5], sf=r.sent[-1][2], power=d._s.tx_power)\n"
        "    r.sent = []\n"
    )
    o = lw_run(code)
    req = [bool(x["fctrl"] & 0x40) for x in o]
    # ADRACKReq once ADR_ACK_CNT reaches ADR_ACK_LIMIT (64), until a downlink arrives.
    assert req == [False] * 64 + [True] * (166 - 64) + [False] * 4
    assert all(x["fctrl"] & 0x80 for x in o)
    # After ADR_ACK_LIMIT + ADR_ACK_DELAY (96) uplinks: full power, then one DR lower
    # every further 32 uplinks.
    assert [x["power"] for x in o[94:97]] == [2, 0, 0]
    sfs = [x["sf"] for x in o]
    assert sfs[:128] == [7] * 128 and sfs[128:160] == [8] * 32 and sfs[160:] == [9] * 10


def test_refusals_name_the_problem(lw_run) -> None:
    code = (
        "from lwfakes import *\n"
        "from lorawan import errors\n"
        "c = Clock()\n"
        "r = Radio(c)\n"
        "res = []\n"
        f"d = device(c, r, RTC(), {OTAA})\n"
        "try:\n"
        "    d.send(1, b'x')\n"
        "except errors.NotJoined:\n"
        "    res.append('not joined')\n"
        f"d = device(c, r, RTC(), {ABP}, data_rate=0, path='abp.bin')\n"
        "try:\n"
        "    d.send(1, bytes(52))\n"
        "except errors.PayloadTooLarge as e:\n"
        "    res.append(e.max_len)\n"
        "d.send(1, bytes(51))\n"
        "res.append(len(r.sent))\n"
        "for port in (0, 224):\n"
        "    try:\n"
        "        d.send(port, b'x')\n"
        "    except ValueError:\n"
        "        res.append(port)\n"
        "try:\n"
        "    d.join()\n"
        "except errors.LoRaWANError:\n"
        "    res.append('abp')\n"
        "try:\n"
        f"    device(c, r, RTC(), dev_eui='00', app_key='{APP_KEY.hex()}')\n"
        "except ValueError as e:\n"
        "    res.append(str(e))\n"
        "out(res=res)\n"
    )
    (o,) = lw_run(code)
    assert o["res"] == ["not joined", 51, 1, 0, 224, "abp", "dev_eui: 8 bytes expected"]
