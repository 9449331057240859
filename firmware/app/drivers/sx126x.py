"""Semtech SX1262 LoRa radio driver (SPI command level) for the LoRaWAN MAC.

Same four calls as `drivers.sx127x`: `transmit`, `receive`, `sleep`, and `last_rssi`/
`last_snr`. Every command first waits for BUSY low (the chip ignores commands while busy);
a sleeping chip is woken by a NSS pulse. Uplinks: normal IQ, CRC on, CR 4/5, 8-symbol
preamble, public sync word 0x3444; downlinks are received with inverted IQ. Completion is
polled (DIO1 when wired, GetIrqStatus otherwise); no interrupt handler.
"""

import time

from micropython import const

_OP_GET_STATUS = const(0xC0)
_OP_WRITE_REGISTER = const(0x0D)
_OP_READ_REGISTER = const(0x1D)
_OP_WRITE_BUFFER = const(0x0E)
_OP_READ_BUFFER = const(0x1E)
_OP_SET_SLEEP = const(0x84)
_OP_SET_STANDBY = const(0x80)
_OP_SET_TX = const(0x83)
_OP_SET_RX = const(0x82)
_OP_SET_REGULATOR_MODE = const(0x96)
_OP_CALIBRATE = const(0x89)
_OP_CALIBRATE_IMAGE = const(0x98)
_OP_SET_PA_CONFIG = const(0x95)
_OP_SET_DIO_IRQ_PARAMS = const(0x08)
_OP_GET_IRQ_STATUS = const(0x12)
_OP_CLEAR_IRQ_STATUS = const(0x02)
_OP_SET_DIO2_RF_SWITCH = const(0x9D)
_OP_SET_DIO3_TCXO = const(0x97)
_OP_SET_RF_FREQUENCY = const(0x86)
_OP_SET_PACKET_TYPE = const(0x8A)
_OP_GET_PACKET_TYPE = const(0x11)
_OP_SET_TX_PARAMS = const(0x8E)
_OP_SET_MODULATION_PARAMS = const(0x8B)
_OP_SET_PACKET_PARAMS = const(0x8C)
_OP_SET_BUFFER_BASE = const(0x8F)
_OP_GET_RX_BUFFER_STATUS = const(0x13)
_OP_GET_PACKET_STATUS = const(0x14)
_OP_GET_DEVICE_ERRORS = const(0x17)
_OP_CLEAR_DEVICE_ERRORS = const(0x07)

_REG_IQ_POLARITY = const(0x0736)
_REG_SYNC_WORD_MSB = const(0x0740)
_REG_TX_CLAMP = const(0x08D8)

_STANDBY_RC = const(0x00)
_CHIP_MODE_STBY_RC = const(2)
_PACKET_TYPE_LORA = const(0x01)
_SLEEP_WARM_START = const(0x04)
_REGULATOR_DC_DC = const(0x01)
_CALIBRATE_ALL = const(0x7F)
_TCXO_1V8 = const(0x02)
_TCXO_DELAY = const(320)  # 5 ms in 15.625 us steps
_RAMP_200_US = const(0x04)
_CR_4_5 = const(0x01)

_IRQ_TX_DONE = const(0x0001)
_IRQ_RX_DONE = const(0x0002)
_IRQ_HEADER_VALID = const(0x0010)
_IRQ_HEADER_ERR = const(0x0020)
_IRQ_CRC_ERR = const(0x0040)
_IRQ_TIMEOUT = const(0x0200)
_IRQ_USED = const(0x0273)

_ERR_XOSC_START = const(0x0020)
_ERR_PLL_LOCK = const(0x0040)
_ERR_PLL_CALIB = const(0x0010)
_ERR_IMG_CALIB = const(0x0008)

_PREAMBLE_SYMBOLS = const(8)
_BUSY_TIMEOUT_MS = const(100)
_POLL_MS = const(1)
_MARGIN_MS = const(100)
_MAX_RX_TIMEOUT = const(0xFFFFFE)  # 0xFFFFFF would mean continuous RX

# (kHz * 10, SetModulationParams code): the LoRa bandwidths of the SX126x.
_BANDWIDTHS = (
    (78, 0x00),
    (104, 0x08),
    (156, 0x01),
    (208, 0x09),
    (312, 0x02),
    (417, 0x0A),
    (625, 0x03),
    (1250, 0x04),
    (2500, 0x05),
    (5000, 0x06),
)


class RadioError(OSError):
    """The radio is missing, not answering (BUSY stuck), or did not finish in time."""


def _bandwidth_code(bw_khz):
    tenths = int(bw_khz * 10 + 0.5)
    for khz10, code in _BANDWIDTHS:
        if abs(khz10 - tenths) <= 1:
            return code
    raise ValueError("unsupported LoRa bandwidth %s kHz" % bw_khz)


