"""LoRaWAN 1.0.3 frame formats: join-request, join-accept, data uplink and data downlink.

Builders write into a caller's preallocated buffer and return the length; parsers return
None for anything that is not a well-formed frame with a valid MIC for this device.
"""

from lorawan import crypto
from micropython import const

JOIN_REQUEST_LEN = const(23)
MHDR_UNCONFIRMED_UP = const(0x40)
MHDR_CONFIRMED_UP = const(0x80)
FCTRL_ADR = const(0x80)
FCTRL_ADR_ACK_REQ = const(0x40)
FCTRL_ACK = const(0x20)
FCTRL_FPENDING = const(0x10)
FHDR_END = const(8)  # MHDR(1) + DevAddr(4) + FCtrl(1) + FCnt(2): FOpts start here

_MHDR_JOIN_REQUEST = const(0x00)
_MHDR_JOIN_ACCEPT = const(0x20)
_MTYPE_UNCONFIRMED_DOWN = const(3)
_MTYPE_CONFIRMED_DOWN = const(5)
_MIC_LEN = const(4)
_MIN_DATA_LEN = const(12)  # MHDR + FHDR without FOpts + MIC
_FCNT_MAX = const(0xFFFFFFFF)


def join_request(buf, app_key, join_eui, dev_eui, dev_nonce):
    """Writes a join-request into `buf`; EUIs in on-air (little-endian) order. Returns 23."""
    buf[0] = _MHDR_JOIN_REQUEST
    buf[1:9] = join_eui
    buf[9:17] = dev_eui
    buf[17] = dev_nonce & 0xFF
    buf[18] = dev_nonce >> 8
    mv = memoryview(buf)
    mv[19:23] = crypto.join_mic(app_key, mv[:19])
    return JOIN_REQUEST_LEN


def join_accept(app_key, data):
    """Decrypts and checks a join-accept; the plain frame without MIC, or None.

    Fields of the result: AppNonce [1:4], NetID [4:7], DevAddr [7:11] (on air),
    DLSettings [11], RxDelay [12], CFList [13:29] when present (len 29).
    """
    n = len(data)
    if (n != 17 and n != 33) or data[0] != _MHDR_JOIN_ACCEPT:
        return None
    plain = bytearray(n)
    plain[0] = data[0]
    crypto.decrypt_join_accept(app_key, memoryview(data)[1:], memoryview(plain)[1:])
    end = n - _MIC_LEN
    if crypto.join_mic(app_key, memoryview(plain)[:end]) != plain[end:]:
        return None
    return plain[:end]


def data_uplink(buf, s, mhdr, fctrl, fopts_len, fport, payload):
    """Completes an uplink in `buf` for session `s` at counter s.fcnt_up: FOpts must already
    sit at buf[FHDR_END:FHDR_END + fopts_len]. Returns the frame length."""
    fcnt = s.fcnt_up
    buf[0] = mhdr
    buf[1:5] = s.dev_addr
    buf[5] = fctrl | fopts_len
    buf[6] = fcnt & 0xFF
    buf[7] = (fcnt >> 8) & 0xFF
    at = FHDR_END + fopts_len
    buf[at] = fport
    at += 1
    n = len(payload)
    mv = memoryview(buf)
    mv[at : at + n] = payload
    crypto.crypt_payload(s.app_s_key, crypto.UP, s.dev_addr, fcnt, mv[at : at + n])
    at += n
    mv[at : at + _MIC_LEN] = crypto.data_mic(s.nwk_s_key, crypto.UP, s.dev_addr, fcnt, mv[:at])
    return at + _MIC_LEN


class Downlink:
    """A verified data downlink: 32-bit `fcnt`, FCtrl bits, FOpts, FPort (-1 = none) and the
    decrypted payload (b"" when absent)."""

    def __init__(self, confirmed, fctrl, fcnt, fopts, fport, payload):
        self.confirmed = confirmed
        self.fctrl = fctrl
        self.fcnt = fcnt
        self.fopts = fopts
        self.fport = fport
        self.payload = payload


def data_downlink(s, data):
    """Parses, checks (DevAddr, FCnt, MIC) and decrypts a downlink for session `s`, or None."""
    n = len(data)
    if n < _MIN_DATA_LEN:
        return None
    mhdr = data[0]
    mtype = mhdr >> 5
    if (mtype != _MTYPE_UNCONFIRMED_DOWN and mtype != _MTYPE_CONFIRMED_DOWN) or mhdr & 3:
        return None
    mv = memoryview(data)
    if bytes(mv[1:5]) != s.dev_addr:
        return None
    fctrl = data[5]
    fopts_len = fctrl & 15
    end = n - _MIC_LEN
    at = FHDR_END + fopts_len
    if at > end:
        return None
    fport = data[at] if at < end else -1
    if fport == 0 and fopts_len:
        return None  # MAC commands in both FOpts and FRMPayload are forbidden
    # 16 bits on air; the counter is the first value >= FCntDown with these low bits.
    low = data[6] | data[7] << 8
    fcnt = s.fcnt_down - (s.fcnt_down & 0xFFFF) + low
    if fcnt < s.fcnt_down:
        fcnt += 0x10000
    if fcnt >= _FCNT_MAX:  # FCntDown = fcnt + 1 must still fit 32 bits
        return None
    if crypto.data_mic(s.nwk_s_key, crypto.DOWN, s.dev_addr, fcnt, mv[:end]) != bytes(mv[end:]):
        return None
    payload = b""
    if fport >= 0:
        payload = bytearray(mv[at + 1 : end])
        key = s.nwk_s_key if fport == 0 else s.app_s_key
        crypto.crypt_payload(key, crypto.DOWN, s.dev_addr, fcnt, payload)
    return Downlink(mtype == _MTYPE_CONFIRMED_DOWN, fctrl, fcnt, mv[FHDR_END:at], fport, payload)
