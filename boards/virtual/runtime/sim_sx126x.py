"""Simulated Semtech SX1262 in LoRa mode: its SPI command interface and BUSY line.

A transaction is an opcode and parameters; read commands clock the status byte and then
data back on MISO; write commands execute when NSS rises, after which BUSY stays high a
while. Frames go through the shared `sim_radio_link.Modem`; the chip advances whenever
the host touches it. Modelled so driver bugs show: a command sent while BUSY is high is
ignored; NSS wakes the chip from Sleep; all IRQs stay masked until SetDioIrqParams; with a
TCXO the chip cannot leave STBY_RC before SetDIO3AsTcxoCtrl (XOSC_START_ERR); TxDone only
after the time on air; RX hears only its frequency/SF/BW, IQ polarity and sync word.
"""

import time

from micropython import const

import sim_radio_link

_OP_GET_STATUS = const(0xC0)
_OP_WRITE_REGISTER = const(0x0D)
_OP_READ_REGISTER = const(0x1D)
_OP_WRITE_BUFFER = const(0x0E)
_OP_READ_BUFFER = const(0x1E)
_OP_SET_SLEEP = const(0x84)
_OP_SET_STANDBY = const(0x80)
_OP_SET_FS = const(0xC1)
_OP_SET_TX = const(0x83)
_OP_SET_RX = const(0x82)
_OP_CALIBRATE = const(0x89)
_OP_CALIBRATE_IMAGE = const(0x98)
_OP_SET_DIO_IRQ_PARAMS = const(0x08)
_OP_GET_IRQ_STATUS = const(0x12)
_OP_CLEAR_IRQ_STATUS = const(0x02)
_OP_SET_DIO3_TCXO = const(0x97)
_OP_SET_RF_FREQUENCY = const(0x86)
_OP_SET_PACKET_TYPE = const(0x8A)
_OP_GET_PACKET_TYPE = const(0x11)
_OP_SET_MODULATION_PARAMS = const(0x8B)
_OP_SET_PACKET_PARAMS = const(0x8C)
_OP_SET_BUFFER_BASE = const(0x8F)
_OP_GET_RX_BUFFER_STATUS = const(0x13)
_OP_GET_PACKET_STATUS = const(0x14)
_OP_GET_RSSI_INST = const(0x15)
_OP_GET_DEVICE_ERRORS = const(0x17)
_OP_CLEAR_DEVICE_ERRORS = const(0x07)
# Accepted without effect on the simulation: SetRegulatorMode, SetPaConfig,
# SetRxTxFallbackMode, SetDIO2AsRfSwitchCtrl, SetTxParams, StopTimerOnPreamble,
# SetLoRaSymbNumTimeout, SetCadParams.
_ACCEPTED = b"\x96\x95\x93\x9d\x8e\x9f\xa0\x88"

# Chip modes, bits 6-4 of the status byte.
_MODE_SLEEP = const(0)
_MODE_STBY_RC = const(2)
_MODE_STBY_XOSC = const(3)
_MODE_FS = const(4)
_MODE_RX = const(5)
_MODE_TX = const(6)

# Command status, bits 3-1 of the status byte.
_CMD_OK = const(0)
_CMD_DATA_AVAILABLE = const(2)
_CMD_PROCESSING_ERROR = const(4)
_CMD_EXEC_FAILURE = const(5)
_CMD_TX_DONE = const(6)

_IRQ_TX_DONE = const(0x0001)
_IRQ_RX_DONE = const(0x0002)
_IRQ_PREAMBLE = const(0x0004)
_IRQ_SYNC_HEADER_VALID = const(0x0018)
_IRQ_CRC_ERR = const(0x0040)
_IRQ_TIMEOUT = const(0x0200)

_ERR_XOSC_START = const(0x0020)
_REG_SYNC_WORD = const(0x0740)

# BUSY high time after a command: a few us usually, mode changes and calibration longer.
# Short, but long enough that a driver that does not wait for BUSY gets caught.
_BUSY_US = const(20)
_BUSY_US_MODE = const(100)
_BUSY_US_CALIBRATE = const(3500)

# SetModulationParams bandwidth codes 0x00..0x0A -> kHz * 10 (0: unused code).
_BW_TENTHS = (78, 156, 312, 625, 1250, 2500, 5000, 0, 104, 208, 417)

