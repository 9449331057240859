"""LoRaWAN 1.0.3 class A end device (EU868, OTAA or ABP): the MAC behind one radio.

See the package docstring (lorawan/__init__.py) for the API and its contracts.
"""

import time
from binascii import unhexlify

from lorawan import commands, crypto, dutycycle, frame, region, session, store

# The errors are re-exported: `from lorawan.mac import Device, DutyCycleDeferred` is enough.
from lorawan.errors import (  # noqa: F401
    DevNonceExhausted,
    DutyCycleDeferred,
    LoRaWANError,
    NoChannel,
    NotJoined,
    PayloadTooLarge,
)
from micropython import const

_RX_EARLY_MS = const(50)  # the receiver opens this much before the window's nominal start
_RX_MARGIN_MS = const(300)  # on top of the preamble: clock drift, virtual radio latency
_PREAMBLE_SYMBOLS = const(8)
_BUF_LEN = const(256)
_MIRROR_EVERY = const(16)
_JOIN_WAIT_MS = const(30000)  # join() sleeps out duty-cycle waits up to this long
_FPORT_MAX = const(223)
_DEV_NONCE_MAX = const(0xFFFF)
_CFLIST_LEN = const(29)  # decrypted join-accept without MIC, with a CFList
_CFLIST_FREQS = const(5)
_IDENT_OTAA = const(1)
_IDENT_ABP = const(2)


def _wall_ms():
    return time.time_ns() // 1000000


def _key(value, n, name):
    # Accepts bytes or hex text; the field name tells the caller what was wrong.
    try:
        if isinstance(value, str):
            value = unhexlify(value)
        if len(value) == n:
            return bytes(value)
    except (TypeError, ValueError):
        pass
    raise ValueError("%s: %d bytes expected" % (name, n))


def _reverse(value):
    out = bytearray(len(value))
    for i in range(len(value)):
        out[i] = value[len(value) - 1 - i]
    return bytes(out)


class Result:
    """The outcome of one uplink.

    fport, payload: application downlink (FPort 1..223, decrypted bytes) or None, None.
    acked: a confirmed uplink was acknowledged. pending: the network has more downlinks
    (FPending). link_check: (margin dB, gateway count) of a LinkCheckAns, or None.
    """

    def __init__(self):
        self.fport = None
        self.payload = None
        self.acked = False
        self.pending = False
        self.link_check = None


