"""Semtech SX1276/77/78 LoRa radio driver (register level) for the LoRaWAN MAC.

The MAC sees four calls: `transmit` (blocks until the frame is on air), `receive` (one RX
window, returns the frame or None), `sleep`, and the `last_rssi`/`last_snr` of the last
frame received. Uplinks go out with normal IQ, CRC on, coding rate 4/5, an 8-symbol
preamble and the LoRaWAN public sync word; downlinks are received with inverted IQ.
Completion is polled (DIO0 when wired, RegIrqFlags otherwise); no interrupt handler.
"""

import time

from micropython import const

_REG_FIFO = const(0x00)
_REG_OP_MODE = const(0x01)
_REG_FRF_MSB = const(0x06)
_REG_FRF_MID = const(0x07)
_REG_FRF_LSB = const(0x08)
_REG_PA_CONFIG = const(0x09)
_REG_OCP = const(0x0B)
_REG_LNA = const(0x0C)
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
_REG_MODEM_CONFIG1 = const(0x1D)
_REG_MODEM_CONFIG2 = const(0x1E)
_REG_SYMB_TIMEOUT_LSB = const(0x1F)
_REG_PREAMBLE_MSB = const(0x20)
_REG_PREAMBLE_LSB = const(0x21)
_REG_PAYLOAD_LENGTH = const(0x22)
_REG_MAX_PAYLOAD_LENGTH = const(0x23)
_REG_MODEM_CONFIG3 = const(0x26)
_REG_DETECT_OPTIMIZE = const(0x31)
_REG_INVERT_IQ = const(0x33)
_REG_DETECTION_THRESHOLD = const(0x37)
_REG_SYNC_WORD = const(0x39)
_REG_INVERT_IQ2 = const(0x3B)
_REG_DIO_MAPPING1 = const(0x40)
_REG_VERSION = const(0x42)
_REG_PA_DAC = const(0x4D)

_LONG_RANGE_MODE = const(0x80)
_MODE_SLEEP = const(0x00)
_MODE_STDBY = const(0x01)
_MODE_TX = const(0x03)
_MODE_RX_CONTINUOUS = const(0x05)

_IRQ_RX_TIMEOUT = const(0x80)
_IRQ_RX_DONE = const(0x40)
_IRQ_PAYLOAD_CRC_ERROR = const(0x20)
_IRQ_VALID_HEADER = const(0x10)
_IRQ_TX_DONE = const(0x08)

_DIO0_RX_DONE = const(0x00)
_DIO0_TX_DONE = const(0x40)

# RegInvertIQ / RegInvertIQ2 pairs (bit 6 inverts RX; bit 0 clear inverts TX).
_IQ_NORMAL = const(0x27)
_IQ2_NORMAL = const(0x1D)
_IQ_RX_INVERTED = const(0x67)
_IQ2_INVERTED = const(0x19)

_CHIP_VERSION = const(0x12)
_PUBLIC_SYNC_WORD = const(0x34)
_PREAMBLE_SYMBOLS = const(8)
_CODING_RATE_4_5 = const(0x02)  # RegModemConfig1 bits 3-1 = 001
_CRC_ON = const(0x04)
_AGC_AUTO_ON = const(0x04)
_LOW_DATA_RATE_OPTIMIZE = const(0x08)
_LNA_MAX_GAIN_BOOST = const(0x23)
_HF_PORT_MIN_HZ = const(779000000)
_POLL_MS = const(1)
_MARGIN_MS = const(100)

# Bandwidth in Hz per RegModemConfig1 code (bits 7-4).
_BANDWIDTHS_HZ = (7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, 250000, 500000)


class RadioError(OSError):
    """The radio is missing, the wrong chip, or did not finish an operation in time."""


def _bandwidth_code(bw_khz):
    hz = int(bw_khz * 1000)
    for code in range(len(_BANDWIDTHS_HZ)):
        if abs(_BANDWIDTHS_HZ[code] - hz) < 100:
            return code
    raise ValueError("unsupported LoRa bandwidth %s kHz" % bw_khz)


def _airtime_ms(length, sf, bw_khz):
    """Upper bound of the time on air of a frame as this driver sends it (CR 4/5, CRC on)."""
    sym_us = (1 << sf) * 1000 // int(bw_khz)
    de = 1 if sym_us >= 16000 else 0
    bits = 8 * length - 4 * sf + 28 + 16
    step = 4 * (sf - 2 * de)
    blocks = (bits + step - 1) // step if bits > 0 else 0
    symbols = _PREAMBLE_SYMBOLS + 5 + 8 + blocks * 5
    return symbols * sym_us // 1000 + 1