# Power-on register values read by drivers: sync word 0x1424 (private), IQ polarity,
# TX clamp, OCP.
_REGISTER_DEFAULTS = ((0x0740, 0x14), (0x0741, 0x24), (0x0736, 0x0D), (0x08D8, 0xC8),
                      (0x08E7, 0x18))


class SX126xSim:
    """One simulated SX1262; `link` (a sim_radio_link.RadioLink) None: nobody hears it.

    `tcxo` True when the board clocks the chip from a TCXO powered by DIO3 (Heltec V3).
    `ignored_commands` counts commands sent while BUSY was high (a driver bug).
    """

    def __init__(self, link=None, tcxo=False):
        self.modem = sim_radio_link.Modem(link)
        self.tcxo = tcxo
        self.buffer = bytearray(256)
        self.ignored_commands = 0
        self.reset()

    # -- pins ---------------------------------------------------------------------------

    def reset(self):
        """NRESET: back to the power-on state (BUSY high while the chip starts)."""
        self._cold_start()
        self._cmd = bytearray()
        self._ignore = False

    def _cold_start(self):
        self.mode = _MODE_STBY_RC
        self._warm = False
        self.registers = dict(_REGISTER_DEFAULTS)
        self.buffer[:] = bytes(256)
        self.packet_type = 0  # GFSK
        self.rf_freq = 0
        self.mod = bytes(4)  # SF, BW code, CR, LDRO
        self.pkt = bytes(6)  # preamble (2), header type, length, CRC, invert IQ
        self.tx_base = self.rx_base = 0
        self.irq_mask = self.dio1_mask = self.irq_status = 0
        self.device_errors = 0
        self.tcxo_on = False
        self._cmd_status = _CMD_OK
        self._rx_info = b"\x00\x00"
        self._pkt_status = b"\x00\x00\x00"
        self._rx_continuous = False
        self._tx_deadline = None
        self.modem.stop()
        self._busy_for(_BUSY_US_CALIBRATE)

    def busy(self):
        self._advance()
        return self.mode == _MODE_SLEEP or time.ticks_diff(self._busy_until, time.ticks_us()) > 0

    def irq(self):
        """DIO1: any IRQ that is raised and routed to DIO1."""
        self._advance()
        return bool(self.irq_status & self.dio1_mask)

    # -- SPI ------------------------------------------------------------------------------

    def select(self):
        self._cmd = bytearray()
        self._ignore = False
        if self.mode == _MODE_SLEEP:
            # The falling NSS edge wakes the chip; this transaction is not a command.
            self.mode = _MODE_STBY_RC
            if not self._warm:
                self._cold_start()
            self._busy_for(_BUSY_US_CALIBRATE)
            self._ignore = True
        elif self.busy():
            self.ignored_commands += 1
            self._ignore = True

    def transfer(self, tx):
        self._advance()
        out = bytearray(len(tx))
        for i in range(len(tx)):
            self._cmd.append(tx[i])
            if not self._ignore:
                out[i] = self._response(len(self._cmd) - 1)
        return bytes(out)

    def deselect(self):
        if self._cmd and not self._ignore:
            self._execute(self._cmd[0], self._cmd[1:])
        self._cmd = bytearray()
        self._ignore = False

    # -- commands -------------------------------------------------------------------------

    def _status(self):
        return (self.mode << 4) | (self._cmd_status << 1)

    def _response(self, pos):
        """The MISO byte at position `pos` of the transaction so far."""
        cmd = self._cmd
        op = cmd[0]
        if op == _OP_READ_REGISTER and pos >= 4:
            return self.registers.get((cmd[1] << 8 | cmd[2]) + pos - 4, 0)
        if op == _OP_READ_BUFFER and pos >= 3:
            return self.buffer[(cmd[1] + pos - 3) & 0xFF]
        if pos >= 2:
            if op == _OP_GET_IRQ_STATUS and pos <= 3:
                return (self.irq_status >> (8 if pos == 2 else 0)) & 0xFF
            if op == _OP_GET_DEVICE_ERRORS and pos <= 3:
                return (self.device_errors >> (8 if pos == 2 else 0)) & 0xFF
            if op == _OP_GET_RX_BUFFER_STATUS and pos <= 3:
                return self._rx_info[pos - 2]
            if op == _OP_GET_PACKET_STATUS and pos <= 4:
                return self._pkt_status[pos - 2]
            if op == _OP_GET_PACKET_TYPE and pos == 2:
                return self.packet_type
            if op == _OP_GET_RSSI_INST and pos == 2:
                return 220  # -110 dBm: a quiet channel
        return self._status()

    def _busy_for(self, us):
        self._busy_until = time.ticks_add(time.ticks_us(), us)

    def _execute(self, op, p):
        self._cmd_status = _CMD_OK
        busy = _BUSY_US
        n = len(p)
        if op == _OP_SET_STANDBY and n:
            self.modem.stop()
            if p[0]:
                self._need_xosc(_MODE_STBY_XOSC)
            else:
                self.mode = _MODE_STBY_RC
            busy = _BUSY_US_MODE
        elif op == _OP_SET_SLEEP and n:
            self.modem.stop()
            self.mode = _MODE_SLEEP
            self._warm = bool(p[0] & 0x04)
        elif op == _OP_SET_FS:
            self._need_xosc(_MODE_FS)
            busy = _BUSY_US_MODE
        elif op == _OP_SET_TX and n >= 3:
            self._start_tx(p[0] << 16 | p[1] << 8 | p[2])
            busy = _BUSY_US_MODE
        elif op == _OP_SET_RX and n >= 3:
            self._start_rx(p[0] << 16 | p[1] << 8 | p[2])
            busy = _BUSY_US_MODE
        elif op == _OP_WRITE_REGISTER and n >= 2:
            for i in range(2, n):
                self.registers[(p[0] << 8 | p[1]) + i - 2] = p[i]
        elif op == _OP_WRITE_BUFFER and n:
            for i in range(1, n):
                self.buffer[(p[0] + i - 1) & 0xFF] = p[i]
        elif op == _OP_SET_DIO_IRQ_PARAMS and n >= 4:
            self.irq_mask = p[0] << 8 | p[1]
            self.dio1_mask = (p[2] << 8 | p[3]) & self.irq_mask
        elif op == _OP_CLEAR_IRQ_STATUS and n >= 2:
            self.irq_status &= ~(p[0] << 8 | p[1])
        elif op == _OP_SET_DIO3_TCXO and n >= 4:
            self.tcxo_on = True
            busy = _BUSY_US_MODE
        elif op == _OP_CALIBRATE or op == _OP_CALIBRATE_IMAGE:
            if self.tcxo and not self.tcxo_on:
                self.device_errors |= _ERR_XOSC_START
            busy = _BUSY_US_CALIBRATE
        elif op == _OP_SET_RF_FREQUENCY and n >= 4:
            self.rf_freq = p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]
        elif op == _OP_SET_PACKET_TYPE and n:
            if self.mode == _MODE_STBY_RC or self.mode == _MODE_STBY_XOSC:
                self.packet_type = p[0]
            else:
                self._cmd_status = _CMD_EXEC_FAILURE
        elif op == _OP_SET_MODULATION_PARAMS and n >= 4:
            self.mod = bytes(p[:4])
        elif op == _OP_SET_PACKET_PARAMS and n >= 6:
            self.pkt = bytes(p[:6])
        elif op == _OP_SET_BUFFER_BASE and n >= 2:
            self.tx_base = p[0]
            self.rx_base = p[1]
        elif op == _OP_CLEAR_DEVICE_ERRORS:
            self.device_errors = 0
        elif op == _OP_GET_STATUS:
            busy = 0
        elif op not in _ACCEPTED and op not in b"\x1d\x1e\x12\x13\x14\x15\x11\x17":
            self._cmd_status = _CMD_PROCESSING_ERROR
        if self.mode != _MODE_SLEEP and busy:
            self._busy_for(busy)

    def _need_xosc(self, mode):
        """Enters a mode that runs on the crystal: impossible while the TCXO is unpowered."""
        if self.tcxo and not self.tcxo_on:
            self.device_errors |= _ERR_XOSC_START
            self._cmd_status = _CMD_EXEC_FAILURE
            self.mode = _MODE_STBY_RC
            return False
        self.mode = mode
        return True

    # -- modem ----------------------------------------------------------------------------

    def _settings(self):
        """(Hz, SF, kHz) of the current RF and modulation parameters."""
        hz = (self.rf_freq * 15625 + (1 << 13)) >> 14  # Fstep = 32 MHz / 2^25
        code = self.mod[1]
        bw = _BW_TENTHS[code] if code < len(_BW_TENTHS) else 0
        return sim_radio_link.snap_hz(hz), self.mod[0], sim_radio_link.bw_value(bw / 10)

    def _sync_byte(self):
        """The sync word in the SX127x's one-byte form: 0x3444 -> 0x34, 0x1424 -> 0x12."""
        r = self.registers
        return (r.get(_REG_SYNC_WORD, 0) & 0xF0) | (r.get(_REG_SYNC_WORD + 1, 0) >> 4)

    def _start_tx(self, timeout):
        self.modem.stop()
        if not self._need_xosc(_MODE_TX):
            return
        length = self.pkt[3]
        payload = bytes(self.buffer[(self.tx_base + i) & 0xFF] for i in range(length))
        freq, sf, bw = self._settings()
        cr = 4 + (self.mod[2] or 1)
        airtime = sim_radio_link.time_on_air_us(
            sf, bw, cr, length, self.pkt[0] << 8 | self.pkt[1], bool(self.pkt[4]),
            bool(self.pkt[2]), bool(self.mod[3]))
        self._tx_deadline = None
        if timeout:
            self._tx_deadline = time.ticks_add(time.ticks_us(), timeout * 15625 // 1000)
        if self.packet_type == 1 and sf and bw:
            self.modem.start_tx(freq, sf, bw, cr, payload, airtime, bool(self.pkt[5]),
                                self._sync_byte())

    def _start_rx(self, timeout):
        self.modem.stop()
        if not self._need_xosc(_MODE_RX):
            return
        # 0: single, no timeout; 0xFFFFFF: continuous; else single with a timeout (in
        # 15.625 us steps) that stops once a header is seen.
        self._rx_continuous = timeout == 0xFFFFFF
        limit = None if timeout in (0, 0xFFFFFF) else timeout * 15625 // 1000
        freq, sf, bw = self._settings()
        if self.packet_type == 1 and sf and bw:
            self.modem.start_rx(freq, sf, bw, bool(self.pkt[5]), self._sync_byte(),
                                self.pkt[0] << 8 | self.pkt[1], limit)

    def _raise(self, irqs):
        self.irq_status |= irqs & self.irq_mask

    def _advance(self):
        """Brings the chip up to now: TxDone, HeaderValid, RxDone or Timeout."""
        if self.mode == _MODE_TX:
            deadline = self._tx_deadline
            if self.modem.poll() == sim_radio_link.TX_DONE:
                self._raise(_IRQ_TX_DONE)
                self._cmd_status = _CMD_TX_DONE
                self.mode = _MODE_STBY_RC
            elif deadline is not None and time.ticks_diff(time.ticks_us(), deadline) >= 0:
                self.modem.stop()
                self._raise(_IRQ_TIMEOUT)
                self.mode = _MODE_STBY_RC
        elif self.mode == _MODE_RX:
            event = self.modem.poll()
            if self.modem.receiving():
                self._raise(_IRQ_PREAMBLE)
                if self.modem.header_seen():
                    self._raise(_IRQ_SYNC_HEADER_VALID)
            if event == sim_radio_link.RX_TIMEOUT:
                self._raise(_IRQ_TIMEOUT)
                self.mode = _MODE_STBY_RC
            elif event == sim_radio_link.RX_DONE:
                self._store_frame(self.modem.received)
                if not self._rx_continuous:
                    self.modem.stop()
                    self.mode = _MODE_STBY_RC

    def _store_frame(self, msg):
        data = msg["data"]
        for i in range(len(data)):
            self.buffer[(self.rx_base + i) & 0xFF] = data[i]
        self._rx_info = bytes((len(data), self.rx_base))
        rssi = float(msg.get("rssi", -60.0))
        snr = float(msg.get("snr", 10.0))
        # GetPacketStatus: RssiPkt = -2 * dBm, SnrPkt = 4 * dB (signed), SignalRssiPkt.
        signal = rssi - snr if snr < 0 else rssi
        self._pkt_status = bytes((max(0, min(255, int(round(-rssi * 2)))),
                                  int(round(snr * 4)) & 0xFF,
                                  max(0, min(255, int(round(-signal * 2))))))
        irqs = _IRQ_RX_DONE | _IRQ_SYNC_HEADER_VALID
        if msg.get("crc_error"):
            irqs |= _IRQ_CRC_ERR
        self._raise(irqs)
        self._cmd_status = _CMD_DATA_AVAILABLE
