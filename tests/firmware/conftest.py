"""Fixtures for the LoRaWAN MAC tests: fakes that run inside MicroPython (virtual time,
radio, RTC memory) and an independent network side in CPython (the gateway's, on `cryptography`)."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from allmende.boards.virtual import unix_port
from allmende.gateway import lorawan, region
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

# Runs inside MicroPython next to the firmware: everything a MAC test needs around the MAC.
LWFAKES = '''
"""Fakes for LoRaWAN MAC tests on the unix port."""
import json
from binascii import hexlify, unhexlify
from lorawan import region


def hx(b):
    return None if b is None else hexlify(b).decode()


def uh(s):
    return unhexlify(s)


def out(**kw):
    print("@" + json.dumps(kw))


class Clock:
    """Virtual time: ticks and wall clock move only when the MAC sleeps or the radio works."""

    def __init__(self, wall0=1700000000000):
        self.now = 0
        self.wall0 = wall0

    def ticks_ms(self):
        return self.now

    def ticks_add(self, a, b):
        return a + b

    def ticks_diff(self, a, b):
        return a - b

    def sleep_ms(self, ms):
        self.now += ms

    def wall_ms(self):
        return self.wall0 + self.now

    def time_ns(self):
        return self.wall_ms() * 1000000


class Radio:
    """Records every TX and RX window; receive() answers from `replies` (one per window)."""

    def __init__(self, clock, replies=None):
        self.clock = clock
        self.replies = replies or []
        self.sent = []
        self.powers = []
        self.windows = []
        self.sleeps = 0

    def transmit(self, data, freq, sf, bw):
        self.sent.append([hx(bytes(data)), freq, sf, bw, self.clock.now])
        self.powers.append(getattr(self, "tx_power_dbm", None))
        self.clock.now += (region.time_on_air_us(len(data), sf, bw) + 999) // 1000

    def receive(self, freq, sf, bw, timeout_ms):
        if self.windows is not None:  # None: long runs keep no log of windows
            self.windows.append([freq, sf, bw, timeout_ms, self.clock.now])
        reply = self.replies.pop(0) if self.replies else None
        if callable(reply):
            reply = reply(self)
        if isinstance(reply, str):
            reply = uh(reply)
        self.clock.now += timeout_ms if reply is None else 100
        return reply

    def sleep(self):
        self.sleeps += 1


class RTC:
    """machine.RTC memory: 2048 bytes at most, kept across 'deep sleep' by the test."""

    def __init__(self, data=b""):
        self.data = bytes(data)

    def memory(self, data=None):
        if data is None:
            return self.data
        if len(data) > 2048:
            raise ValueError("RTC memory overflow")
        self.data = bytes(data)


def device(clock, radio, rtc, path="session.bin", **kw):
    """A Device on virtual time (the MAC module's `time` is swapped for `clock`)."""
    from lorawan import mac

    mac.time = clock
    return mac.Device(radio, rtc, path, clock=clock.wall_ms, **kw)
'''


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC from `cryptography` itself: the oracle for the firmware's and the gateway's."""
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


@dataclass
class Uplink:
    mhdr: int
    dev_addr: bytes  # on air
    fctrl: int
    fcnt16: int
    fopts: bytes
    fport: int | None
    payload: bytes  # decrypted
    mic_ok: bool


def _le(on_air: bytes) -> int:
    return int.from_bytes(on_air, "little")


class Network:
    """LoRaWAN 1.0.3 network side written from the spec, independent of the firmware."""

    h = staticmethod(h)
    cmac = staticmethod(cmac)

    # The primitives are the gateway's CPython network side (allmende.gateway.lorawan, on
    # `cryptography`, checked against the public vectors): independent of the firmware MAC,
    # and written once. Here they take DevAddr and nonces as the bytes on air.
    @staticmethod
    def crypt(key: bytes, direction: int, dev_addr: bytes, fcnt: int, data: bytes) -> bytes:
        return lorawan.crypt_frm_payload(key, _le(dev_addr), fcnt, direction == 0, data)

    @staticmethod
    def mic(key: bytes, direction: int, dev_addr: bytes, fcnt: int, msg: bytes) -> bytes:
        return lorawan.data_mic(key, msg, _le(dev_addr), fcnt, direction == 0)

    @staticmethod
    def airtime_ms(phy_len: int, sf: int, bw_khz: int = 125) -> int:
        """Time on air (CR 4/5, 8 symbol preamble, CRC), whole ms rounded up."""
        return math.ceil(region.time_on_air_s(phy_len, sf, bw_khz) * 1000 - 1e-9)

    @staticmethod
    def join_request(phy: bytes, app_key: bytes) -> tuple[bytes, bytes, int]:
        """(JoinEUI, DevEUI) in display order and the DevNonce; asserts MHDR and MIC."""
        request = lorawan.parse_join_request(phy)
        assert lorawan.check_join_request_mic(request, app_key)
        return request.join_eui, request.dev_eui, request.dev_nonce

    @staticmethod
    def join_accept(
        app_key: bytes,
        app_nonce: bytes,
        net_id: bytes,
        dev_addr: bytes,
        dl_settings: int = 0,
        rx_delay: int = 1,
        cflist: bytes = b"",
    ) -> bytes:
        """A join-accept as the network sends it (encrypted with AES *decrypt*)."""
        return lorawan.build_join_accept(
            app_key, app_nonce=_le(app_nonce), net_id=_le(net_id), dev_addr=_le(dev_addr),
            dl_settings=dl_settings, rx_delay=rx_delay, cf_list=cflist)

    @staticmethod
    def session_keys(app_key: bytes, app_nonce: bytes, net_id: bytes, dev_nonce: int):
        return lorawan.derive_session_keys(
            app_key, app_nonce=_le(app_nonce), net_id=_le(net_id), dev_nonce=dev_nonce)

    @staticmethod
    def cflist(freqs_hz: list[int]) -> bytes:
        out = b"".join((f // 100).to_bytes(3, "little") for f in freqs_hz)
        return out + bytes(15 - len(out)) + b"\x00"

    @classmethod
    def uplink(cls, phy: bytes, nwk: bytes, app: bytes, fcnt: int) -> Uplink:
        """Parses and decrypts an uplink, `fcnt` the full 32-bit counter it should carry."""
        fctrl = phy[5]
        n_opts = fctrl & 15
        end = len(phy) - 4
        fopts = phy[8 : 8 + n_opts]
        at = 8 + n_opts
        fport = phy[at] if at < end else None
        dev_addr = phy[1:5]
        mic_ok = cls.mic(nwk, 0, dev_addr, fcnt, phy[:end]) == phy[end:]
        payload = b""
        if fport is not None:
            key = nwk if fport == 0 else app
            payload = cls.crypt(key, 0, dev_addr, fcnt, phy[at + 1 : end])
        return Uplink(
            phy[0],
            dev_addr,
            fctrl,
            int.from_bytes(phy[6:8], "little"),
            fopts,
            fport,
            payload,
            mic_ok,
        )

    @classmethod
    def downlink(
        cls,
        nwk: bytes,
        app: bytes,
        dev_addr: bytes,
        fcnt: int,
        *,
        fport: int | None = None,
        payload: bytes = b"",
        fopts: bytes = b"",
        confirmed: bool = False,
        ack: bool = False,
        pending: bool = False,
    ) -> bytes:
        """A data downlink; `dev_addr` on air, FPort 0 payloads encrypted with NwkSKey."""
        fctrl = (0x20 if ack else 0) | (0x10 if pending else 0) | len(fopts)
        msg = bytes([0xA0 if confirmed else 0x60]) + dev_addr + bytes([fctrl])
        msg += struct.pack("<H", fcnt & 0xFFFF) + fopts
        if fport is not None:
            key = nwk if fport == 0 else app
            msg += bytes([fport]) + cls.crypt(key, 1, dev_addr, fcnt, payload)
        return msg + cls.mic(nwk, 1, dev_addr, fcnt, msg)


@pytest.fixture(scope="session")
def lw_net() -> type[Network]:
    return Network


@pytest.fixture(scope="session")
def _lw_fakes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lwfakes")
    (folder / "lwfakes.py").write_text(LWFAKES)
    return folder


@pytest.fixture(scope="session")
def lw_exec(_lw_fakes_dir: Path):
    """Runs MicroPython `code` in `cwd` (firmware, or the folders in `path`, and lwfakes
    importable; heap 100 KB); returns the objects printed with lwfakes.out(), in order."""

    def run(code: str, cwd: Path, *, heap: str = "100k", path: list | None = None) -> list[dict]:
        firmware = path or [unix_port.FIRMWARE_APP]
        proc = unix_port.run(code, path=[*firmware, _lw_fakes_dir], heap=heap, cwd=cwd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [json.loads(line[1:]) for line in proc.stdout.splitlines() if line.startswith("@")]

    return run


@pytest.fixture
def lw_run(lw_exec, tmp_path: Path):
    """lw_exec with cwd = this test's tmp_path (the board's flash directory)."""
    return lambda code, **kw: lw_exec(code, tmp_path, **kw)
