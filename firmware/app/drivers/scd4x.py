"""Sensirion SCD4x CO2 sensor (SCD40/SCD41) over I2C, an optional sensor of the air node.

16-bit commands, big-endian 16-bit data words each followed by a CRC-8 (polynomial 0x31,
init 0xFF); every word read is checked. By default one `measure_single_shot` per reading
(SCD41): the node deep-sleeps for minutes between readings, and single shot lets the sensor
idle between them instead of running its 5-s periodic cycle all the time, with no state to
carry across the MCU's deep sleep. `single_shot=False` uses start / wait for data ready /
read / stop periodic measurement instead, which the SCD40 (no single shot) supports too.
"""

import time

try:
    from micropython import const
except ImportError:  # CPython: the host tests exercise the pure functions

    def const(x):
        return x


from payload import FLAG_CO2_FAULT

ADDRESS = const(0x62)

_CMD_START_PERIODIC = const(0x21B1)
_CMD_READ_MEASUREMENT = const(0xEC05)
_CMD_STOP_PERIODIC = const(0x3F86)
_CMD_DATA_READY = const(0xE4B8)
_CMD_SINGLE_SHOT = const(0x219D)
_CMD_SET_AMBIENT_PRESSURE = const(0xE000)

_POWER_UP_MS = const(1000)  # from power-up to idle, when the sensor ignores commands
_EXEC_MS = const(1)  # execution time of reads and of set_ambient_pressure
_STOP_MS = const(500)  # stop_periodic_measurement: no command may follow sooner
_MEASURE_MS = const(5000)  # single shot, and the periodic signal update interval
_READY_POLL_MS = const(100)
_READY_SLACK_MS = const(1000)  # beyond the nominal measuring time, before giving up
_PRESSURE_MIN = const(700)  # hPa, the range set_ambient_pressure accepts
_PRESSURE_MAX = const(1200)
_CO2_MIN = const(100)  # ppm; the sensor's output range is 0..40000, and air never has < 100
_CO2_MAX = const(40000)


def crc8(buf, start=0, length=2):
    """Sensirion CRC-8 of buf[start:start+length]: poly 0x31, init 0xFF, no reflection or XOR."""
    crc = 0xFF
    for i in range(start, start + length):
        crc ^= buf[i]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class SCD4x:
    """SCD4x at `address` on a machine.I2C. Constructing it does not touch the bus.

    `pressure_hpa`, when set (e.g. from the BME280), is sent before each measurement for the
    sensor's pressure compensation.
    """

    def __init__(self, i2c, address=ADDRESS, *, single_shot=True, measure_ms=_MEASURE_MS):
        self.i2c = i2c
        self.address = address
        self.single_shot = single_shot
        self.measure_ms = measure_ms
        self.pressure_hpa = None
        self.errors = 0  # readings that failed: no ACK, CRC mismatch, timeout, implausible
        self.temperature = None  # degC and %RH of the last good reading (on-board, self-heated)
        self.humidity = None
        self._buf = bytearray(9)
        self._word = memoryview(self._buf)[:3]
        self._cmd = bytearray(2)
        self._cmd_arg = bytearray(5)
        self._quiet_until = None  # ticks_ms before which no command may be sent

    def read_into(self, reading):
        """Stores co2 (ppm, None when not valid) into `reading`; returns flags."""
        reading["co2"] = None
        self.temperature = self.humidity = None
        try:
            ok = self._measure(reading)
        except OSError:
            ok = False
        if not ok:
            self.errors += 1
            return FLAG_CO2_FAULT
        return 0

    def _measure(self, reading):
        hpa = self.pressure_hpa
        if hpa is not None and _PRESSURE_MIN <= hpa <= _PRESSURE_MAX:
            self._write_word(_CMD_SET_AMBIENT_PRESSURE, int(hpa + 0.5))
        start = _CMD_SINGLE_SHOT if self.single_shot else _CMD_START_PERIODIC
        try:
            self._send(start)
        except OSError:
            # Still booting (just powered), or still in periodic mode from a wake cut short
            # before its stop: wait out the boot, stop, retry once.
            time.sleep_ms(_POWER_UP_MS)
            self._send(_CMD_STOP_PERIODIC, _STOP_MS)
            self._send(start)
        try:
            if self.single_shot:
                time.sleep_ms(self.measure_ms)
                deadline = time.ticks_add(time.ticks_ms(), _READY_SLACK_MS)
            else:
                deadline = time.ticks_add(time.ticks_ms(), self.measure_ms + _READY_SLACK_MS)
            if not self._wait_ready(deadline):
                return False
            self._send(_CMD_READ_MEASUREMENT, _EXEC_MS)
            if not self._read_words(3):
                return False
        finally:
            if not self.single_shot:
                self._send(_CMD_STOP_PERIODIC, _STOP_MS)
        b = self._buf
        co2 = (b[0] << 8) | b[1]
        if co2 < _CO2_MIN or co2 > _CO2_MAX:
            return False
        reading["co2"] = co2
        self.temperature = -45 + 175 * ((b[3] << 8) | b[4]) / 65535
        self.humidity = 100 * ((b[6] << 8) | b[7]) / 65535
        return True

    def _wait_ready(self, deadline):
        while True:
            self._send(_CMD_DATA_READY, _EXEC_MS)
            if not self._read_words(1):
                return False
            if ((self._buf[0] << 8) | self._buf[1]) & 0x07FF:
                return True
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return False
            time.sleep_ms(_READY_POLL_MS)

    def _wait_quiet(self):
        if self._quiet_until is not None:
            wait = time.ticks_diff(self._quiet_until, time.ticks_ms())
            if wait > 0:
                time.sleep_ms(wait)
            self._quiet_until = None

    def _write(self, buf, exec_ms):
        self._wait_quiet()
        acked = self.i2c.writeto(self.address, buf)
        if acked is not None and acked < len(buf):
            raise OSError("SCD4x did not acknowledge the command")
        if exec_ms:
            self._quiet_until = time.ticks_add(time.ticks_ms(), exec_ms)

    def _send(self, cmd, exec_ms=0):
        c = self._cmd
        c[0] = cmd >> 8
        c[1] = cmd & 0xFF
        self._write(c, exec_ms)

    def _write_word(self, cmd, word):
        c = self._cmd_arg
        c[0] = cmd >> 8
        c[1] = cmd & 0xFF
        c[2] = (word >> 8) & 0xFF
        c[3] = word & 0xFF
        c[4] = crc8(c, 2)
        self._write(c, _EXEC_MS)

    def _read_words(self, n):
        # 1 or 3 words (3 bytes each) into the buffer; False when any CRC does not match.
        self._wait_quiet()
        self.i2c.readfrom_into(self.address, self._word if n == 1 else self._buf)
        b = self._buf
        for i in range(0, 3 * n, 3):
            if crc8(b, i) != b[i + 2]:
                return False
        return True
