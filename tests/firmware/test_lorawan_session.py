"""Session persistence of the LoRaWAN MAC on the unix port: the binary layout, RTC memory
across deep sleep, the flash mirror across reboots and power cuts. Frame counters and
DevNonces seen on air must never repeat, whatever the order of events."""

from __future__ import annotations

import binascii
import json
import random
import struct

import pytest

h = bytes.fromhex

APP_KEY = h("2b7e151628aed2a6abf7158809cf4f3c")
DEV_EUI = h("70b3d57ed0000002")
OTAA = f"dev_eui='{DEV_EUI.hex()}', app_key='{APP_KEY.hex()}'"
NWK = h("000102030405060708090a0b0c0d0e0f")
APP = h("f0e0d0c0b0a090807060504030201000")
ABP_ADDR = h("26011bda")
ABP = f"dev_addr='{ABP_ADDR.hex()}', nwk_s_key='{NWK.hex()}', app_s_key='{APP.hex()}'"
ABP_DICT = repr({"dev_addr": ABP_ADDR.hex(), "nwk_s_key": NWK.hex(), "app_s_key": APP.hex()})
OTAA_DICT = repr({"dev_eui": DEV_EUI.hex(), "app_key": APP_KEY.hex()})

# Executes a plan of events inside MicroPython. A power cut during a TX lets the frame out
# and then kills the node; one during the mirror's rename leaves only the temporary file.
PLAN_RUNNER = """
from lwfakes import *
import json, os
from lorawan import store
P = json.loads(%r)
KW = %s
ACCEPT = %r

class Cut(Exception):
    pass

class CutRadio(Radio):
    cut = False
    def transmit(self, data, freq, sf, bw):
        out(tx=hx(data))  # streamed, so a long plan needs no growing list
        if self.cut:
            self.cut = False
            raise Cut()

class Flash:
    cut = False
    fail = False
    writes = 0
    def rename(self, a, b):
        if self.cut:
            self.cut = False
            raise Cut()
        if self.fail:
            self.fail = False
            raise OSError(28)  # ENOSPC: the node lives on, the mirror is not updated
        self.writes += 1
        os.rename(a, b)

flash = Flash()
store.os = flash
c = Clock()
r = CutRadio(c)
r.windows = None
rtc = RTC()
def boot():
    return device(c, r, rtc, **KW)
d = boot()
sources = []
for ev in P:
    c.sleep_ms(3600000)
    try:
        if ev == "send":
            if d.joined:
                d.send(1, b"p")
        elif ev == "join":
            r.replies = [None, None]
            d.join(1)
        elif ev == "join_ok":
            r.replies = [None, ACCEPT]
            d.join(1)
        elif ev == "cut_tx":
            r.cut = True
            r.replies = [None, ACCEPT]
            d.send(1, b"c") if d.joined else d.join(1)
        elif ev == "cut_flash":
            flash.cut = True
            for _ in range(20):
                c.sleep_ms(3600000)
                d.send(1, b"f") if d.joined else d.join(1)
        elif ev == "flash_error":
            flash.fail = True
            for _ in range(20):
                c.sleep_ms(3600000)
                try:
                    d.send(1, b"e") if d.joined else d.join(1)
                except OSError:
                    pass
        elif ev == "torn":
            with open("session.bin.tmp", "wb") as f:
                f.write(b"\\x01torn")
            raise Cut()
        elif ev == "sleep":
            d = boot()
            sources.append(d.restored_from)
        elif ev == "reboot":
            rtc = RTC()
            d = boot()
            sources.append(d.restored_from)
    except Cut:
        flash.cut = False
        rtc = RTC()
        d = boot()
        sources.append(d.restored_from)
out(sources=sources, writes=flash.writes, fcnt=d.fcnt_up)
"""


def _plan(seed: int, events: list[str], weights: list[int], n: int) -> list[str]:
    return random.Random(seed).choices(events, weights, k=n)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_abp_frame_counter_never_repeats(lw_run, lw_net, seed: int) -> None:
    events = ["send", "sleep", "reboot", "cut_tx", "cut_flash", "torn", "flash_error"]
    plan = _plan(seed, events, [60, 15, 5, 5, 2, 2, 3], 160)
    *txs, o = lw_run(PLAN_RUNNER % (json.dumps(plan), ABP_DICT, ""))
    o["sent"] = [t["tx"] for t in txs]
    fcnts = []
    last = -1
    for phy in o["sent"]:
        low = int.from_bytes(h(phy)[6:8], "little")
        fcnt = low if low > last else low + 0x10000  # the network's 32-bit reconstruction
        up = lw_net.uplink(h(phy), NWK, APP, fcnt)
        assert up.mic_ok and up.payload in (b"p", b"c", b"f", b"e")
        fcnts.append(fcnt)
        last = fcnt
    assert fcnts == sorted(set(fcnts)), "a frame counter was sent twice"
    assert len(fcnts) > 80
    assert {"rtc", "flash"} <= set(o["sources"])
    # Rare flash writes: about one per 16 uplinks plus one per reboot.
    reboots = sum(1 for s in o["sources"] if s != "rtc")
    assert o["writes"] <= len(fcnts) // 16 + reboots + 2


