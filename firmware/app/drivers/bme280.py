"""Bosch BME280 temperature, humidity and pressure sensor over I2C.

Forced mode, filter off: one conversion per reading, then the sensor sleeps. Oversampling
pressure x16 (20 bit, 0.16 Pa), temperature x2 (17 bit), humidity x1 (always 16 bit): the
datasheet's weather profile uses x1 everywhere (16 bit, 2.6 Pa steps), but 46 ms of a
sub-milliamp conversion cost nothing next to the particle sensor's fan.
Raw values are turned into physical ones with the datasheet's integer compensation formulas
(section 4.2.3; the 64-bit pressure variant), using the chip's factory calibration.
"""

import struct
import time

try:
    from micropython import const
except ImportError:  # CPython: the host tests exercise the pure functions

    def const(x):
        return x


from payload import FLAG_CLIMATE_FAULT

ADDRESS = const(0x76)  # SDO to GND; 0x77 with SDO to VDDIO
CHIP_ID = const(0x60)

_REG_CALIB_TP = const(0x88)  # 0x88..0xA1: dig_T1..dig_P9, a reserved byte, dig_H1
_CALIB_TP_LEN = const(26)
_REG_CALIB_H = const(0xE1)  # 0xE1..0xE7: dig_H2..dig_H6
_CALIB_H_LEN = const(7)
_REG_ID = const(0xD0)
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)  # press[3], temp[3], hum[2]: read in one burst so they belong together
_DATA_LEN = const(8)

_STATUS_MEASURING = const(0x08)
_STATUS_IM_UPDATE = const(0x01)
_OSRS_X1 = const(1)
_OSRS_X2 = const(2)
_OSRS_X16 = const(5)
_CTRL_HUM = const(_OSRS_X1)  # takes effect with the next write of ctrl_meas
_CTRL_MEAS_FORCED = const((_OSRS_X2 << 5) | (_OSRS_X16 << 2) | 0x01)  # osrs_t, osrs_p, forced
_CONFIG = const(0)  # filter off; the standby time does not matter in forced mode

# t_measure,max = 1.25 + 2.3 * 2 + (2.3 * 16 + 0.575) + (2.3 * 1 + 0.575) = 46.1 ms
_MEASURE_MS = const(47)
_TIMEOUT_MS = const(100)
_NVM_MS = const(10)  # NVM copy after power-on takes 2 ms

_SKIPPED_20 = const(0x80000)  # what a skipped (or never run) conversion reads as
_SKIPPED_16 = const(0x8000)

# Plausibility: the sensor's operating range; anything outside is a fault, not a reading.
_T_MIN = const(-4000)  # 0.01 degC
_T_MAX = const(8500)
_P_MIN = const(30000 * 256)  # Pa * 256
_P_MAX = const(110000 * 256)


class ChipIdError(OSError):
    """The device at the address is not a BME280 (a BMP280 answers 0x56..0x58)."""


def parse_calibration(tp, h):
    """The 18 trimming parameters dig_T1..dig_H6 from the bytes at 0x88..0xA1 and 0xE1..0xE7."""
    t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9 = struct.unpack_from("<HhhHhhhhhhhh", tp, 0)
    h1 = tp[25]
    h2 = struct.unpack_from("<h", h, 0)[0]
    h3 = h[2]
    # dig_H4 and dig_H5 are 12-bit values sharing 0xE5; their high bytes are signed.
    e4 = h[3] - 256 if h[3] > 127 else h[3]
    e6 = h[5] - 256 if h[5] > 127 else h[5]
    h4 = (e4 << 4) | (h[4] & 0x0F)
    h5 = (e6 << 4) | (h[4] >> 4)
    h6 = h[6] - 256 if h[6] > 127 else h[6]
    return (t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9, h1, h2, h3, h4, h5, h6)


def t_fine(cal, adc_t):
    """The datasheet's t_fine (fine temperature, shared by the other two formulas)."""
    t1 = cal[0]
    var1 = (((adc_t >> 3) - (t1 << 1)) * cal[1]) >> 11
    d = (adc_t >> 4) - t1
    var2 = (((d * d) >> 12) * cal[2]) >> 14
    return var1 + var2


def temperature(fine):
    """Temperature in 0.01 degC from t_fine."""
    return (fine * 5 + 128) >> 8


def _div_trunc(a, b):
    # C integer division truncates towards zero; Python's // floors.
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def pressure(cal, fine, adc_p):
    """Pressure in Pa * 256 (Q24.8), the 64-bit formula; 0 when the calibration is unusable."""
    p1 = cal[3]
    var1 = fine - 128000
    var2 = var1 * var1 * cal[8]
    var2 = var2 + ((var1 * cal[7]) << 17)
    var2 = var2 + (cal[6] << 35)
    var1 = ((var1 * var1 * cal[5]) >> 8) + ((var1 * cal[4]) << 12)
    var1 = (((1 << 47) + var1) * p1) >> 33
    if var1 == 0:
        return 0
    p = 1048576 - adc_p
    p = _div_trunc(((p << 31) - var2) * 3125, var1)
    var1 = (cal[11] * (p >> 13) * (p >> 13)) >> 25
    var2 = (cal[10] * p) >> 19
    return ((p + var1 + var2) >> 8) + (cal[9] << 4)


