"""Simulated Bosch BME280 for the virtual board's I2C bus: register map, calibration, forced mode.

The chip holds realistic factory calibration; a forced-mode conversion turns the environment's
temperature, pressure and humidity into the raw ADC values that the compensation formulas map
back onto them. The inversion uses the datasheet's double-precision formulas (section 8.1),
an implementation independent of the driver's integer ones, so the two check each other.

Fault modes (`env.fault("bme280")`): "nack" (every transfer raises OSError(ENODEV)),
"bad_chip_id" (answers 0x58, a BMP280), "busy" (the conversion never finishes), "no_data" (the
data registers keep their reset value 0x80000, as when a conversion is skipped).
"""

import errno
import time

CHIP_ID = 0x60
_REG_CALIB_TP = 0x88
_REG_CALIB_H = 0xE1
_REG_ID = 0xD0
_REG_RESET = 0xE0
_REG_CTRL_HUM = 0xF2
_REG_STATUS = 0xF3
_REG_CTRL_MEAS = 0xF4
_REG_CONFIG = 0xF5
_REG_DATA = 0xF7
_RESET_WORD = 0xB6
_WRITABLE = (_REG_RESET, _REG_CTRL_HUM, _REG_CTRL_MEAS, _REG_CONFIG)
_SKIPPED_20 = 0x80000  # a skipped conversion reads as this
_SKIPPED_16 = 0x8000
_OSRS = (0, 1, 2, 4, 8, 16, 16, 16)  # register code -> oversampling factor (0: skipped)

# A typical chip's trimming parameters dig_T1..dig_P9 (those of the BMP280 datasheet's worked
# example) and dig_H1..dig_H6.
CALIBRATION = (27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
               75, 362, 0, 313, 50, 30)


def _le16(regs, addr, value):
    value &= 0xFFFF
    regs[addr] = value & 0xFF
    regs[addr + 1] = value >> 8


def calibration_bytes(cal):
    """The NVM contents (0x88..0xA1, 0xE1..0xE7) that hold `cal` in the chip's layout."""
    tp = bytearray(26)
    for i in range(12):
        _le16(tp, 2 * i, cal[i])
    tp[25] = cal[12]
    h = bytearray(7)
    _le16(h, 0, cal[13])
    h[2] = cal[14]
    h4, h5 = cal[15] & 0xFFF, cal[16] & 0xFFF
    h[3] = h4 >> 4
    h[4] = (h4 & 0x0F) | ((h5 & 0x0F) << 4)
    h[5] = h5 >> 4
    h[6] = cal[17] & 0xFF
    return tp, h


# The datasheet's double-precision compensation (section 8.1).

def t_fine_double(cal, adc_t):
    t1 = cal[0]
    var1 = (adc_t / 16384.0 - t1 / 1024.0) * cal[1]
    d = adc_t / 131072.0 - t1 / 8192.0
    var2 = d * d * cal[2]
    return var1 + var2


def temperature_double(cal, adc_t):
    return t_fine_double(cal, adc_t) / 5120.0