class Device:
    """A class A end device; construct it at every wake, it restores its own session."""

    def __init__(
        self, radio, rtc, flash_path, *, clock=None,
        dev_eui=None, join_eui=None, app_key=None,
        dev_addr=None, nwk_s_key=None, app_s_key=None,
        data_rate=region.MAX_DR, adr=True, battery=None, mirror_every=_MIRROR_EVERY,
        rtc_offset=0,
    ):  # fmt: skip
        self._radio = radio
        self._clock = clock or _wall_ms
        self._battery = battery
        self._adr = adr
        if not 0 <= data_rate <= region.MAX_DR:
            raise ValueError("data_rate: 0..%d expected" % region.MAX_DR)
        self._data_rate = data_rate
        self._tx = bytearray(_BUF_LEN)
        self._join_nonce = 0
        self._join_dr = 0
        self.rx_dropped = 0
        # The drivers expose tx_power_dbm (their board's level): that is TXPower 0, and the
        # network's LinkADRReq lowers it in 2 dB steps for each frame the MAC sends.
        self._base_dbm = getattr(radio, "tx_power_dbm", None)
        ident = bytearray()
        if app_key is not None:
            self._otaa = True
            self._app_key = _key(app_key, 16, "app_key")
            self._dev_eui = _reverse(_key(dev_eui, 8, "dev_eui"))
            self._join_eui = _reverse(_key(join_eui or bytes(8), 8, "join_eui"))
            ident.append(_IDENT_OTAA)
            for part in (self._dev_eui, self._join_eui, self._app_key):
                ident.extend(part)
        elif nwk_s_key is not None:
            self._otaa = False
            abp = (
                _reverse(_key(dev_addr, 4, "dev_addr")),
                _key(nwk_s_key, 16, "nwk_s_key"),
                _key(app_s_key, 16, "app_s_key"),
            )
            ident.append(_IDENT_ABP)
            for part in abp:
                ident.extend(part)
        else:
            raise ValueError("app_key (OTAA) or dev_addr/nwk_s_key/app_s_key (ABP) needed")
        self._store = store.Store(rtc, flash_path, mirror_every, rtc_offset)
        s, self.restored_from = self._store.restore(session.crc16(ident, len(ident)))
        self._s = s
        if not self._otaa and self.restored_from == store.SOURCE_NEW:
            s.dev_addr, s.nwk_s_key, s.app_s_key = abp
            s.flags = session.F_JOINED
            s.dr = data_rate
            self._store.save(s, flash=True)

    @property
    def joined(self):
        """True when a session exists (after a join, or always for ABP)."""
        return self._s.joined

    @property
    def dev_addr(self):
        """DevAddr in display order (most significant byte first)."""
        return _reverse(self._s.dev_addr)

    @property
    def dev_nonce(self):
        """DevNonce of the current OTAA session."""
        return self._s.dev_nonce

    @property
    def fcnt_up(self):
        """Frame counter the next uplink will carry (32 bits)."""
        return self._s.fcnt_up

    @property
    def data_rate(self):
        return self._s.dr

    @property
    def tx_power_dbm(self):
        """EIRP the network asked for (LinkADRReq: 16 dBm minus 2 dB per TXPower step)."""
        return region.tx_power_dbm(self._s.tx_power)

    def time_until_send_ms(self):
        """Milliseconds until the duty cycle allows the next uplink (or join), 0 = now."""
        s = self._s
        return dutycycle.wait_ms(s, self._clock(), s.dr if s.joined else 0, not s.joined)

    def link_check(self):
        """Asks the network for a LinkCheckAns with the next uplink (see Result.link_check)."""
        self._s.flags |= session.F_LINK_CHECK
        self._store.save(self._s)

    def save(self):
        """Writes the flash mirror now (e.g. before a planned power-off)."""
        self._store.save(self._s, flash=True)

    def join(self, max_tries=3, *, max_wait_ms=_JOIN_WAIT_MS):
        """OTAA join: up to `max_tries` join-requests; True once joined, False if none was
        accepted. The n-th request (from 0) goes at data rate max(0, data_rate - n).

        Each DevNonce is written to flash before its request goes on air. Sleeps out
        duty-cycle waits of at most `max_wait_ms`, else raises DutyCycleDeferred.
        Raises DevNonceExhausted when no DevNonce is left.
        """
        if not self._otaa:
            raise LoRaWANError("an ABP device does not join")
        s = self._s
        dr = self._data_rate
        for attempt in range(max_tries):
            join_dr = dr - attempt if dr > attempt else 0
            ch = self._channel(join_dr, True, max_wait_ms)
            nonce = s.nonce_next
            if nonce > _DEV_NONCE_MAX:
                raise DevNonceExhausted()
            n = frame.join_request(self._tx, self._app_key, self._join_eui, self._dev_eui, nonce)
            s.nonce_next = nonce + 1
            freq = s.ch_freq[ch]
            self._note_tx(freq, join_dr, n)
            self._store.save(s, flash=True)  # a DevNonce is never sent before it is in flash
            self._join_nonce = nonce
            self._join_dr = join_dr
            self._transmit(self._tx[:n], freq, join_dr)
            tx_end = time.ticks_ms()
            if self._rx_windows(
                tx_end, region.JOIN_ACCEPT_DELAY1_S, freq, join_dr,
                region.RX2_FREQ, region.RX2_DR, self._on_join_accept, None,
            ):  # fmt: skip
                return True
        return False

    def send(self, fport, payload, confirmed=False, *, max_wait_ms=0):
        """Sends `payload` on `fport` (1..223), then listens in RX1 and RX2; returns a Result.

        The frame counter and the duty-cycle block are stored before the frame goes on air.
        Raises NotJoined, PayloadTooLarge, DutyCycleDeferred (when the wait exceeds
        `max_wait_ms`; nothing was sent), NoChannel.
        """
        s = self._s
        if not s.joined:
            raise NotJoined()
        if not 0 < fport <= _FPORT_MAX:
            raise ValueError("fport: 1..223 expected")
        if s.fcnt_up >= session.FCNT_LIMIT:
            s.flags &= ~session.F_JOINED  # the session is used up: a rejoin is due
            self._store.save(s, flash=True)
            raise NotJoined()
        dr = s.dr
        room = region.max_mac_payload(dr) - frame.FHDR_END - len(payload)
        if room < 0:
            raise PayloadTooLarge(len(payload) + room)
        ch = self._channel(dr, False, max_wait_ms)
        fctrl = 0
        if self._adr:
            fctrl = frame.FCTRL_ADR
            if s.adr_ack_cnt >= region.ADR_ACK_LIMIT:
                fctrl |= frame.FCTRL_ADR_ACK_REQ
        if s.flags & session.F_ACK_PENDING:
            fctrl |= frame.FCTRL_ACK
        buf = self._tx
        fopts_len = commands.write_fopts(s, buf, frame.FHDR_END, min(room, session.MAX_FOPTS))
        mhdr = frame.MHDR_CONFIRMED_UP if confirmed else frame.MHDR_UNCONFIRMED_UP
        n = frame.data_uplink(buf, s, mhdr, fctrl, fopts_len, fport, payload)
        s.fcnt_up += 1
        s.ans = bytearray()  # one-shot answers go out once; sticky ones until a downlink
        s.flags &= ~(session.F_ACK_PENDING | session.F_LINK_CHECK)
        self._adr_backoff()
        freq = s.ch_freq[ch]
        self._note_tx(freq, dr, n)
        self._store.save(s, flash=self._store.mirror_due(s))
        self._transmit(buf[:n], freq, dr)
        tx_end = time.ticks_ms()
        result = Result()
        self._rx_windows(
            tx_end, s.rx_delay, freq, region.rx1_dr(dr, s.rx1_offset),
            s.rx2_freq, s.rx2_dr, self._on_downlink, result,
        )  # fmt: skip
        result.acked = confirmed and result.acked
        return result

    def _channel(self, dr, join, max_wait_ms):
        s = self._s
        try:
            wait = dutycycle.wait_ms(s, self._clock(), dr, join)
        except NoChannel:
            if join:
                raise
            # The network left no enabled channel for this data rate: the default channels
            # (which it cannot change) carry every data rate, so fall back to them.
            s.ch_mask |= (1 << region.DEFAULT_CHANNELS) - 1
            wait = dutycycle.wait_ms(s, self._clock(), dr, join)
        if 0 < wait <= max_wait_ms:
            time.sleep_ms(wait)
        return dutycycle.pick(s, self._clock(), dr, join)

    def _transmit(self, data, freq, dr):
        radio = self._radio
        if self._base_dbm is None:
            radio.transmit(data, freq, region.spreading_factor(dr), region.BW_KHZ)
            return
        radio.tx_power_dbm = self._base_dbm - 2 * self._s.tx_power
        try:
            radio.transmit(data, freq, region.spreading_factor(dr), region.BW_KHZ)
        finally:
            radio.tx_power_dbm = self._base_dbm

    def _note_tx(self, freq, dr, length):
        airtime_ms = (region.time_on_air_us(length, region.spreading_factor(dr)) + 999) // 1000
        dutycycle.note_tx(self._s, self._clock(), freq, airtime_ms)

    def _adr_backoff(self):
        # Without downlinks for ADR_ACK_LIMIT uplinks the device asks (ADRACKReq); after
        # every further ADR_ACK_DELAY it regains range: full power, lower DR, default channels.
        s = self._s
        if not self._adr:
            return
        if s.adr_ack_cnt < 0xFFFF:
            s.adr_ack_cnt += 1
        over = s.adr_ack_cnt - region.ADR_ACK_LIMIT
        if over >= region.ADR_ACK_DELAY and over % region.ADR_ACK_DELAY == 0:
            if s.tx_power:
                s.tx_power = 0
            elif s.dr:
                s.dr -= 1
            else:
                s.ch_mask |= (1 << region.DEFAULT_CHANNELS) - 1

    def _rx_windows(self, tx_end, delay_s, freq1, dr1, freq2, dr2, handler, result):
        # RX1 opens delay_s after the end of TX, RX2 one second later; RX2 only when RX1
        # brought nothing valid for this device. True when a frame was accepted.
        radio = self._radio
        accepted = False
        for window in range(2):
            freq = freq2 if window else freq1
            dr = dr2 if window else dr1
            opens = time.ticks_add(tx_end, (delay_s + window) * 1000 - _RX_EARLY_MS)
            wait = time.ticks_diff(opens, time.ticks_ms())
            if wait > 0:
                time.sleep_ms(wait)
            sf = region.spreading_factor(dr)
            timeout = _RX_EARLY_MS + _PREAMBLE_SYMBOLS * region.symbol_ms(sf) + _RX_MARGIN_MS
            data = radio.receive(freq, sf, region.BW_KHZ, timeout)
            if data and handler(data, result):
                accepted = True
                break
        radio.sleep()
        return accepted

    def _on_downlink(self, data, result):
        s = self._s
        down = frame.data_downlink(s, data)
        if down is None:
            self.rx_dropped += 1
            return False
        s.fcnt_down = down.fcnt + 1
        s.adr_ack_cnt = 0
        s.sticky = bytearray()  # any downlink ends the repetition of sticky answers
        if down.confirmed:
            s.flags |= session.F_ACK_PENDING
        result.acked = bool(down.fctrl & frame.FCTRL_ACK)
        result.pending = bool(down.fctrl & frame.FCTRL_FPENDING)
        battery = self._battery() if self._battery else commands.BATTERY_UNKNOWN
        snr = getattr(self._radio, "last_snr", None)
        cmds = down.payload if down.fport == 0 else down.fopts
        result.link_check = commands.apply(s, cmds, battery, snr)
        if down.fport > 0:
            result.fport = down.fport
            result.payload = bytes(down.payload)
        # Every accepted downlink reaches flash (downlinks are rare): restored from an older
        # mirror after a power cut, FCntDown would accept a recorded downlink once more.
        self._store.save(s, flash=True)
        return True

    def _on_join_accept(self, data, result):
        plain = frame.join_accept(self._app_key, data)
        if plain is None:
            self.rx_dropped += 1
            return False
        s = self._s
        nonce = self._join_nonce
        s.nwk_s_key, s.app_s_key = crypto.session_keys(
            self._app_key, plain[1:4], plain[4:7], bytes((nonce & 0xFF, nonce >> 8))
        )
        s.dev_addr = bytes(plain[7:11])
        s.dev_nonce = nonce
        s.fcnt_up = 0
        s.fcnt_down = 0
        s.reset_radio()
        s.dr = self._join_dr
        dl_settings = plain[11]
        s.rx1_offset = min(dl_settings >> 4 & 7, region.MAX_DR)
        if dl_settings & 15 <= region.MAX_DR:  # else keep the default RX2 data rate
            s.rx2_dr = dl_settings & 15
        s.rx_delay = plain[12] & 15 or 1
        if len(plain) == _CFLIST_LEN and plain[_CFLIST_LEN - 1] == 0:  # CFListType 0
            for i in range(_CFLIST_FREQS):
                at = 13 + 3 * i
                freq = (plain[at] | plain[at + 1] << 8 | plain[at + 2] << 16) * 100
                if freq and region.sub_band(freq) >= 0:
                    ch = region.DEFAULT_CHANNELS + i
                    s.ch_freq[ch] = freq
                    s.ch_dr[ch] = region.MAX_DR << 4
                    s.ch_mask |= 1 << ch
        s.ans = bytearray()
        s.sticky = bytearray()
        s.flags = session.F_JOINED
        self._store.save(s, flash=True)
        return True
