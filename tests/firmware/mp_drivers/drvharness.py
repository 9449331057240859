"""Driver-test harness (MicroPython): the virtual board's real `machine` buses, wired to
simulated devices chosen by the test instead of the board definition."""

import json

import machine
import vdevices


class Env:
    """The environment a simulated device sees: fixed values, or scripted sequences.

    A list value is a script: each read takes the next element, the last one repeats. A tuple
    value is a cycle: reads go round it.
    """

    def __init__(self, values=None, faults=None):
        self.values = dict(
            pm25=12.3, pm10=20.1, temperature=21.53, humidity=55.3, pressure=1013.25, co2=612
        )
        self.values.update(values or {})
        self.faults = dict(faults or {})
        self._turn = {}

    def value(self, name):
        v = self.values[name]
        if isinstance(v, list):
            return v.pop(0) if len(v) > 1 else v[0]
        if isinstance(v, tuple):
            i = self._turn.get(name, 0)
            self._turn[name] = i + 1
            return v[i % len(v)]
        return v

    def fault(self, device):
        return self.faults.get(device)


def attach(i2c=None, uart=None):
    """Routes machine.I2C (any bus) to `i2c` ({address: device}) and every UART to `uart`."""
    devices = i2c or {}
    vdevices.i2c_device = lambda bus, addr: devices.get(addr)
    vdevices.i2c_addresses = lambda bus: sorted(devices)
    vdevices.uart_device = lambda uart_id: uart
    return machine.I2C(0), machine.UART(2, baudrate=9600, timeout=50)


def report(result):
    print("RESULT " + json.dumps(result))