@pytest.mark.parametrize("seed", [4, 5])
def test_otaa_dev_nonce_and_counters_never_repeat(lw_run, lw_net, seed: int) -> None:
    app_nonce, net_id, addr = h("010203"), h("000013"), h("11223344")
    accept = lw_net.join_accept(APP_KEY, app_nonce, net_id, addr).hex()
    plan = _plan(
        seed,
        [
            "join",
            "join_ok",
            "send",
            "sleep",
            "reboot",
            "cut_tx",
            "cut_flash",
            "torn",
            "flash_error",
        ],
        [10, 4, 40, 10, 5, 6, 2, 2, 2],
        140,
    )
    *txs, o = lw_run(PLAN_RUNNER % (json.dumps(plan), OTAA_DICT, accept))
    o["sent"] = [t["tx"] for t in txs]
    nonces = []
    used = set()  # (DevNonce of the session, FCnt)
    keys = None
    for phy in map(h, o["sent"]):
        if phy[0] == 0x00:
            _, dev_eui, nonce = lw_net.join_request(phy, APP_KEY)
            assert dev_eui == DEV_EUI
            nonces.append(nonce)
            continue
        # Uplinks belong to the session of the last join that was accepted before them.
        fcnt = int.from_bytes(phy[6:8], "little")
        for nonce in reversed(nonces):
            nwk, app = lw_net.session_keys(APP_KEY, app_nonce, net_id, nonce)
            if lw_net.uplink(phy, nwk, app, fcnt).mic_ok:
                keys = nonce
                break
        else:
            raise AssertionError("uplink of no session")
        assert (keys, fcnt) not in used, "a frame counter was sent twice in one session"
        used.add((keys, fcnt))
    assert nonces == sorted(set(nonces)), "a DevNonce was sent twice"
    assert len(nonces) >= 10 and len(used) > 20


def test_layout_round_trip_crc_and_offsets(lw_run) -> None:
    code = (
        "from lwfakes import *\n"
        "from lorawan import session\n"
        "s = session.Session(0xBEEF)\n"
        "s.flags = 5\n"
        "s.dev_addr = b'\\x01\\x02\\x03\\x04'\n"
        "s.nwk_s_key = bytes(range(16))\n"
        "s.app_s_key = bytes(range(16, 32))\n"
        "s.fcnt_up = 0xFFFFFFFF\n"
        "s.fcnt_flash = 70000\n"
        "s.fcnt_down = 0x12345\n"
        "s.nonce_next = 65536\n"
        "s.dev_nonce = 65535\n"
        "s.ch_freq[5] = 867500000\n"
        "s.ch_dr[5] = 0x50\n"
        "s.ch_mask = 0x27\n"
        "s.dc_until = [1, 2, 3, 4, 5, 1800000000000]\n"
        "s.ans = bytearray(b'\\x03\\x07')\n"
        "s.sticky = bytearray(b'\\x05\\x07\\x08')\n"
        "buf = bytearray(session.SIZE)\n"
        "s.pack(buf)\n"
        "t = session.Session()\n"
        "ok = t.unpack(buf)\n"
        "buf2 = bytearray(session.SIZE)\n"
        "t.pack(buf2)\n"
        "bad = []\n"
        "for i in range(0, session.SIZE, 7):\n"
        "    x = bytearray(buf)\n"
        "    x[i] ^= 0x10\n"
        "    bad.append(session.Session().unpack(x))\n"
        "out(size=session.SIZE, buf=hx(buf), ok=ok, same=buf == buf2, bad=bad,\n"
        "    short=session.Session().unpack(buf[:-1]), dc=t.dc_until, ans=hx(t.ans),\n"
        "    sticky=hx(t.sticky), ch=[t.ch_freq[5], t.ch_dr[5], t.ch_mask])\n"
    )
    (o,) = lw_run(code)
    assert o["ok"] and o["same"] and not any(o["bad"]) and not o["short"]
    assert o["size"] == 235 <= 2048
    buf = h(o["buf"])
    assert buf[0] == 1  # layout version
    crc = binascii.crc_hqx(buf[:-2], 0xFFFF)  # CRC-16/CCITT-FALSE
    assert struct.unpack_from("<H", buf, 233)[0] == crc
    assert struct.unpack_from("<H4s16s16sIIII", buf, 2) == (
        0xBEEF,
        h("01020304"),
        bytes(range(16)),
        bytes(range(16, 32)),
        0xFFFFFFFF,
        70000,
        0x12345,
        65536,
    )
    assert struct.unpack_from("<Q", buf, 153 + 5 * 8)[0] == 1800000000000
    assert o["dc"][5] == 1800000000000 and o["ans"] == "0307" and o["sticky"] == "050708"
    assert o["ch"] == [867500000, 0x50, 0x27]