def humidity(cal, fine, adc_h):
    """Relative humidity in %RH * 1024 (Q22.10), clamped to 0..100 % by the formula."""
    v = fine - 76800
    offset = (((adc_h << 14) - (cal[15] << 20) - (cal[16] * v)) + 16384) >> 15
    slope = (((((v * cal[17]) >> 10) * (((v * cal[14]) >> 11) + 32768)) >> 10) + 2097152) * cal[13]
    v = offset * ((slope + 8192) >> 14)
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * cal[12]) >> 4)
    if v < 0:
        v = 0
    if v > 419430400:
        v = 419430400
    return v >> 12


class BME280:
    """BME280 at `address` on a machine.I2C. Constructing it does not touch the bus."""

    def __init__(self, i2c, address=ADDRESS):
        self.i2c = i2c
        self.address = address
        self.cal = None  # read on the first reading, kept while the chip id stays right
        self.errors = 0  # readings that failed (bus error, wrong chip, timeout)
        self._one = bytearray(1)
        self._data = bytearray(_DATA_LEN)

    def read_into(self, reading):
        """Stores temperature (degC), humidity (%RH), pressure (hPa) into `reading`; returns flags.

        A quantity that is not valid is None; any fault sets FLAG_CLIMATE_FAULT.
        """
        reading["temperature"] = None
        reading["humidity"] = None
        reading["pressure"] = None
        try:
            self._check_chip()
            if self.cal is None:
                self.cal = self._read_calibration()
            if not self._measure():
                self.errors += 1
                return FLAG_CLIMATE_FAULT
        except OSError:  # bus error (no ACK) or ChipIdError
            self.cal = None
            self.errors += 1
            return FLAG_CLIMATE_FAULT
        return self._compensate_into(reading)

    def _read_reg(self, reg):
        self.i2c.readfrom_mem_into(self.address, reg, self._one)
        return self._one[0]

    def _write_reg(self, reg, value):
        self._one[0] = value
        self.i2c.writeto_mem(self.address, reg, self._one)

    def _check_chip(self):
        chip = self._read_reg(_REG_ID)
        if chip != CHIP_ID:
            raise ChipIdError("BME280 at 0x%02x: chip id 0x%02x, not 0x60" % (self.address, chip))

    def _read_calibration(self):
        if not self._wait_status(_STATUS_IM_UPDATE, _NVM_MS):
            raise OSError("BME280 still copying its calibration from NVM")
        tp = bytearray(_CALIB_TP_LEN)
        h = bytearray(_CALIB_H_LEN)
        self.i2c.readfrom_mem_into(self.address, _REG_CALIB_TP, tp)
        self.i2c.readfrom_mem_into(self.address, _REG_CALIB_H, h)
        cal = parse_calibration(tp, h)
        # dig_T1 and dig_P1 are never 0 on a trimmed chip; all-0x00/0xFF means a bad read.
        if cal[0] == 0 or cal[3] == 0 or cal[0] == 0xFFFF or cal[3] == 0xFFFF:
            raise OSError("BME280 calibration data unreadable")
        return cal

    def _wait_status(self, bit, timeout_ms):
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while self._read_reg(_REG_STATUS) & bit:
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return False
            time.sleep_ms(1)
        return True

    def _measure(self):
        self._write_reg(_REG_CONFIG, _CONFIG)
        self._write_reg(_REG_CTRL_HUM, _CTRL_HUM)
        self._write_reg(_REG_CTRL_MEAS, _CTRL_MEAS_FORCED)
        time.sleep_ms(_MEASURE_MS)
        if not self._wait_status(_STATUS_MEASURING, _TIMEOUT_MS):
            return False
        self.i2c.readfrom_mem_into(self.address, _REG_DATA, self._data)
        return True

    def _compensate_into(self, reading):
        d = self._data
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        if adc_t == _SKIPPED_20:
            return FLAG_CLIMATE_FAULT
        cal = self.cal
        fine = t_fine(cal, adc_t)
        t = temperature(fine)
        if t < _T_MIN or t > _T_MAX:
            return FLAG_CLIMATE_FAULT  # P and H depend on t_fine: none of them is trustworthy
        reading["temperature"] = t / 100
        flags = 0
        p = pressure(cal, fine, adc_p) if adc_p != _SKIPPED_20 else 0
        if _P_MIN <= p <= _P_MAX:
            reading["pressure"] = p / 25600
        else:
            flags = FLAG_CLIMATE_FAULT
        # The formula clamps to 0..100 %, so a stuck ADC would pass as a value: reject the rails.
        if adc_h != _SKIPPED_16 and 0 < adc_h < 0xFFFF:
            reading["humidity"] = humidity(cal, fine, adc_h) / 1024
        else:
            flags = FLAG_CLIMATE_FAULT
        return flags
