"""LoRaWAN session state and its compact binary layout (version byte, CRC-16) for RTC and flash.

Layout v1, little-endian, SIZE = 235 bytes:

  off  size  field
    0     1  version (= VERSION)
    1     1  flags: 0x01 joined, 0x02 ACK owed to a confirmed downlink, 0x04 LinkCheckReq asked
    2     2  ident: CRC-16 of the credentials the state belongs to
    4     4  DevAddr (on-air order)
    8    16  NwkSKey
   24    16  AppSKey
   40     4  FCntUp (next counter to send)
   44     4  FCntUp held by the flash mirror (decides when to write the mirror again)
   48     4  FCntDown (lowest counter a downlink may carry)
   52     4  next DevNonce to use (65536 = all used)
   56     2  DevNonce of the current session
   58     7  data rate, TX power index, NbTrans, RX1DROffset, RX2 data rate, RX1 delay (s),
             MaxDCycle (aggregated duty cycle 1/2^n, 0 = off)
   65     4  RX2 frequency (Hz)
   69     2  ADR_ACK_CNT
   71     2  channel mask (bit i = channel i enabled)
   73    80  16 channels x (frequency Hz u32, 0 = undefined; DR range u8: max << 4 | min)
  153    48  6 x u64 wall-clock ms until which each duty-cycle sub-band (0..4) and the
             aggregated duty cycle (5) are blocked
  201    16  one-shot MAC answers for the next uplink: length u8, 15 bytes
  217    16  sticky MAC answers (repeated until a downlink arrives): length u8, 15 bytes
  233     2  CRC-16/CCITT-FALSE of bytes 0..232
"""

import struct

from lorawan import region
from micropython import const

VERSION = const(1)
SIZE = const(235)
MAX_FOPTS = const(15)
FCNT_LIMIT = const(0xFFFFFFFF)  # FCntUp reaching this ends the session (it must fit 32 bits)
DC_SLOTS = const(6)  # region.SUB_BANDS sub-bands + the aggregated duty cycle of DutyCycleReq
DC_AGGREGATED = const(5)

F_JOINED = const(0x01)
F_ACK_PENDING = const(0x02)
F_LINK_CHECK = const(0x04)

_HEAD = "<BBH4s16s16sIIIIHBBBBBBBIHH"
_CHANNEL = "<IB"
_CHANNELS_AT = const(73)
_DC = "<6Q"
_DC_AT = const(153)
_ANSWERS = "<B15sB15s"
_ANSWERS_AT = const(201)
_CRC_AT = const(233)


def crc16(data, n):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of data[0:n]; small ints only."""
    crc = 0xFFFF
    for i in range(n):
        crc ^= data[i] << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


class Session:
    """Everything the MAC must remember between wakes; `pack`/`unpack` are the binary form."""

    def __init__(self, ident=0):
        self.ident = ident
        self.flags = 0
        self.dev_addr = bytes(4)
        self.nwk_s_key = bytes(16)
        self.app_s_key = bytes(16)
        self.fcnt_up = 0
        self.fcnt_flash = 0
        self.fcnt_down = 0
        self.nonce_next = 0
        self.dev_nonce = 0
        self.dc_until = [0] * DC_SLOTS
        self.ch_freq = [0] * region.MAX_CHANNELS
        self.ch_dr = bytearray(region.MAX_CHANNELS)
        self.ans = bytearray()
        self.sticky = bytearray()
        self.reset_radio()

    def reset_radio(self):
        """Default EU868 channel plan, data rate, RX and ADR settings (at a join)."""
        self.dr = 0
        self.tx_power = 0
        self.nb_trans = 1
        self.rx1_offset = 0
        self.rx2_dr = region.RX2_DR
        self.rx_delay = region.RECEIVE_DELAY1_S
        self.max_dcycle = 0
        self.rx2_freq = region.RX2_FREQ
        self.adr_ack_cnt = 0
        for i in range(region.MAX_CHANNELS):
            if i < region.DEFAULT_CHANNELS:
                self.ch_freq[i] = region.default_freq(i)
                self.ch_dr[i] = region.MAX_DR << 4
            else:
                self.ch_freq[i] = 0
                self.ch_dr[i] = 0
        self.ch_mask = (1 << region.DEFAULT_CHANNELS) - 1

    @property
    def joined(self):
        return bool(self.flags & F_JOINED)

    def add_answer(self, answer, sticky=False):
        """Queues a MAC answer for the next uplink's FOpts; dropped when it does not fit."""
        buf = self.sticky if sticky else self.ans
        if len(self.ans) + len(self.sticky) + len(answer) <= MAX_FOPTS:
            buf.extend(answer)

    def pack(self, buf):
        """Writes the binary form (SIZE bytes, CRC included) into `buf`."""
        struct.pack_into(
            _HEAD, buf, 0,
            VERSION, self.flags, self.ident, self.dev_addr, self.nwk_s_key, self.app_s_key,
            self.fcnt_up, self.fcnt_flash, self.fcnt_down, self.nonce_next, self.dev_nonce,
            self.dr, self.tx_power, self.nb_trans, self.rx1_offset, self.rx2_dr,
            self.rx_delay, self.max_dcycle, self.rx2_freq, self.adr_ack_cnt, self.ch_mask,
        )  # fmt: skip
        for i in range(region.MAX_CHANNELS):
            struct.pack_into(_CHANNEL, buf, _CHANNELS_AT + 5 * i, self.ch_freq[i], self.ch_dr[i])
        d = self.dc_until
        struct.pack_into(_DC, buf, _DC_AT, d[0], d[1], d[2], d[3], d[4], d[5])
        struct.pack_into(
            _ANSWERS, buf, _ANSWERS_AT, len(self.ans), self.ans, len(self.sticky), self.sticky
        )
        struct.pack_into("<H", buf, _CRC_AT, crc16(buf, _CRC_AT))

    def unpack(self, buf):
        """Loads the binary form; False (nothing changed) when short, foreign or corrupt."""
        if len(buf) < SIZE or buf[0] != VERSION:
            return False
        if struct.unpack_from("<H", buf, _CRC_AT)[0] != crc16(buf, _CRC_AT):
            return False
        (
            _, self.flags, self.ident, self.dev_addr, self.nwk_s_key, self.app_s_key,
            self.fcnt_up, self.fcnt_flash, self.fcnt_down, self.nonce_next, self.dev_nonce,
            self.dr, self.tx_power, self.nb_trans, self.rx1_offset, self.rx2_dr,
            self.rx_delay, self.max_dcycle, self.rx2_freq, self.adr_ack_cnt, self.ch_mask,
        ) = struct.unpack_from(_HEAD, buf, 0)  # fmt: skip
        for i in range(region.MAX_CHANNELS):
            self.ch_freq[i], self.ch_dr[i] = struct.unpack_from(_CHANNEL, buf, _CHANNELS_AT + 5 * i)
        self.dc_until = list(struct.unpack_from(_DC, buf, _DC_AT))
        n_ans, ans, n_sticky, sticky = struct.unpack_from(_ANSWERS, buf, _ANSWERS_AT)
        self.ans = bytearray(ans[: min(n_ans, MAX_FOPTS)])
        self.sticky = bytearray(sticky[: min(n_sticky, MAX_FOPTS - len(self.ans))])
        return True