def pressure_double(cal, fine, adc_p):
    var1 = int(fine) / 2.0 - 64000.0
    var2 = var1 * var1 * cal[8] / 32768.0
    var2 = var2 + var1 * cal[7] * 2.0
    var2 = var2 / 4.0 + cal[6] * 65536.0
    var1 = (cal[5] * var1 * var1 / 524288.0 + cal[4] * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * cal[3]
    if var1 == 0.0:
        return 0.0
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = cal[11] * p * p / 2147483648.0
    var2 = p * cal[10] / 32768.0
    return p + (var1 + var2 + cal[9]) / 16.0


def humidity_double(cal, fine, adc_h):
    h = int(fine) - 76800.0
    h = (adc_h - (cal[15] * 64.0 + cal[16] / 16384.0 * h)) * (
        cal[13] / 65536.0 * (1.0 + cal[17] / 67108864.0 * h * (1.0 + cal[14] / 67108864.0 * h)))
    h = h * (1.0 - cal[12] * h / 524288.0)
    return min(100.0, max(0.0, h))


def _invert(f, target, bits, shift, rising):
    # The raw value (a multiple of 2**shift below 2**bits) whose compensated value lies closest
    # to target; f is monotonic.
    lo, hi = 0, ((1 << bits) - 1) >> shift
    while lo < hi:
        mid = (lo + hi) // 2
        v = f(mid << shift)
        if (v < target) if rising else (v > target):
            lo = mid + 1
        else:
            hi = mid
    if lo > 0 and abs(f((lo - 1) << shift) - target) < abs(f(lo << shift) - target):
        lo -= 1
    return lo << shift


def resolution_bits(osrs):
    """Bits a temperature or pressure conversion resolves: 16 + (osrs - 1), 20 at most."""
    return min(20, 15 + osrs) if osrs else 0


def raw_values(cal, temperature, pressure_hpa, humidity, *, osrs_t=5, osrs_p=5):
    """(adc_t, adc_p, adc_h) for which the compensation yields these values.

    osrs_t and osrs_p are the register codes: their oversampling sets how many of the 20 bits
    the conversion resolves (the filter is off).
    """
    shift_t = 20 - resolution_bits(osrs_t)
    shift_p = 20 - resolution_bits(osrs_p)
    adc_t = _invert(lambda r: temperature_double(cal, r), temperature, 20, shift_t, True)
    fine = t_fine_double(cal, adc_t)
    adc_p = _invert(lambda r: pressure_double(cal, fine, r), pressure_hpa * 100.0, 20, shift_p,
                    False)
    adc_h = _invert(lambda r: humidity_double(cal, fine, r), humidity, 16, 0, True)
    return adc_t, adc_p, adc_h


class BME280Sim:
    """I2C device (see machine.I2C of the virtual board): register reads and writes."""

    def __init__(self, env, address=0x76, *, calibration=CALIBRATION):
        self.env = env
        self.address = address
        self.cal = calibration
        self.regs = bytearray(256)
        self._pointer = 0
        self._done_at = None  # ticks_ms when the running conversion ends
        self.conversions = 0
        self._power_on()

    def _power_on(self):
        r = self.regs
        for i in range(256):
            r[i] = 0
        r[_REG_ID] = CHIP_ID
        tp, h = calibration_bytes(self.cal)
        r[_REG_CALIB_TP:_REG_CALIB_TP + 26] = tp
        r[_REG_CALIB_H:_REG_CALIB_H + 7] = h
        r[0xF7] = r[0xFA] = 0x80  # press and temp reset value 0x80000
        r[0xFD] = 0x80  # hum reset value 0x8000
        self._done_at = None
        self._osrs_h = 0  # ctrl_hum as last latched by a write of ctrl_meas

    def _check_ack(self):
        if self.env.fault("bme280") == "nack":
            raise OSError(errno.ENODEV)

    def write(self, memaddr, data):
        self._check_ack()
        if memaddr is None:
            if not data:
                return
            memaddr, data = data[0], data[1:]
        # I2C writes are (register, value) pairs after the first register: no auto-increment.
        self._write_reg(memaddr, data[0] if data else None)
        for i in range(1, len(data) - 1, 2):
            self._write_reg(data[i], data[i + 1])
        self._pointer = memaddr

    def read(self, memaddr, n):
        self._check_ack()
        self._update()
        if memaddr is None:
            memaddr = self._pointer
        out = bytearray(n)
        for i in range(n):
            out[i] = self._read_reg((memaddr + i) & 0xFF)
        self._pointer = (memaddr + n) & 0xFF
        return bytes(out)

    def _read_reg(self, reg):
        if reg == _REG_ID and self.env.fault("bme280") == "bad_chip_id":
            return 0x58
        if reg == _REG_STATUS:
            return 0x08 if self._done_at is not None else 0x00
        if reg == _REG_CTRL_MEAS and self._done_at is None:
            return self.regs[reg] & 0xFC  # back in sleep mode after a forced conversion
        return self.regs[reg]

    def _write_reg(self, reg, value):
        if value is None or reg not in _WRITABLE:
            return
        if reg == _REG_RESET:
            if value == _RESET_WORD:
                self._power_on()
            return
        self.regs[reg] = value
        if reg == _REG_CTRL_MEAS:
            self._osrs_h = self.regs[_REG_CTRL_HUM] & 0x07  # ctrl_hum takes effect only now
            if value & 0x03 and self._done_at is None:  # forced (01/10) or normal (11)
                self._done_at = time.ticks_add(time.ticks_ms(), self.measure_ms())

    def measure_ms(self):
        """Typical conversion time (datasheet 9.1) for the oversampling now set."""
        meas = self.regs[_REG_CTRL_MEAS]
        t, p, h = _OSRS[(meas >> 5) & 7], _OSRS[(meas >> 2) & 7], _OSRS[self._osrs_h]
        return int(1 + 2 * t + (2 * p + 0.5 if p else 0) + (2 * h + 0.5 if h else 0) + 0.5)

    def _update(self):
        if self._done_at is None or time.ticks_diff(time.ticks_ms(), self._done_at) < 0:
            return
        if self.env.fault("bme280") == "busy":
            return
        self._done_at = None
        meas = self.regs[_REG_CTRL_MEAS]
        adc_t = adc_p = _SKIPPED_20
        adc_h = _SKIPPED_16
        if self.env.fault("bme280") != "no_data":
            self.conversions += 1
            env = self.env
            osrs_t, osrs_p = (meas >> 5) & 7, (meas >> 2) & 7
            t, p, h = raw_values(self.cal, env.value("temperature"), env.value("pressure"),
                                 env.value("humidity"), osrs_t=osrs_t or 1, osrs_p=osrs_p or 1)
            if osrs_t:
                adc_t = t
                if osrs_p:
                    adc_p = p
                if self._osrs_h:
                    adc_h = h
        r = self.regs
        r[0xF7], r[0xF8], r[0xF9] = adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4
        r[0xFA], r[0xFB], r[0xFC] = adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4
        r[0xFD], r[0xFE] = adc_h >> 8, adc_h & 0xFF