class SX127x:
    """An SX1276/77/78 on `spi`, selected by Pin `cs`, reset by Pin `reset`; DIO0 optional."""

    def __init__(self, spi, cs, reset, dio0=None):
        self._spi = spi
        self._cs = cs
        self._reset = reset
        self._dio0 = dio0
        self._wbuf = bytearray(2)
        self._rbuf = bytearray(2)
        self._addr = bytearray(1)
        self._frame = bytearray(256)
        self._frame_mv = memoryview(self._frame)
        self.tx_power_dbm = 14  # EU868 default; the MAC may change it (2..17, or 20)
        self.last_rssi = None
        self.last_snr = None
        self.crc_errors = 0
        self.init()

    # -- bus ------------------------------------------------------------------------------

    def _read(self, reg):
        self._wbuf[0] = reg & 0x7F
        self._wbuf[1] = 0
        self._cs.value(0)
        try:
            self._spi.write_readinto(self._wbuf, self._rbuf)
        finally:
            self._cs.value(1)
        return self._rbuf[1]

    def _write(self, reg, value):
        self._wbuf[0] = reg | 0x80
        self._wbuf[1] = value
        self._cs.value(0)
        try:
            self._spi.write(self._wbuf)
        finally:
            self._cs.value(1)

    def _write_fifo(self, data):
        self._addr[0] = _REG_FIFO | 0x80
        self._cs.value(0)
        try:
            self._spi.write(self._addr)
            self._spi.write(data)
        finally:
            self._cs.value(1)

    def _read_fifo(self, n):
        self._addr[0] = _REG_FIFO
        self._cs.value(0)
        try:
            self._spi.write(self._addr)
            self._spi.readinto(self._frame_mv[:n], 0)
        finally:
            self._cs.value(1)

    def _mode(self, mode):
        self._write(_REG_OP_MODE, _LONG_RANGE_MODE | mode)

    # -- setup ----------------------------------------------------------------------------

    def init(self):
        """Resets the chip, checks it is an SX127x and puts it into LoRa sleep, configured."""
        self._cs.value(1)
        self._reset.value(0)
        time.sleep_ms(1)  # datasheet 7.2.2: > 100 us low
        self._reset.value(1)
        time.sleep_ms(6)  # then 5 ms before the chip is ready
        version = self._read(_REG_VERSION)
        if version != _CHIP_VERSION:
            if version in (0x00, 0xFF):
                why = "no chip answers on SPI: check power, wiring and the CS pin"
            elif version == 0x22:
                why = "this is an SX1272/73, not an SX1276/77/78"
            else:
                why = "not an SX1276/77/78"
            raise RadioError(
                "SX127x not found: RegVersion (0x42) reads 0x%02x, expected 0x12 (%s)"
                % (version, why)
            )
        # LongRangeMode can only be switched in Sleep.
        self._write(_REG_OP_MODE, _MODE_SLEEP)
        self._mode(_MODE_SLEEP)
        if not self._read(_REG_OP_MODE) & _LONG_RANGE_MODE:
            raise RadioError("SX127x did not enter LoRa mode (RegOpMode LongRangeMode stays 0)")
        self._mode(_MODE_STDBY)
        self._write(_REG_FIFO_TX_BASE, 0)
        self._write(_REG_FIFO_RX_BASE, 0)
        self._write(_REG_LNA, _LNA_MAX_GAIN_BOOST)
        self._write(_REG_SYNC_WORD, _PUBLIC_SYNC_WORD)
        self._write(_REG_PREAMBLE_MSB, 0)
        self._write(_REG_PREAMBLE_LSB, _PREAMBLE_SYMBOLS)
        self._write(_REG_MAX_PAYLOAD_LENGTH, 0xFF)
        self._write(_REG_IRQ_FLAGS_MASK, 0)
        self._write(_REG_IRQ_FLAGS, 0xFF)
        self._mode(_MODE_SLEEP)

    def _set_power(self):
        dbm = self.tx_power_dbm
        if dbm > 17:
            # +20 dBm needs the high-power DAC; only on PA_BOOST, at most 1% duty cycle.
            self._write(_REG_PA_DAC, 0x87)
            self._write(_REG_OCP, 0x3B)  # 240 mA
            dbm = 20
            level = 15
        else:
            self._write(_REG_PA_DAC, 0x84)
            self._write(_REG_OCP, 0x2B)  # 100 mA
            dbm = max(2, dbm)
            level = dbm - 2
        # PA_BOOST (the boards route only that pin), MaxPower 7, Pout = 2 + OutputPower.
        self._write(_REG_PA_CONFIG, 0xF0 | level)

    def _configure(self, freq_hz, sf, bw_khz, rx):
        if not 6 <= sf <= 12:
            raise ValueError("unsupported spreading factor %s" % sf)
        bw = _bandwidth_code(bw_khz)
        # Frf = f * 2^19 / 32 MHz = f * 256 / 15625, split so no step leaves small ints.
        frf = (freq_hz // 15625) * 256 + ((freq_hz % 15625) * 256 + 7812) // 15625
        self._write(_REG_FRF_MSB, (frf >> 16) & 0xFF)
        self._write(_REG_FRF_MID, (frf >> 8) & 0xFF)
        self._write(_REG_FRF_LSB, frf & 0xFF)
        self._write(_REG_MODEM_CONFIG1, (bw << 4) | _CODING_RATE_4_5)
        self._write(_REG_MODEM_CONFIG2, (sf << 4) | (0 if rx else _CRC_ON))
        sym_us = (1 << sf) * 1000000 // _BANDWIDTHS_HZ[bw]
        ldro = _LOW_DATA_RATE_OPTIMIZE if sym_us >= 16000 else 0
        self._write(_REG_MODEM_CONFIG3, ldro | _AGC_AUTO_ON)
        self._write(_REG_DETECT_OPTIMIZE, 0xC5 if sf == 6 else 0xC3)
        self._write(_REG_DETECTION_THRESHOLD, 0x0C if sf == 6 else 0x0A)
        self._write(_REG_INVERT_IQ, _IQ_RX_INVERTED if rx else _IQ_NORMAL)
        self._write(_REG_INVERT_IQ2, _IQ2_INVERTED if rx else _IQ2_NORMAL)

    # -- the MAC's API ------------------------------------------------------------------

    def transmit(self, data, freq_hz, sf, bw_khz):
        """Sends `data` and returns once it is on air; RadioError if TxDone never comes."""
        n = len(data)
        if not 0 < n <= 255:
            raise ValueError("LoRa frame of %d bytes (1..255)" % n)
        self._mode(_MODE_STDBY)
        self._configure(freq_hz, sf, bw_khz, False)
        self._set_power()
        self._write(_REG_FIFO_TX_BASE, 0)
        self._write(_REG_FIFO_ADDR_PTR, 0)
        self._write_fifo(data)
        self._write(_REG_PAYLOAD_LENGTH, n)
        self._write(_REG_DIO_MAPPING1, _DIO0_TX_DONE)
        self._write(_REG_IRQ_FLAGS, 0xFF)
        self._mode(_MODE_TX)
        limit = _airtime_ms(n, sf, bw_khz) * 2 + _MARGIN_MS
        start = time.ticks_ms()
        while True:
            if self._dio0 is None or self._dio0.value():
                flags = self._read(_REG_IRQ_FLAGS)
                if flags & _IRQ_TX_DONE:
                    self._write(_REG_IRQ_FLAGS, 0xFF)
                    return
            if time.ticks_diff(time.ticks_ms(), start) > limit:
                self._mode(_MODE_STDBY)
                raise RadioError("SX127x TX did not finish within %d ms (no TxDone)" % limit)
            time.sleep_ms(_POLL_MS)

    def receive(self, freq_hz, sf, bw_khz, timeout_ms):
        """Listens for one downlink (inverted IQ) for `timeout_ms`; a frame that began in
        the window is received to its end. Returns its bytes, or None if nothing (or only
        a frame with a bad CRC) arrived."""
        self._mode(_MODE_STDBY)
        self._configure(freq_hz, sf, bw_khz, True)
        self._write(_REG_FIFO_RX_BASE, 0)
        self._write(_REG_FIFO_ADDR_PTR, 0)
        self._write(_REG_DIO_MAPPING1, _DIO0_RX_DONE)
        self._write(_REG_IRQ_FLAGS, 0xFF)
        self._mode(_MODE_RX_CONTINUOUS)
        start = time.ticks_ms()
        limit = timeout_ms
        extended = False
        while True:
            if self._dio0 is None or self._dio0.value():
                flags = self._read(_REG_IRQ_FLAGS)
                if flags & _IRQ_RX_DONE:
                    return self._take_frame(flags, freq_hz)
            if time.ticks_diff(time.ticks_ms(), start) >= limit:
                flags = self._read(_REG_IRQ_FLAGS)
                if flags & _IRQ_RX_DONE:
                    return self._take_frame(flags, freq_hz)
                arriving = flags & _IRQ_VALID_HEADER or self._read(_REG_MODEM_STAT) & 0x01
                if arriving and not extended:
                    # A frame has begun (preamble detected or header seen): give it the
                    # longest time a frame can take, as RxSingle mode would.
                    limit += _airtime_ms(255, sf, bw_khz) + _MARGIN_MS
                    extended = True
                else:
                    self._mode(_MODE_STDBY)
                    self._write(_REG_IRQ_FLAGS, 0xFF)
                    return None
            time.sleep_ms(_POLL_MS)

    def _take_frame(self, flags, freq_hz):
        self._mode(_MODE_STDBY)
        self._write(_REG_IRQ_FLAGS, 0xFF)
        if flags & _IRQ_PAYLOAD_CRC_ERROR:
            self.crc_errors += 1
            return None
        n = self._read(_REG_RX_NB_BYTES)
        self._write(_REG_FIFO_ADDR_PTR, self._read(_REG_FIFO_RX_CURRENT))
        self._read_fifo(n)
        snr = self._read(_REG_PKT_SNR)
        snr = (snr - 256 if snr > 127 else snr) / 4
        rssi = self._read(_REG_PKT_RSSI) - (157 if freq_hz >= _HF_PORT_MIN_HZ else 164)
        if snr < 0:
            rssi += snr  # datasheet 5.5.5: below the noise floor the SNR adds in
        self.last_snr = snr
        self.last_rssi = rssi
        return bytes(self._frame_mv[:n])

    def sleep(self):
        """Lowest-power mode that keeps the configuration (FIFO is lost)."""
        self._mode(_MODE_SLEEP)