def test_restore_prefers_rtc_then_flash_with_jump_then_fresh(lw_run) -> None:
    code = (
        "from lwfakes import *\n"
        "import os\n"
        "c = Clock()\n"
        "r = Radio(c)\n"
        "rtc = RTC()\n"
        f"d = device(c, r, rtc, {ABP})\n"
        "res = [d.restored_from]\n"
        "for i in range(5):\n"
        "    c.sleep_ms(3600000)\n"
        "    d.send(1, b'x')\n"
        f"d = device(c, r, rtc, {ABP})\n"
        "res.append([d.restored_from, d.fcnt_up])\n"
        "bad = bytearray(rtc.memory())\n"
        "bad[50] ^= 1\n"
        "rtc = RTC(bad)\n"  # RTC memory garbled: its CRC fails
        f"d = device(c, r, rtc, {ABP})\n"
        "res.append([d.restored_from, d.fcnt_up])\n"
        f"d = device(c, r, rtc, {ABP})\n"  # the jumped counter went to RTC memory at once
        "res.append([d.restored_from, d.fcnt_up])\n"
        "os.remove('session.bin')\n"
        f"d = device(c, r, RTC(), {ABP})\n"
        "res.append([d.restored_from, d.fcnt_up])\n"
        "out(res=res)\n"
    )
    (o,) = lw_run(code)
    # The mirror was written when ABP started (FCnt 0); 5 uplinks later RTC holds 5.
    assert o["res"] == ["new", ["rtc", 5], ["flash", 16], ["rtc", 16], ["new", 0]]


def test_new_credentials_start_fresh_but_keep_the_dev_nonce(lw_run, lw_net) -> None:
    other_key = "00" * 16
    code = (
        "from lwfakes import *\n"
        "c = Clock()\n"
        "r = Radio(c)\n"
        "rtc = RTC()\n"
        f"d = device(c, r, rtc, {OTAA})\n"
        "d.join(2)\n"
        "c.sleep_ms(3600000)\n"
        f"d = device(c, r, rtc, dev_eui='{DEV_EUI.hex()}', app_key='{other_key}')\n"
        "src = d.restored_from\n"
        "d.join(1)\n"
        "c.sleep_ms(3600000)\n"
        f"d = device(c, r, RTC(), dev_eui='{DEV_EUI.hex()}', app_key='{other_key}')\n"
        "src2 = d.restored_from\n"
        "out(src=[src, src2], sent=[s[0] for s in r.sent])\n"
    )
    (o,) = lw_run(code)
    assert o["src"] == ["new", "flash"]
    nonces = [int.from_bytes(h(p)[17:19], "little") for p in o["sent"]]
    assert nonces == [0, 1, 2]


def test_rtc_bytes_outside_the_session_are_preserved(lw_run) -> None:
    code = (
        "from lwfakes import *\n"
        "import rtcmem\n"
        "from lorawan import session\n"
        "c = Clock()\n"
        "r = Radio(c)\n"
        "rtc = RTC(b'A' * 32 + b'Z' * 600)\n"
        f"d = device(c, r, rtc, {ABP}, rtc_offset=32)\n"
        "d.send(1, b'x')\n"
        "m = rtc.memory()\n"
        "kept = m[:32] == b'A' * 32 and m[32 + session.SIZE:] == b'Z' * (600 - session.SIZE)\n"
        # The application's own RTC region wrapper (rtcmem.Region) works as the rtc object.
        "rtc2 = RTC(b'B' * rtcmem.MAC_OFFSET)\n"
        "region = rtcmem.Region(rtc2, rtcmem.MAC_OFFSET, 2048 - rtcmem.MAC_OFFSET)\n"
        f"d = device(c, r, region, {ABP}, path='s2.bin')\n"
        "c.sleep_ms(3600000)\n"
        "d.send(1, b'y')\n"
        f"d2 = device(c, r, region, {ABP}, path='s2.bin')\n"
        "m2 = rtc2.memory()\n"
        "out(kept=kept, kept2=m2[:rtcmem.MAC_OFFSET] == b'B' * rtcmem.MAC_OFFSET,\n"
        "    src=d2.restored_from, fcnt=d2.fcnt_up, size=len(m2))\n"
    )
    (o,) = lw_run(code)
    assert o == {"kept": True, "kept2": True, "src": "rtc", "fcnt": 1, "size": 32 + 235}
