"""Simulated Sensirion SCD4x CO2 sensor for the virtual board's I2C bus (address 0x62).

Speaks the command set a node uses: start/stop periodic measurement (5-s signal update
interval), get_data_ready_status, read_measurement (NACK when no new data, buffer emptied on
read), measure_single_shot (SCD41 only), set_ambient_pressure, get_serial_number. Words carry
the CRC-8 (poly 0x31, init 0xFF); written arguments with a wrong CRC are NACKed. As the real
sensor, it NACKs anything sent while a command is still executing, and commands that are not
allowed in the current mode.

Fault modes (`env.fault("scd4x")`): "nack" (every transfer raises OSError(ENODEV)),
"bad_crc" (every CRC the sensor sends is wrong), "not_ready" (a measurement never completes).
"""

import errno
import time

_START_PERIODIC = 0x21B1
_READ_MEASUREMENT = 0xEC05
_STOP_PERIODIC = 0x3F86
_DATA_READY = 0xE4B8
_SINGLE_SHOT = 0x219D
_SET_AMBIENT_PRESSURE = 0xE000
_GET_SERIAL = 0x3682
_ALLOWED_PERIODIC = (_READ_MEASUREMENT, _STOP_PERIODIC, _DATA_READY, _SET_AMBIENT_PRESSURE)


def crc8(data):
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class SCD4xSim:
    """I2C device (see machine.I2C of the virtual board): plain writes of commands, plain reads."""

    def __init__(self, env, *, variant="scd41", measure_ms=5000, serial=0x1A2B3C4D5E6F):
        self.env = env
        self.variant = variant
        self.measure_ms = measure_ms
        self.serial = serial
        self.periodic = False
        self.ambient_pressure = None  # hPa, as last set by the host
        self._busy_until = None  # ticks_ms until which a command executes
        self._next_sample = None  # ticks_ms of the next periodic/single-shot result
        self._single_shot = False
        self._data = None  # (co2, t_word, rh_word) not yet read, or None
        self._response = None  # words to send on the next read
        self.measurements = 0

    def _ticks(self):
        return time.ticks_ms()

    def _check_ack(self):
        if self.env.fault("scd4x") == "nack":
            raise OSError(errno.ENODEV)
        now = self._ticks()
        if self._busy_until is not None:
            if time.ticks_diff(now, self._busy_until) < 0:
                raise OSError(errno.ENODEV)  # still executing: the sensor does not ACK
            self._busy_until = None

    def _busy(self, ms):
        self._busy_until = time.ticks_add(self._ticks(), ms)

    def _update(self):
        # Makes a finished measurement available.
        if self._next_sample is None or self.env.fault("scd4x") == "not_ready":
            return
        now = self._ticks()
        if time.ticks_diff(now, self._next_sample) < 0:
            return
        env = self.env
        co2 = max(0, min(40000, int(round(env.value("co2")))))
        t = max(0, min(65535, int(round((env.value("temperature") + 45) * 65535 / 175))))
        rh = max(0, min(65535, int(round(env.value("humidity") * 65535 / 100))))
        self._data = (co2, t, rh)
        self.measurements += 1
        if self.periodic:
            self._next_sample = time.ticks_add(self._next_sample, self.measure_ms)
        else:
            self._next_sample = None

    def write(self, memaddr, data):
        self._check_ack()
        if memaddr is not None:  # a register-style write: the address is the command's first byte
            data = bytes((memaddr,)) + bytes(data)
        if len(data) < 2:
            raise OSError(errno.ENODEV)
        cmd = (data[0] << 8) | data[1]
        self._update()
        self._response = None
        if self.periodic and cmd not in _ALLOWED_PERIODIC:
            raise OSError(errno.ENODEV)
        if cmd == _START_PERIODIC:
            self.periodic = True
            self._next_sample = time.ticks_add(self._ticks(), self.measure_ms)
        elif cmd == _STOP_PERIODIC:
            self.periodic = False
            self._next_sample = None
            self._busy(500)
        elif cmd == _SINGLE_SHOT:
            if self.variant != "scd41":
                raise OSError(errno.ENODEV)
            self._next_sample = time.ticks_add(self._ticks(), self.measure_ms)
            self._busy(self.measure_ms)
        elif cmd == _DATA_READY:
            self._response = (0x8006 if self._data is not None else 0x8000,)
        elif cmd == _READ_MEASUREMENT:
            # No new data: the read that follows is NACKed.
            self._response = self._data
            self._data = None
        elif cmd == _GET_SERIAL:
            s = self.serial
            self._response = ((s >> 32) & 0xFFFF, (s >> 16) & 0xFFFF, s & 0xFFFF)
        elif cmd == _SET_AMBIENT_PRESSURE:
            if len(data) != 5 or crc8(data[2:4]) != data[4]:
                raise OSError(errno.ENODEV)
            self.ambient_pressure = (data[2] << 8) | data[3]
        else:
            raise OSError(errno.ENODEV)

    def read(self, memaddr, n):
        self._check_ack()
        if memaddr is not None:
            raise OSError(errno.ENODEV)  # no register reads on this sensor
        words = self._response
        self._response = None
        if words is None:
            raise OSError(errno.ENODEV)
        bad = self.env.fault("scd4x") == "bad_crc"
        out = bytearray()
        for w in words:
            pair = bytes((w >> 8, w & 0xFF))
            out.extend(pair)
            out.append(crc8(pair) ^ (0xFF if bad else 0))
        if n > len(out):
            out.extend(b"\xff" * (n - len(out)))  # a released bus reads as ones
        return bytes(out[:n])
