"""Simulated Semtech SX1276/77/78 in LoRa mode: its register map behind an SPI chip select.

A transaction is an address byte (bit 7 set = write) and data bytes, auto-incrementing
except at RegFifo, which reads/writes the 256-byte FIFO at RegFifoAddrPtr. Frames go
through the shared `sim_radio_link.Modem`; the chip advances whenever the host touches it.
Modelled so driver bugs show: LongRangeMode changes only in Sleep, the FIFO is lost in
Sleep, IRQ flags clear by writing ones and RegIrqFlagsMask suppresses them, TxDone only
after the time on air, RX hears only its frequency/SF/BW, IQ polarity and sync word.
"""

from micropython import const

import sim_radio_link

_REG_FIFO = const(0x00)
_REG_OP_MODE = const(0x01)
_REG_FRF_MSB = const(0x06)
_REG_FIFO_ADDR_PTR = const(0x0D)
_REG_FIFO_TX_BASE = const(0x0E)
_REG_FIFO_RX_BASE = const(0x0F)
_REG_FIFO_RX_CURRENT = const(0x10)
_REG_IRQ_FLAGS_MASK = const(0x11)
_REG_IRQ_FLAGS = const(0x12)
_REG_RX_NB_BYTES = const(0x13)
_REG_MODEM_STAT = const(0x18)
_REG_PKT_SNR = const(0x19)
_REG_PKT_RSSI = const(0x1A)
_REG_HOP_CHANNEL = const(0x1C)
_REG_MODEM_CONFIG1 = const(0x1D)
_REG_MODEM_CONFIG2 = const(0x1E)
_REG_SYMB_TIMEOUT_LSB = const(0x1F)
_REG_PAYLOAD_LENGTH = const(0x22)
_REG_FIFO_RX_BYTE_ADDR = const(0x25)
_REG_MODEM_CONFIG3 = const(0x26)
_REG_INVERT_IQ = const(0x33)
_REG_SYNC_WORD = const(0x39)
_REG_DIO_MAPPING1 = const(0x40)
_REG_VERSION = const(0x42)

_LONG_RANGE = const(0x80)
_MODE_MASK = const(0x07)
_MODE_SLEEP = const(0)
_MODE_STDBY = const(1)
_MODE_TX = const(3)
_MODE_RX_CONTINUOUS = const(5)
_MODE_RX_SINGLE = const(6)

_IRQ_RX_TIMEOUT = const(0x80)
_IRQ_RX_DONE = const(0x40)
_IRQ_CRC_ERROR = const(0x20)
_IRQ_VALID_HEADER = const(0x10)
_IRQ_TX_DONE = const(0x08)

# RegModemConfig1 bandwidth code (bits 7-4) -> kHz * 10.
_BW_TENTHS = (78, 104, 156, 208, 312, 417, 625, 1250, 2500, 5000)

# Power-on values (datasheet, register table, LoRa column) as address/value byte pairs.
_DEFAULTS = (
    b"\x01\x09\x06\x6c\x07\x80\x09\x4f\x0a\x09\x0b\x2b\x0c\x20\x0e\x80\x1d\x72\x1e\x70"
    b"\x1f\x64\x21\x08\x22\x01\x23\xff\x26\x04\x31\xc3\x33\x27\x37\x0a\x39\x12\x3b\x1d"
    b"\x4b\x09\x4d\x84"
)
# Read-only: packet status, RX counters, modem status, version.
_READ_ONLY = b"\x10\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x25\x42"


