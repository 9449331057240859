"""The board layer: the only place firmware reaches hardware.

Reads `board.json` (one file of `boards/`, copied to the flash by the flasher) and builds
buses and drivers from its pin map. The same code runs on an ESP32 and on the virtual
board, whose `machine` module simulates the peripherals.
"""

import json

import machine

BOARD_FILE = "board.json"


class BoardError(Exception):
    """The board definition is missing or lacks what the firmware asked for."""


class Board:
    def __init__(self, definition):
        self.d = definition
        self.name = definition.get("name", "?")
        self._i2c = None
        self.rtc = machine.RTC()

    @classmethod
    def load(cls, path=BOARD_FILE):
        try:
            with open(path) as f:
                return cls(json.load(f))
        except OSError:
            raise BoardError("no %s on the flash: flash the node with `allmende node flash`" % path)
        except ValueError:
            raise BoardError("%s is not valid JSON" % path)

    def _section(self, name):
        section = self.d.get(name)
        if not section:
            raise BoardError("board %s has no %s" % (self.name, name))
        return section

    def power_sensors(self, on):
        power = self.d.get("power")
        if power and power.get("vext") is not None:
            level = power.get("vext_on", 0)
            machine.Pin(power["vext"], machine.Pin.OUT, value=level if on else 1 - level)

    def i2c(self):
        if self._i2c is None:
            c = self._section("i2c")
            self._i2c = machine.I2C(c["id"], scl=machine.Pin(c["scl"]), sda=machine.Pin(c["sda"]),
                                    freq=c.get("freq", 100000))
        return self._i2c

    def sensor(self, name):
        """The driver for an attached sensor, or None when the board has none fitted."""
        cfg = self.d.get("sensors", {}).get(name)
        if not cfg:
            return None
        if name == "sds011":
            from drivers.sds011 import SDS011

            u = self._section("uart")["sds011"]
            uart = machine.UART(u["id"], baudrate=u.get("baudrate", 9600), tx=u["tx"], rx=u["rx"],
                                timeout=50)
            return SDS011(uart)
        if name == "bme280":
            from drivers.bme280 import BME280

            return BME280(self.i2c(), address=cfg["address"])
        if name == "scd4x":
            from drivers.scd4x import SCD4x

            return SCD4x(self.i2c(), address=cfg["address"])
        raise BoardError("unknown sensor %s" % name)

    def radio(self):
        r = self._section("radio")
        s = r["spi"]
        spi = machine.SPI(s["id"], baudrate=s.get("baudrate", 1000000), sck=machine.Pin(s["sck"]),
                          mosi=machine.Pin(s["mosi"]), miso=machine.Pin(s["miso"]))
        cs = machine.Pin(r["cs"], machine.Pin.OUT, value=1)
        reset = machine.Pin(r["reset"], machine.Pin.OUT, value=1)
        if r["chip"].startswith("sx127"):
            from drivers.sx127x import SX127x

            dio0 = machine.Pin(r["dio0"], machine.Pin.IN) if r.get("dio0") is not None else None
            return SX127x(spi, cs, reset, dio0=dio0)
        if r["chip"].startswith("sx126"):
            from drivers.sx126x import SX126x

            dio1 = machine.Pin(r["dio1"], machine.Pin.IN) if r.get("dio1") is not None else None
            return SX126x(spi, cs, reset, machine.Pin(r["busy"], machine.Pin.IN), dio1=dio1,
                          tcxo=r.get("tcxo", False))
        raise BoardError("unsupported radio chip %s" % r["chip"])

    def battery_volts(self):
        b = self.d.get("battery")
        if not b:
            return None
        if b.get("enable") is not None:
            machine.Pin(b["enable"], machine.Pin.OUT, value=1)
        adc = machine.ADC(machine.Pin(b["adc"]), atten=machine.ADC.ATTN_11DB)
        return round(adc.read_uv() * b["divider"] / 1000000, 2)

    def reset_cause(self):
        return machine.reset_cause()

    def woke_from_deepsleep(self):
        return machine.reset_cause() == machine.DEEPSLEEP_RESET

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def unique_id(self):
        return machine.unique_id()

    def deepsleep(self, ms):
        machine.deepsleep(ms)

    def reset(self):
        machine.reset()


def release_drivers():
    """Drops the driver modules from the heap: a wake uses the sensors, then the radio, and
    the two sets of code need not be in RAM at once (ESP32 heap is ~100 KB)."""
    import gc
    import sys

    for name in [n for n in sys.modules if n.startswith("drivers.")]:
        del sys.modules[name]
    gc.collect()
