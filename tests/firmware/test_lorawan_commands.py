"""MAC commands of the LoRaWAN device on the unix port: each request is applied (or
refused as a whole) and answered in the next uplink's FOpts; sticky answers repeat until a
downlink; malformed or hostile downlinks never crash the MAC."""

from __future__ import annotations

import json
import random

h = bytes.fromhex

NWK = h("000102030405060708090a0b0c0d0e0f")
APP = h("f0e0d0c0b0a090807060504030201000")
ADDR = h("26011bda")
AIR = ADDR[::-1]
ABP = f"dev_addr='{ADDR.hex()}', nwk_s_key='{NWK.hex()}', app_s_key='{APP.hex()}'"

# Runs steps: each sets the replies of the radio's receive windows, may run a statement,
# then sends one uplink an hour after the previous one and reports what happened.
STEPS = """
from lwfakes import *
import json
S = json.loads(%r)
c = Clock()
r = Radio(c)
r.last_snr = -7.25
r.tx_power_dbm = 14
d = device(c, r, RTC(), %s, battery=lambda: 200)
for i, st in enumerate(S):
    r.replies = st.get("replies", [])
    if st.get("pre"):
        exec(st["pre"])
    c.sleep_ms(3600000)
    r.windows = []
    x = d.send(1, b"u", st.get("confirmed", False))
    s = d._s
    out(tx=r.sent[-1], windows=r.windows, fport=x.fport, payload=hx(x.payload),
        link_check=x.link_check, dr=s.dr, power=d.tx_power_dbm, nb=s.nb_trans,
        rx=[s.rx1_offset, s.rx2_dr, s.rx2_freq, s.rx_delay], mask=s.ch_mask,
        ch=[[s.ch_freq[k], s.ch_dr[k]] for k in range(16) if s.ch_freq[k]],
        dropped=d.rx_dropped, wait=d.time_until_send_ms(), now=c.now, dc=s.max_dcycle,
        tx_dbm=r.powers[-1], radio_dbm=r.tx_power_dbm)
"""


class Net:
    """Builds downlinks with consecutive counters, as the network would."""

    def __init__(self, lw_net) -> None:
        self.lw = lw_net
        self.fcnt = 0

    def down(self, fopts: bytes = b"", **kw) -> str:
        frame = self.lw.downlink(NWK, APP, AIR, self.fcnt, fopts=fopts, **kw)
        self.fcnt += 1
        return frame.hex()


def run_steps(lw_run, lw_net, steps: list[dict]) -> list[dict]:
    results = lw_run(STEPS % (json.dumps(steps), ABP))
    for fcnt, r in enumerate(results):
        r["up"] = lw_net.uplink(h(r["tx"][0]), NWK, APP, fcnt)
        assert r["up"].mic_ok
    return results