def _symbol_us(sf, bw_khz):
    return (1 << sf) * 1000 // int(bw_khz)


def _airtime_ms(length, sf, bw_khz):
    """Upper bound of the time on air of a frame as this driver sends it (CR 4/5, CRC on)."""
    sym_us = _symbol_us(sf, bw_khz)
    de = 1 if sym_us >= 16000 else 0
    bits = 8 * length - 4 * sf + 28 + 16
    step = 4 * (sf - 2 * de)
    blocks = (bits + step - 1) // step if bits > 0 else 0
    symbols = _PREAMBLE_SYMBOLS + 5 + 8 + blocks * 5
    return symbols * sym_us // 1000 + 1


class SX126x:
    """An SX1262 on `spi`, selected by Pin `cs`, with Pins `reset` and `busy`; DIO1 optional.

    `tcxo` True when DIO3 powers a TCXO (Heltec V3): it is switched on at 1.8 V.
    """

    def __init__(self, spi, cs, reset, busy, dio1=None, tcxo=False):
        self._spi = spi
        self._cs = cs
        self._reset = reset
        self._busy = busy
        self._dio1 = dio1
        self._tcxo = tcxo
        self._cmd = bytearray(12)
        self._rsp = bytearray(12)
        self._cmd_mv = memoryview(self._cmd)
        self._rsp_mv = memoryview(self._rsp)
        self._frame = bytearray(256)
        self._frame_mv = memoryview(self._frame)
        self._asleep = False
        self.tx_power_dbm = 14  # EU868 default; the MAC may change it (-9..22)
        self.last_rssi = None
        self.last_snr = None
        self.crc_errors = 0
        self.init()

    # -- bus ------------------------------------------------------------------------------

    def _wait_busy(self):
        if self._asleep:
            # A falling NSS edge wakes the chip; it is ready when BUSY drops.
            self._cs.value(0)
            self._cs.value(1)
            self._asleep = False
        start = time.ticks_ms()
        while self._busy.value():
            if time.ticks_diff(time.ticks_ms(), start) > _BUSY_TIMEOUT_MS:
                raise RadioError(
                    "SX126x BUSY stayed high for %d ms: no chip answering (check power, "
                    "the BUSY and RESET pins)" % _BUSY_TIMEOUT_MS
                )

    def _command(self, n):
        """Sends the first `n` bytes of the command buffer; the answer lands in `_rsp`."""
        self._wait_busy()
        self._cs.value(0)
        try:
            self._spi.write_readinto(self._cmd_mv[:n], self._rsp_mv[:n])
        finally:
            self._cs.value(1)

    def _op(self, opcode, *params):
        cmd = self._cmd
        cmd[0] = opcode
        for i in range(len(params)):
            cmd[i + 1] = params[i]
        self._command(len(params) + 1)

    def _read_op(self, opcode, n):
        """Read commands: opcode, one status byte, then `n` data bytes (from `_rsp[2]`)."""
        cmd = self._cmd
        cmd[0] = opcode
        for i in range(1, n + 2):
            cmd[i] = 0
        self._command(n + 2)
        return self._rsp

    def _write_register(self, addr, value):
        self._op(_OP_WRITE_REGISTER, addr >> 8, addr & 0xFF, value)

    def _read_register(self, addr):
        cmd = self._cmd
        cmd[0] = _OP_READ_REGISTER
        cmd[1] = addr >> 8
        cmd[2] = addr & 0xFF
        cmd[3] = 0
        cmd[4] = 0
        self._command(5)
        return self._rsp[4]

    def _status(self):
        self._read_op(_OP_GET_STATUS, 0)
        return self._rsp[1]

    def _irq_status(self):
        rsp = self._read_op(_OP_GET_IRQ_STATUS, 2)
        return (rsp[2] << 8) | rsp[3]

    def _clear_irq(self):
        self._op(_OP_CLEAR_IRQ_STATUS, 0xFF, 0xFF)

    def _device_errors(self):
        rsp = self._read_op(_OP_GET_DEVICE_ERRORS, 2)
        return (rsp[2] << 8) | rsp[3]

    # -- setup ----------------------------------------------------------------------------

    def init(self):
        """Resets the chip, checks an SX126x answers, and configures it for LoRaWAN EU868."""
        self._cs.value(1)
        self._reset.value(0)
        time.sleep_ms(1)  # datasheet: NRESET low for more than 100 us
        self._reset.value(1)
        time.sleep_ms(1)
        self._asleep = False
        self._op(_OP_SET_STANDBY, _STANDBY_RC)
        status = self._status()
        mode = (status >> 4) & 0x07
        if mode != _CHIP_MODE_STBY_RC:
            raise RadioError(
                "SX126x not found: GetStatus reads 0x%02x (chip mode %d, expected STBY_RC 2); "
                "check power, wiring and the CS pin" % (status, mode)
            )
        sync = (self._read_register(_REG_SYNC_WORD_MSB) << 8) | self._read_register(
            _REG_SYNC_WORD_MSB + 1
        )
        if sync not in (0x1424, 0x3444):
            raise RadioError(
                "SX126x not found: LoRa sync word register 0x0740 reads 0x%04x, expected "
                "0x1424 after reset" % sync
            )
        if self._tcxo:
            # The crystal is a TCXO powered from DIO3: power it, then recalibrate with it.
            self._op(_OP_SET_DIO3_TCXO, _TCXO_1V8, 0, _TCXO_DELAY >> 8, _TCXO_DELAY & 0xFF)
            self._op(_OP_CALIBRATE, _CALIBRATE_ALL)
            self._wait_busy()
            self._op(_OP_CLEAR_DEVICE_ERRORS, 0, 0)
        self._op(_OP_SET_REGULATOR_MODE, _REGULATOR_DC_DC)
        self._op(_OP_SET_DIO2_RF_SWITCH, 1)
        self._op(_OP_SET_PACKET_TYPE, _PACKET_TYPE_LORA)
        if self._read_op(_OP_GET_PACKET_TYPE, 1)[2] != _PACKET_TYPE_LORA:
            raise RadioError("SX126x did not switch to LoRa packet type")
        self._op(_OP_SET_BUFFER_BASE, 0, 0)
        self._write_register(_REG_SYNC_WORD_MSB, 0x34)
        self._write_register(_REG_SYNC_WORD_MSB + 1, 0x44)
        self._op(_OP_CALIBRATE_IMAGE, 0xD7, 0xDB)  # 863-870 MHz
        self._op(
            _OP_SET_DIO_IRQ_PARAMS,
            _IRQ_USED >> 8,
            _IRQ_USED & 0xFF,
            _IRQ_USED >> 8,
            _IRQ_USED & 0xFF,
            0,
            0,
            0,
            0,
        )
        self._clear_irq()
        errors = self._device_errors()
        if errors & (_ERR_XOSC_START | _ERR_PLL_LOCK | _ERR_PLL_CALIB | _ERR_IMG_CALIB):
            raise RadioError(
                "SX126x calibration failed: device errors 0x%04x%s"
                % (errors, " (oscillator did not start: TCXO?)" if errors & _ERR_XOSC_START else "")
            )
        self.sleep()

    def _set_power(self):
        # SX1262 PA table (datasheet 13.1.14.1): duty cycle / hpMax per target power,
        # with SetTxParams at +22; below 14 dBm the output is lowered via SetTxParams.
        dbm = self.tx_power_dbm
        if dbm >= 22:
            duty, hp_max, power = 0x04, 0x07, 22
        elif dbm >= 20:
            duty, hp_max, power = 0x03, 0x05, 22
        elif dbm >= 17:
            duty, hp_max, power = 0x02, 0x03, 22
        else:
            duty, hp_max, power = 0x02, 0x02, 22 - (14 - max(dbm, -9))
        self._op(_OP_SET_PA_CONFIG, duty, hp_max, 0x00, 0x01)
        # Datasheet 15.2: better PA clamping against antenna mismatch.
        self._write_register(_REG_TX_CLAMP, self._read_register(_REG_TX_CLAMP) | 0x1E)
        self._op(_OP_SET_TX_PARAMS, power & 0xFF, _RAMP_200_US)

    def _configure(self, freq_hz, sf, bw_khz, length, rx):
        if not 5 <= sf <= 12:
            raise ValueError("unsupported spreading factor %s" % sf)
        bw = _bandwidth_code(bw_khz)
        self._op(_OP_SET_STANDBY, _STANDBY_RC)
        # RfFreq = f * 2^25 / 32 MHz = f * 16384 / 15625, split so it stays in small ints.
        rf = (freq_hz // 15625) * 16384 + ((freq_hz % 15625) * 16384 + 7812) // 15625
        self._op(
            _OP_SET_RF_FREQUENCY, (rf >> 24) & 0xFF, (rf >> 16) & 0xFF, (rf >> 8) & 0xFF, rf & 0xFF
        )
        ldro = 1 if _symbol_us(sf, bw_khz) >= 16000 else 0
        self._op(_OP_SET_MODULATION_PARAMS, sf, bw, _CR_4_5, ldro)
        # Preamble, explicit header, payload length, CRC (on for uplinks), IQ (inverted for RX).
        self._op(
            _OP_SET_PACKET_PARAMS, 0, _PREAMBLE_SYMBOLS, 0, length, 0 if rx else 1, 1 if rx else 0
        )
        # Datasheet 15.4: IQ polarity register bit 2 must be 0 with inverted IQ, 1 otherwise.
        iq = self._read_register(_REG_IQ_POLARITY)
        self._write_register(_REG_IQ_POLARITY, (iq & ~0x04) if rx else (iq | 0x04))

    # -- the MAC's API ------------------------------------------------------------------

    def _wait_irq(self, mask, limit_ms):
        start = time.ticks_ms()
        while True:
            if self._dio1 is None or self._dio1.value():
                irq = self._irq_status()
                if irq & mask:
                    return irq
            if time.ticks_diff(time.ticks_ms(), start) > limit_ms:
                return 0
            time.sleep_ms(_POLL_MS)

    def transmit(self, data, freq_hz, sf, bw_khz):
        """Sends `data` and returns once it is on air; RadioError on timeout."""
        n = len(data)
        if not 0 < n <= 255:
            raise ValueError("LoRa frame of %d bytes (1..255)" % n)
        self._configure(freq_hz, sf, bw_khz, n, False)
        self._set_power()
        self._wait_busy()
        self._cmd[0] = _OP_WRITE_BUFFER
        self._cmd[1] = 0
        self._cs.value(0)
        try:
            self._spi.write(self._cmd_mv[:2])
            self._spi.write(data)
        finally:
            self._cs.value(1)
        self._clear_irq()
        limit = _airtime_ms(n, sf, bw_khz) * 2 + _MARGIN_MS
        steps = min(limit * 64, _MAX_RX_TIMEOUT)  # 15.625 us steps
        self._op(_OP_SET_TX, (steps >> 16) & 0xFF, (steps >> 8) & 0xFF, steps & 0xFF)
        irq = self._wait_irq(_IRQ_TX_DONE | _IRQ_TIMEOUT, limit + _MARGIN_MS)
        self._clear_irq()
        if not irq & _IRQ_TX_DONE:
            self._op(_OP_SET_STANDBY, _STANDBY_RC)
            raise RadioError("SX126x TX did not finish within %d ms (irq 0x%04x)" % (limit, irq))

    def receive(self, freq_hz, sf, bw_khz, timeout_ms):
        """Listens for one downlink (inverted IQ) for `timeout_ms`; a frame whose header was
        seen in the window is received to its end (the chip stops its timer on the header).
        Returns its bytes, or None if nothing (or only a frame with a bad CRC) arrived."""
        self._configure(freq_hz, sf, bw_khz, 0xFF, True)
        self._clear_irq()
        steps = min(max(1, timeout_ms) * 64, _MAX_RX_TIMEOUT)
        self._op(_OP_SET_RX, (steps >> 16) & 0xFF, (steps >> 8) & 0xFF, steps & 0xFF)
        limit = timeout_ms + _airtime_ms(255, sf, bw_khz) + _MARGIN_MS
        irq = self._wait_irq(_IRQ_RX_DONE | _IRQ_TIMEOUT | _IRQ_HEADER_ERR, limit)
        self._clear_irq()
        if not irq:
            self._op(_OP_SET_STANDBY, _STANDBY_RC)
            raise RadioError(
                "SX126x RX window of %d ms never ended (no RxDone/Timeout)" % timeout_ms
            )
        if not irq & _IRQ_RX_DONE or irq & _IRQ_HEADER_ERR:
            self._op(_OP_SET_STANDBY, _STANDBY_RC)
            return None
        if irq & _IRQ_CRC_ERR:
            self.crc_errors += 1
            return None
        rsp = self._read_op(_OP_GET_RX_BUFFER_STATUS, 2)
        n = rsp[2]
        offset = rsp[3]
        rsp = self._read_op(_OP_GET_PACKET_STATUS, 3)
        self.last_rssi = -rsp[2] / 2
        snr = rsp[3]
        self.last_snr = (snr - 256 if snr > 127 else snr) / 4
        self._wait_busy()
        self._cmd[0] = _OP_READ_BUFFER
        self._cmd[1] = offset
        self._cmd[2] = 0
        self._cs.value(0)
        try:
            self._spi.write(self._cmd_mv[:3])
            self._spi.readinto(self._frame_mv[:n], 0)
        finally:
            self._cs.value(1)
        return bytes(self._frame_mv[:n])

    def sleep(self):
        """Warm-start sleep: configuration kept, woken by the next command."""
        self._op(_OP_SET_SLEEP, _SLEEP_WARM_START)
        self._asleep = True