class SX127xSim:
    """One simulated SX127x; `link` (a sim_radio_link.RadioLink) None: nobody hears it.

    `version` is what RegVersion reads: 0x12 for an SX1276/77/78 (0x22 would be an SX1272).
    """

    def __init__(self, link=None, version=0x12):
        self.modem = sim_radio_link.Modem(link)
        self.version = version
        self.regs = bytearray(0x80)
        self.fifo = bytearray(256)
        self.reset()

    # -- pins ---------------------------------------------------------------------------

    def reset(self):
        """NRESET: back to the power-on state."""
        regs = self.regs
        regs[:] = bytes(0x80)
        for i in range(0, len(_DEFAULTS), 2):
            regs[_DEFAULTS[i]] = _DEFAULTS[i + 1]
        regs[_REG_VERSION] = self.version
        self.fifo[:] = bytes(256)
        self.modem.stop()
        self._addr = None
        self._write = False

    def busy(self):
        return False  # the SX127x has no BUSY line

    def irq(self):
        """DIO0 per RegDioMapping1 bits 7-6: 00 RxDone, 01 TxDone, 10 CadDone."""
        self._advance()
        mapping = self.regs[_REG_DIO_MAPPING1] >> 6
        flag = (_IRQ_RX_DONE, _IRQ_TX_DONE, 0x04, 0)[mapping]
        return bool(self.regs[_REG_IRQ_FLAGS] & flag)

    # -- SPI ------------------------------------------------------------------------------

    def select(self):
        self._advance()
        self._addr = None

    def deselect(self):
        self._addr = None

    def transfer(self, tx):
        self._advance()
        out = bytearray(len(tx))
        for i in range(len(tx)):
            addr = self._addr
            if addr is None:
                self._addr = tx[i] & 0x7F
                self._write = bool(tx[i] & 0x80)
                continue
            if self._write:
                self._write_reg(addr, tx[i])
            else:
                out[i] = self._read_reg(addr)
            if addr != _REG_FIFO:
                self._addr = (addr + 1) & 0x7F
        return bytes(out)

    # -- registers ------------------------------------------------------------------------

    def _mode(self):
        return self.regs[_REG_OP_MODE] & _MODE_MASK

    def _read_reg(self, addr):
        regs = self.regs
        if addr == _REG_FIFO:
            if self._mode() == _MODE_SLEEP:
                return 0  # no FIFO access in Sleep
            ptr = regs[_REG_FIFO_ADDR_PTR]
            regs[_REG_FIFO_ADDR_PTR] = (ptr + 1) & 0xFF
            return self.fifo[ptr]
        if addr == _REG_MODEM_STAT:
            # Bit 3 header valid, 2 RX on-going, 1 synchronized, 0 signal detected; 4 clear.
            if not self.modem.receiving():
                return 0x10
            return 0x0F if self.modem.header_seen() else 0x07
        return regs[addr]

    def _write_reg(self, addr, value):
        regs = self.regs
        if addr == _REG_FIFO:
            if self._mode() != _MODE_SLEEP:
                ptr = regs[_REG_FIFO_ADDR_PTR]
                self.fifo[ptr] = value
                regs[_REG_FIFO_ADDR_PTR] = (ptr + 1) & 0xFF
        elif addr == _REG_OP_MODE:
            self._set_op_mode(value)
        elif addr == _REG_IRQ_FLAGS:
            regs[addr] &= ~value
        elif addr not in _READ_ONLY:
            regs[addr] = value

    def _set_op_mode(self, value):
        regs = self.regs
        old = regs[_REG_OP_MODE]
        if old & _MODE_MASK != _MODE_SLEEP:
            # LongRangeMode "can be modified only in Sleep mode": elsewhere the write keeps it.
            value = (value & ~_LONG_RANGE) | (old & _LONG_RANGE)
        regs[_REG_OP_MODE] = value
        mode = value & _MODE_MASK
        self.modem.stop()
        if mode == _MODE_SLEEP:
            self.fifo[:] = bytes(256)
        if not value & _LONG_RANGE:
            return  # the FSK/OOK modem is not simulated: nothing is sent or heard
        if mode == _MODE_TX:
            self._start_tx()
        elif mode == _MODE_RX_CONTINUOUS or mode == _MODE_RX_SINGLE:
            regs[_REG_FIFO_RX_BYTE_ADDR] = regs[_REG_FIFO_RX_BASE]
            timeout = None
            if mode == _MODE_RX_SINGLE:
                symbols = ((regs[_REG_MODEM_CONFIG2] & 0x03) << 8) | regs[_REG_SYMB_TIMEOUT_LSB]
                timeout = int(symbols * sim_radio_link.symbol_time_us(self._sf(), self._bw()))
            self.modem.start_rx(
                self._freq(), self._sf(), self._bw(), bool(regs[_REG_INVERT_IQ] & 0x40),
                regs[_REG_SYNC_WORD], (regs[0x20] << 8) | regs[0x21], timeout)

    def _freq(self):
        r = self.regs
        frf = (r[_REG_FRF_MSB] << 16) | (r[0x07] << 8) | r[0x08]
        return sim_radio_link.snap_hz((frf * 15625 + 128) >> 8)  # Fstep = 32 MHz / 2^19

    def _sf(self):
        return self.regs[_REG_MODEM_CONFIG2] >> 4

    def _bw(self):
        code = self.regs[_REG_MODEM_CONFIG1] >> 4
        return sim_radio_link.bw_value(_BW_TENTHS[min(code, 9)] / 10)

    def _start_tx(self):
        r = self.regs
        length = r[_REG_PAYLOAD_LENGTH]
        base = r[_REG_FIFO_TX_BASE]
        payload = bytes(self.fifo[(base + i) & 0xFF] for i in range(length))
        cr = 4 + ((r[_REG_MODEM_CONFIG1] >> 1) & 0x07)
        airtime = sim_radio_link.time_on_air_us(
            self._sf(), self._bw(), cr, length, (r[0x20] << 8) | r[0x21],
            bool(r[_REG_MODEM_CONFIG2] & 0x04), bool(r[_REG_MODEM_CONFIG1] & 0x01),
            bool(r[_REG_MODEM_CONFIG3] & 0x08))
        # RegInvertIQ bit 0 set means normal TX polarity.
        self.modem.start_tx(self._freq(), self._sf(), self._bw(), cr, payload, airtime,
                            not r[_REG_INVERT_IQ] & 0x01, r[_REG_SYNC_WORD])

    def _raise(self, flags):
        self.regs[_REG_IRQ_FLAGS] |= flags & ~self.regs[_REG_IRQ_FLAGS_MASK]

    def _advance(self):
        """Brings the chip up to now: TxDone, ValidHeader, RxDone or RxTimeout."""
        event = self.modem.poll()
        if event is None:
            if self.modem.header_seen():
                self._raise(_IRQ_VALID_HEADER)
            return
        if event == sim_radio_link.TX_DONE:
            self._raise(_IRQ_TX_DONE)
            self._set_mode_bits(_MODE_STDBY)
        elif event == sim_radio_link.RX_TIMEOUT:
            self._raise(_IRQ_RX_TIMEOUT)
            self._set_mode_bits(_MODE_STDBY)
        else:
            self._store_frame(self.modem.received)
            if self._mode() == _MODE_RX_SINGLE:
                self.modem.stop()
                self._set_mode_bits(_MODE_STDBY)

    def _set_mode_bits(self, mode):
        self.regs[_REG_OP_MODE] = (self.regs[_REG_OP_MODE] & ~_MODE_MASK) | mode

    def _store_frame(self, msg):
        r = self.regs
        data = msg["data"]
        start = r[_REG_FIFO_RX_BYTE_ADDR]
        for i in range(len(data)):
            self.fifo[(start + i) & 0xFF] = data[i]
        r[_REG_FIFO_RX_CURRENT] = start
        r[_REG_FIFO_RX_BYTE_ADDR] = (start + len(data)) & 0xFF
        r[_REG_RX_NB_BYTES] = len(data)
        snr = float(msg.get("snr", 10.0))
        rssi = float(msg.get("rssi", -60.0))
        r[_REG_PKT_SNR] = int(round(snr * 4)) & 0xFF
        # Datasheet 5.5.5: RSSI = -157 + PacketRssi (HF port; -164 LF), + SNR when SNR < 0.
        offset = 157 if self._freq() >= 779000000 else 164
        pkt = rssi + offset - (snr if snr < 0 else 0)
        r[_REG_PKT_RSSI] = max(0, min(255, int(round(pkt))))
        r[_REG_HOP_CHANNEL] = 0x40 if msg.get("crc", True) else 0
        flags = _IRQ_RX_DONE | _IRQ_VALID_HEADER
        if msg.get("crc_error"):
            flags |= _IRQ_CRC_ERROR
        self._raise(flags)