def freq3(hz: int) -> bytes:
    return (hz // 100).to_bytes(3, "little")


def test_link_adr_req_sets_data_rate_power_and_mask(lw_run, lw_net) -> None:
    n = Net(lw_net)
    steps = [
        {"replies": [n.down(h("03 32 0100 01"))]},  # DR3, TXPower 2, only channel 0, NbTrans 1
        {"replies": [n.down(h("03 6f 0700 00"))]},  # DR6: unsupported -> refused as a whole
        {"replies": [n.down(h("03 ff 0000 00"))]},  # empty mask -> refused
        {"replies": [n.down(h("03 ff 2000 00"))]},  # undefined channel 5 -> refused
        {"replies": [n.down(h("03 f8 0700 00"))]},  # TXPower 8 -> refused
        {"replies": [n.down(h("03 4f 0000 60"))]},  # DR4, ChMaskCntl 6: all defined channels on
        {},
    ]
    o = run_steps(lw_run, lw_net, steps)
    assert o[0]["up"].fopts == b""
    assert o[1]["up"].fopts == h("0307")
    assert (o[0]["dr"], o[0]["power"], o[0]["mask"]) == (3, 12, 1)
    # The driver's own level (14 dBm) is TXPower 0; TXPower 2 sends 4 dB lower, and the
    # driver is left as it was between frames.
    assert [r["tx_dbm"] for r in o[:2]] == [14, 10] and o[1]["radio_dbm"] == 14
    assert o[1]["tx"][1:3] == [868100000, 9]  # only channel 0, DR3 = SF9
    assert [r["up"].fopts for r in o[2:6]] == [h("0305"), h("0306"), h("0306"), h("0303")]
    assert all((r["dr"], r["power"], r["mask"]) == (3, 12, 1) for r in o[1:5])
    assert o[6]["up"].fopts == h("0307")
    assert (o[5]["dr"], o[5]["mask"]) == (4, 7)


def test_rx_param_setup_is_applied_and_its_answer_sticks_until_a_downlink(lw_run, lw_net):
    n = Net(lw_net)
    steps = [
        {"replies": [n.down(bytes([0x05, 2 << 4 | 3]) + freq3(869100000))]},
        {},  # no downlink: the answer is repeated
        {"replies": [n.down()]},  # a downlink: the repetition ends
        {"replies": [n.down(bytes([0x05, 0x03]) + freq3(871000000))]},  # out of band: refused
        {},
    ]
    o = run_steps(lw_run, lw_net, steps)
    assert [r["up"].fopts for r in o] == [b"", h("0507"), h("0507"), b"", h("0506")]
    assert o[0]["rx"] == [2, 3, 869100000, 1] and o[3]["rx"] == [2, 3, 869100000, 1]
    rx1, rx2 = o[1]["windows"]
    assert rx1[:2] == [o[1]["tx"][1], 9]  # DR5 uplink, RX1DROffset 2: DR3 = SF9
    assert rx2[:2] == [869100000, 9]


def test_new_channel_req(lw_run, lw_net) -> None:
    n = Net(lw_net)
    steps = [
        {"replies": [n.down(h("07 03") + freq3(867100000) + h("50"))]},  # ch3 DR0-5: ok
        {"replies": [n.down(h("07 01") + freq3(867300000) + h("50"))]},  # default channel
        {"replies": [n.down(h("07 04") + freq3(868650000) + h("50"))]},  # no sub-band
        {"replies": [n.down(h("07 04") + freq3(867300000) + h("25"))]},  # DR min > max
        {"replies": [n.down(h("07 03") + freq3(0) + h("00"))]},  # removes channel 3
        {},
    ]
    o = run_steps(lw_run, lw_net, steps)
    answers = [r["up"].fopts for r in o[1:]]
    assert answers == [h("0703"), h("0702"), h("0702"), h("0701"), h("0703")]
    assert o[0]["ch"][3] == [867100000, 0x50] and o[0]["mask"] == 0b1111
    assert len(o[3]["ch"]) == 4 and len(o[4]["ch"]) == 3 and o[4]["mask"] == 0b111


def test_dev_status_and_fport0_commands(lw_run, lw_net) -> None:
    n = Net(lw_net)
    steps = [
        {"replies": [n.down(h("06"))]},
        {"replies": [n.down(fport=0, payload=h("06"))]},  # encrypted with NwkSKey
        {},
    ]
    o = run_steps(lw_run, lw_net, steps)
    # Battery 200 from the callback; margin -7 dB (radio.last_snr -7.25 rounded) in 6 bits.
    assert o[1]["up"].fopts == h("06c839") and o[2]["up"].fopts == h("06c839")
    assert o[1]["fport"] is None  # MAC-only downlinks reach no application


def test_duty_cycle_req_limits_the_aggregated_duty_cycle(lw_run, lw_net) -> None:
    n = Net(lw_net)
    o = run_steps(lw_run, lw_net, [{"replies": [n.down(h("04 07"))]}, {}])
    assert o[1]["up"].fopts == h("04") and o[1]["dc"] == 7
    t, now = o[1]["tx"][4], o[1]["now"]
    airtime = lw_net.airtime_ms(len(h(o[1]["tx"][0])), 7)
    assert o[1]["wait"] == t + airtime * 128 - now  # 1/2^7 instead of the sub-band's 1 %


def test_rx_timing_setup(lw_run, lw_net) -> None:
    n = Net(lw_net)
    o = run_steps(lw_run, lw_net, [{"replies": [n.down(h("08 03"))]}, {}, {}])
    assert [r["up"].fopts for r in o] == [b"", h("08"), h("08")]  # sticky
    tx, (rx1, rx2) = o[1]["tx"], o[1]["windows"]
    tx_end = tx[4] + lw_net.airtime_ms(len(h(tx[0])), 7)
    assert tx_end + 2700 <= rx1[4] <= tx_end + 3000 and rx2[4] - rx1[4] >= 900


def test_link_check(lw_run, lw_net) -> None:
    n = Net(lw_net)
    steps = [
        {"pre": "d.link_check()", "replies": [n.down(h("02 0a 03"))]},
        {},
    ]
    o = run_steps(lw_run, lw_net, steps)
    assert o[0]["up"].fopts == h("02") and o[1]["up"].fopts == b""
    assert o[0]["link_check"] == [10, 3] and o[1]["link_check"] is None


def test_unknown_or_truncated_commands_end_parsing(lw_run, lw_net) -> None:
    n = Net(lw_net)
    steps = [
        {"replies": [n.down(h("06 0d 06"))]},  # DeviceTimeAns is not handled: stop there
        {"replies": [n.down(h("06 03 32 07"))]},  # LinkADRReq cut short
        {"replies": [n.down(h("06"), fport=0, payload=h("06"))]},  # FOpts and FPort 0: dropped
        {},
    ]
    o = run_steps(lw_run, lw_net, steps)
    assert [r["up"].fopts for r in o[1:]] == [h("06c839"), h("06c839"), b""]
    assert o[1]["dr"] == 5 and o[2]["dropped"] == 1


def test_malformed_downlinks_are_dropped_and_counted(lw_run, lw_net, tmp_path) -> None:
    rnd = random.Random(7)
    frames = []
    for i in range(150):
        kind = i % 5
        if kind == 0:  # random bytes of any length
            f = rnd.randbytes(rnd.randrange(0, 40))
        elif kind == 1:  # our DevAddr, but garbage after it
            f = bytes([0x60]) + AIR + rnd.randbytes(rnd.randrange(0, 30))
        elif kind == 2:  # a valid frame with one bit flipped
            g = bytearray(lw_net.downlink(NWK, APP, AIR, 1000 + i, fport=1, payload=b"abc"))
            g[rnd.randrange(len(g))] ^= 1 << rnd.randrange(8)
            f = bytes(g)
        elif kind == 3:  # FOptsLen pointing past the end, or a proprietary/uplink MHDR
            f = (
                bytes([rnd.choice([0x60, 0xA0, 0x40, 0xE0, 0x61])])
                + AIR
                + bytes([0x0F])
                + rnd.randbytes(rnd.randrange(2, 12))
            )
        else:  # somebody else's valid downlink
            f = lw_net.downlink(NWK, APP, h("01020304"), i, fport=2, payload=b"x")
        frames.append(f.hex())
    (tmp_path / "frames.txt").write_text("\n".join(frames) + "\n")  # read line by line
    code = (
        "from lwfakes import *\n"
        "c = Clock()\n"
        "r = Radio(c)\n"
        "r.windows = None\n"
        f"d = device(c, r, RTC(), {ABP})\n"
        "got = 0\n"
        "for f in open('frames.txt'):\n"
        "    f = f.strip()\n"
        "    r.replies = [f, f]\n"
        "    r.sent = []\n"
        "    c.sleep_ms(3600000)\n"
        "    x = d.send(1, b'u')\n"
        "    got += x.fport is not None\n"
        "out(dropped=d.rx_dropped, got=got, fcnt=d.fcnt_up)\n"
    )
    (o,) = lw_run(code)
    received = sum(1 for f in frames if f)  # an empty frame counts as nothing received
    assert o == {"dropped": 2 * received, "got": 0, "fcnt": len(frames)}


def test_hostile_valid_downlinks_never_crash_the_mac(lw_run, lw_net, tmp_path) -> None:
    # Correct MIC and counter, random MAC commands (biased to known CIDs) and payloads.
    rnd = random.Random(11)
    frames = []
    for fcnt in range(200):
        cmds = bytearray()
        while len(cmds) < 15 and rnd.random() < 0.7:
            cmds.append(rnd.choice([2, 3, 4, 5, 6, 7, 8, rnd.randrange(256)]))
            cmds += rnd.randbytes(rnd.randrange(0, 6))
        cmds = bytes(cmds[:15])
        if fcnt % 3 == 0:
            f = lw_net.downlink(
                NWK,
                APP,
                AIR,
                fcnt,
                fport=0,
                payload=cmds + rnd.randbytes(3),
                confirmed=rnd.random() < 0.5,
            )
        else:
            f = lw_net.downlink(
                NWK,
                APP,
                AIR,
                fcnt,
                fopts=cmds,
                fport=rnd.choice([None, 1, 223, 224, 255]),
                payload=rnd.randbytes(rnd.randrange(0, 20)),
                ack=rnd.random() < 0.5,
                pending=rnd.random() < 0.5,
            )
        frames.append(f.hex())
    (tmp_path / "frames.txt").write_text("\n".join(frames) + "\n")
    code = (
        "from lwfakes import *\n"
        "c = Clock()\n"
        "r = Radio(c)\n"
        "r.windows = None\n"
        f"d = device(c, r, RTC(), {ABP})\n"
        "for f in open('frames.txt'):\n"
        "    r.replies = [f.strip()]\n"
        "    c.sleep_ms(30 * 3600000)\n"  # long enough for any aggregated duty cycle
        "    d.send(1, b'u', max_wait_ms=10**9)\n"
        "    r.sent = r.sent[-1:]\n"
        "out(dropped=d.rx_dropped, fcnt=d.fcnt_up, fcnt_down=d._s.fcnt_down, tx=r.sent[-1])\n"
    )
    (o,) = lw_run(code)
    assert o["dropped"] == 0 and o["fcnt"] == 200 and o["fcnt_down"] == 200
    assert lw_net.uplink(h(o["tx"][0]), NWK, APP, 199).mic_ok
