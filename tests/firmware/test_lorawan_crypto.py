"""Property tests of the firmware's LoRaWAN crypto and time on air on the unix port, with
CPython `cryptography` (and a float formula) as independent oracles. Seeded random cases
are batched into one MicroPython run each, so hundreds of cases cost one process."""

from __future__ import annotations

import json
import random

h = bytes.fromhex


def test_aes_cmac_matches_cryptography_for_every_length(lw_run, lw_net, tmp_path) -> None:
    rnd = random.Random(1)
    cases = [(rnd.randbytes(16), rnd.randbytes(n)) for n in list(range(0, 70)) * 3]
    first = [
        (rnd.randbytes(16), rnd.randbytes(16), rnd.randbytes(rnd.randrange(0, 40)))
        for _ in range(60)
    ]
    lines = [[k.hex(), "", m.hex()] for k, m in cases] + [
        [k.hex(), b.hex(), m.hex()] for k, b, m in first
    ]
    (tmp_path / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in lines))
    code = (
        "from lwfakes import *\n"
        "import json\n"
        "from lorawan import crypto\n"
        "for line in open('cases.jsonl'):\n"
        "    k, b, m = json.loads(line)\n"
        "    out(mac=hx(crypto.cmac(uh(k), uh(m), uh(b) if b else None)))\n"
    )
    macs = [o["mac"] for o in lw_run(code)]
    assert macs == [lw_net.cmac(k, m).hex() for k, m in cases] + [
        lw_net.cmac(k, b + m).hex() for k, b, m in first
    ]


def test_payload_cipher_and_mic_match_the_network_side(lw_run, lw_net, tmp_path) -> None:
    rnd = random.Random(2)
    cases = []
    for i in range(120):
        cases.append(
            {
                "key": rnd.randbytes(16).hex(),
                "addr": rnd.randbytes(4).hex(),
                "fcnt": rnd.choice([0, 1, 0xFFFF, 0x10000, 0xFFFFFFFF, rnd.randrange(2**32)]),
                "dir": i % 2,
                "data": rnd.randbytes(rnd.randrange(0, 80)).hex(),
            }
        )
    (tmp_path / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    code = (
        "from lwfakes import *\n"
        "import json\n"
        "from lorawan import crypto\n"
        "for line in open('cases.jsonl'):\n"
        "    c = json.loads(line)\n"
        "    b = bytearray(uh(c['data']))\n"
        "    crypto.crypt_payload(uh(c['key']), c['dir'], uh(c['addr']), c['fcnt'], b)\n"
        "    mic = crypto.data_mic(uh(c['key']), c['dir'], uh(c['addr']), c['fcnt'], b)\n"
        "    out(r=[hx(b), hx(mic)])\n"
    )
    results = [o["r"] for o in lw_run(code)]
    for c, (cipher, mic) in zip(cases, results, strict=True):
        key, addr = h(c["key"]), h(c["addr"])
        assert h(cipher) == lw_net.crypt(key, c["dir"], addr, c["fcnt"], h(c["data"]))
        assert h(mic) == lw_net.mic(key, c["dir"], addr, c["fcnt"], h(cipher))


def test_join_accepts_decrypt_and_derive_the_network_keys(lw_run, lw_net, tmp_path) -> None:
    rnd = random.Random(3)
    cases = []
    for i in range(40):
        key, app_nonce, net_id, addr = (rnd.randbytes(n) for n in (16, 3, 3, 4))
        cflist = lw_net.cflist([867100000 + 200000 * k for k in range(i % 6)]) if i % 2 else b""
        accept = lw_net.join_accept(
            key, app_nonce, net_id, addr, rnd.randrange(256), rnd.randrange(16), cflist
        )
        cases.append([key.hex(), accept.hex(), rnd.randrange(65536)])
    (tmp_path / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    code = (
        "from lwfakes import *\n"
        "import json\n"
        "from lorawan import crypto, frame\n"
        "for line in open('cases.jsonl'):\n"
        "    key, acc, nonce = json.loads(line)\n"
        "    p = frame.join_accept(uh(key), uh(acc))\n"
        "    dev_nonce = bytes([nonce & 255, nonce >> 8])\n"
        "    nwk, app = crypto.session_keys(uh(key), p[1:4], p[4:7], dev_nonce)\n"
        "    out(r=[hx(p), hx(nwk), hx(app)])\n"
    )
    results = [o["r"] for o in lw_run(code)]
    for (key, accept, nonce), (plain, nwk, app) in zip(cases, results, strict=True):
        key, plain = h(key), h(plain)
        assert plain[0] == 0x20 and len(plain) == len(h(accept)) - 4
        expect = lw_net.session_keys(key, plain[1:4], plain[4:7], nonce)
        assert (h(nwk), h(app)) == expect


def test_time_on_air_matches_the_formula(lw_run, lw_net) -> None:
    code = (
        "from lwfakes import *\n"
        "from lorawan import region\n"
        "out(ms=[[(region.time_on_air_us(n, sf) + 999) // 1000 for n in range(0, 256, 3)]\n"
        "        for sf in range(7, 13)])\n"
    )
    (o,) = lw_run(code)
    expect = [[lw_net.airtime_ms(n, sf) for n in range(0, 256, 3)] for sf in range(7, 13)]
    assert o["ms"] == expect
