"""Wires the simulated devices to the virtual board's buses and pins, per the board definition.

Built from the hardware definition in the state directory when the board powers on
(vboot), or on first use where a test drives the runtime directly. `machine` asks here which device answers an I2C address,
sits on a UART, or is selected on an SPI bus by its chip-select pin.
"""

import vstate

_hw = None


class _Hardware:
    def __init__(self):
        from sim_env import Environment

        board = vstate.hardware()
        sim = vstate.sim()
        self.env = env = Environment.from_state()
        self.i2c = {}
        self.uart = {}
        self.spi = {}  # bus id -> {cs pin: device}
        self.selected = {}  # bus id -> device
        self.cs = {}  # cs pin -> (bus id, device)
        self.driven = {}  # pin -> (device, method name) for pins a device drives
        self.resets = {}  # pin -> device
        self.adc = {}
        sensors = board.get("sensors", {})
        i2c_bus = board.get("i2c", {}).get("id", 0)
        bus = self.i2c.setdefault(i2c_bus, {})
        if sensors.get("bme280"):
            from sim_bme280 import BME280Sim

            addr = sensors["bme280"]["address"]
            bus[addr] = BME280Sim(env, addr)
        if sensors.get("scd4x"):
            from sim_scd4x import SCD4xSim

            bus[sensors["scd4x"]["address"]] = SCD4xSim(env)
        uart = board.get("uart", {}).get("sds011")
        if sensors.get("sds011") and uart:
            from sim_sds011 import SDS011Sim

            self.uart[uart["id"]] = SDS011Sim(env)
        radio = board.get("radio")
        medium = sim.get("medium")
        if radio and medium:
            from sim_radio_link import RadioLink

            link = RadioLink(medium[0], medium[1], sim.get("node_id", "0242ac000001"))
            if radio["chip"].startswith("sx127"):
                from sim_sx127x import SX127xSim

                dev = SX127xSim(link)
            else:
                from sim_sx126x import SX126xSim

                dev = SX126xSim(link)
            spi_id = radio["spi"]["id"]
            self.spi.setdefault(spi_id, {})[radio["cs"]] = dev
            self.cs[radio["cs"]] = (spi_id, dev)
            for pin_name in ("dio0", "dio1"):
                if radio.get(pin_name) is not None:
                    self.driven[radio[pin_name]] = (dev, "irq")
            if radio.get("busy") is not None:
                self.driven[radio["busy"]] = (dev, "busy")
            if radio.get("reset") is not None:
                self.resets[radio["reset"]] = dev
        battery = board.get("battery")
        if battery:
            self.adc[battery["adc"]] = int(env.value("battery") / battery["divider"] * 1_000_000)


def _get():
    global _hw
    if _hw is None:
        _hw = _Hardware()
    return _hw


def power_on():
    """Builds the simulated hardware now, before any firmware runs: like silicon it exists
    first, and its memory sits below the firmware's instead of fragmenting it."""
    _get()


def environment():
    return _get().env


def i2c_device(bus, addr):
    return _get().i2c.get(bus, {}).get(addr)


def i2c_addresses(bus):
    return sorted(_get().i2c.get(bus, {}))


def uart_device(uart_id):
    return _get().uart.get(uart_id)


def spi_selected(bus):
    return _get().selected.get(bus)


def pin_write(pin, level):
    hw = _get()
    if pin in hw.cs:
        bus, dev = hw.cs[pin]
        if level:
            if hw.selected.get(bus) is dev:
                dev.deselect()
                del hw.selected[bus]
        else:
            hw.selected[bus] = dev
            dev.select()
    elif pin in hw.resets:
        reset = getattr(hw.resets[pin], "reset", None)
        if reset is not None and not level:
            reset()


def pin_level(pin):
    hw = _get()
    if pin in hw.driven:
        dev, method = hw.driven[pin]
        return 1 if getattr(dev, method)() else 0
    return None


def adc_microvolts(pin):
    return _get().adc.get(pin, 0)
