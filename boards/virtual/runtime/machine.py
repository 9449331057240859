"""`machine` for the virtual board: the ESP32 API over simulated peripherals.

The unix port's built-in `machine` lacks Pin, I2C, SPI, UART, RTC, ADC, WDT and deep sleep;
this module shadows it (it comes first on MICROPYPATH). Buses route each transfer to the
simulated device that `vdevices` attached for the board, so drivers talk real bytes.
Process lifecycle (deep sleep, reset, watchdog) is shared with the host launcher through
files in the state directory (see `vstate`).
"""

import errno
import sys
import time

import vdevices
import vstate
from umachine import Signal, idle, time_pulse_us  # noqa: F401  (re-exported like on a board)

# Reset causes, values as on the ESP32 port.
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

# Wake reasons.
PIN_WAKE = 2
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4

# Exit codes understood by the host launcher (allmende.boards.virtual.node).
EXIT_DEEPSLEEP = 100
EXIT_RESET = 101


def reset_cause():
    return vstate.boot().get("cause", PWRON_RESET)


def wake_reason():
    return TIMER_WAKE if reset_cause() == DEEPSLEEP_RESET else 0


def unique_id():
    return vstate.node_id_bytes()


def freq(hz=None):
    return 240_000_000


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def lightsleep(ms=None):
    time.sleep_ms(ms or 0)


def deepsleep(ms=0):
    """Ends this wake: RTC memory is kept, the launcher restarts the board after `ms`."""
    vstate.leave("deepsleep", ms)
    sys.exit(EXIT_DEEPSLEEP)


def reset():
    vstate.leave("reset", 0)
    sys.exit(EXIT_RESET)


def soft_reset():
    reset()


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        self.id = id
        self._level = 0
        if value is not None:
            self.value(value)

    def init(self, mode=-1, pull=-1, *, value=None):
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            driven = vdevices.pin_level(self.id)
            return self._level if driven is None else driven
        self._level = 1 if v else 0
        vdevices.pin_write(self.id, self._level)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3):
        # Drivers poll; an ISR cannot be emulated faithfully on a single-threaded port.
        return None


class I2C:
    def __init__(self, id=0, *, scl=None, sda=None, freq=400_000, timeout=50_000):
        self.id = id

    def _device(self, addr):
        dev = vdevices.i2c_device(self.id, addr)
        if dev is None:
            raise OSError(errno.ENODEV)
        return dev

    def scan(self):
        return vdevices.i2c_addresses(self.id)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        data = self._device(addr).read(memaddr, len(buf))
        buf[: len(data)] = data

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        return bytes(self._device(addr).read(memaddr, nbytes))

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self._device(addr).write(memaddr, bytes(buf))

    def readfrom_into(self, addr, buf, stop=True):
        data = self._device(addr).read(None, len(buf))
        buf[: len(data)] = data

    def readfrom(self, addr, nbytes, stop=True):
        return bytes(self._device(addr).read(None, nbytes))

    def writeto(self, addr, buf, stop=True):
        self._device(addr).write(None, bytes(buf))
        return len(buf)


SoftI2C = I2C


class SPI:
    MSB = 0
    LSB = 1

    def __init__(self, id=1, baudrate=1_000_000, *, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        self.id = id

    def init(self, *args, **kwargs):
        pass

    def deinit(self):
        pass

    def _xfer(self, tx):
        dev = vdevices.spi_selected(self.id)
        if dev is None:  # nobody listening: MISO floats high
            return b"\xff" * len(tx)
        return dev.transfer(bytes(tx))

    def write(self, buf):
        self._xfer(buf)

    def read(self, nbytes, write=0):
        return bytes(self._xfer(bytes([write]) * nbytes))

    def readinto(self, buf, write=0):
        buf[:] = self._xfer(bytes([write]) * len(buf))

    def write_readinto(self, write_buf, read_buf):
        read_buf[:] = self._xfer(write_buf)


SoftSPI = SPI


class UART:
    def __init__(self, id, baudrate=115200, *, tx=None, rx=None, timeout=0, rxbuf=256, **kw):
        self.id = id
        self._timeout = timeout
        self._rx = bytearray()
        self._rxbuf = rxbuf

    def init(self, baudrate=115200, *, timeout=None, **kw):
        if timeout is not None:
            self._timeout = timeout

    def deinit(self):
        pass

    def _pull(self):
        dev = vdevices.uart_device(self.id)
        if dev is not None:
            self._rx.extend(dev.host_read_available())
            # A real UART drops what does not fit its ring buffer.
            if len(self._rx) > self._rxbuf:
                self._rx = self._rx[-self._rxbuf :]

    def any(self):
        self._pull()
        return len(self._rx)

    def _wait(self, nbytes):
        deadline = time.ticks_add(time.ticks_ms(), self._timeout)
        self._pull()
        while len(self._rx) < nbytes and time.ticks_diff(deadline, time.ticks_ms()) > 0:
            time.sleep_ms(5)
            self._pull()

    def read(self, nbytes=None):
        self._wait(nbytes or 1)
        if not self._rx:
            return None
        n = len(self._rx) if nbytes is None else min(nbytes, len(self._rx))
        out = bytes(self._rx[:n])
        self._rx = self._rx[n:]
        return out

    def readinto(self, buf, nbytes=None):
        data = self.read(len(buf) if nbytes is None else nbytes)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        self._wait(1)
        i = self._rx.find(b"\n")
        n = len(self._rx) if i < 0 else i + 1
        return self.read(n) if n else None

    def write(self, buf):
        dev = vdevices.uart_device(self.id)
        if dev is not None:
            dev.host_write(bytes(buf))
        return len(buf)

    def flush(self):
        pass

    def txdone(self):
        return True


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_12BIT = 3

    def __init__(self, pin, *, atten=3):
        self._pin = pin.id if isinstance(pin, Pin) else pin

    def atten(self, atten):
        pass

    def width(self, width):
        pass

    def read_uv(self):
        return vdevices.adc_microvolts(self._pin)

    def read_u16(self):
        # 11 dB attenuation: full scale about 3.1 V.
        return min(65535, self.read_uv() * 65535 // 3_100_000)

    def read(self):
        return self.read_u16() >> 4


class RTC:
    def __init__(self):
        pass

    def memory(self, data=None):
        if data is None:
            return vstate.rtc_memory()
        vstate.set_rtc_memory(bytes(data))
        return None

    def datetime(self, dt=None):
        if dt is not None:
            return None
        t = time.localtime()
        return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)

    def init(self, dt=None):
        pass


class WDT:
    """The host launcher resets the board when `feed` is not called within the timeout."""

    def __init__(self, id=0, timeout=5000):
        vstate.watchdog_arm(timeout)

    def feed(self):
        vstate.watchdog_feed()
