"""The air-quality node: wake, read sensors, encode, uplink, RX windows, deep sleep.

One call of `run()` is one wake. The boot counter in RTC memory counts a boot as failed
until the cycle ends healthy; after `safe_mode_after` failed boots in a row the node runs in
safe mode (essential sensors only, flagged uplinks, long sleep, no reset loops). The
watchdog is fed only after a healthy cycle.
"""


import config
import payload
import rtcmem
from board import Board, release_drivers

FIRMWARE_VERSION = "0.1.0"
SESSION_FILE = "lorawan.bin"
FPORT_CONFIG = 10  # downlink: u32 big-endian new uplink interval in seconds
_SHORT_WAIT_MS = 10_000  # a duty-cycle wait up to this is slept through, longer ones deep-slept
_JOIN_RETRY_MS = 60_000
_FAULTS = {"bme280": payload.FLAG_CLIMATE_FAULT, "sds011": payload.FLAG_PM_FAULT,
           "scd4x": payload.FLAG_CO2_FAULT}


def _log(*args):
    print("node:", *args)


class AirNode:
    def __init__(self, board, cfg, safe_mode):
        self.board = board
        self.cfg = cfg
        self.safe_mode = safe_mode
        self.buf = bytearray(payload.max_size(payload.FPORT_AIR_QUALITY, 1))
        self.reading = {}
        self.broken = 0  # fault flags of sensors whose driver could not even be built

    def measure(self):
        """Fills self.reading from every fitted sensor; a failing sensor only sets its flag.

        The SDS011 fan starts first so its warm-up overlaps the other sensors' readings.
        """
        reading = self.reading
        reading.clear()
        flags = payload.FLAG_SAFE_MODE if self.safe_mode else 0
        self.board.power_sensors(True)
        pm = self._sensor("sds011")
        if pm is not None:
            pm.warmup_ms = int(self.cfg["sds011"]["warmup_s"] * 1000)
            pm.samples = self.cfg["sds011"]["samples"]
            pm.start()
        climate = self._sensor("bme280")
        flags |= self._read(climate, "bme280", reading)
        if not self.safe_mode:  # the optional CO2 sensor is the first thing safe mode drops
            co2 = self._sensor("scd4x")
            if co2 is not None:
                co2.pressure_hpa = reading.get("pressure")
            flags |= self._read(co2, "scd4x", reading)
        flags |= self._read(pm, "sds011", reading)
        self.board.power_sensors(False)
        volts = self.board.battery_volts()
        reading["battery"] = volts
        if volts is not None and volts < self.cfg["low_battery_v"]:
            flags |= payload.FLAG_LOW_BATTERY
        reading["flags"] = flags
        return reading

    def _sensor(self, name):
        try:
            return self.board.sensor(name)
        except Exception as exc:
            _log("sensor", name, "unavailable:", repr(exc))
            self.broken = self.broken | _FAULTS[name]
            return None

    def _read(self, driver, name, reading):
        if driver is None:
            return self.broken & _FAULTS[name]
        try:
            return driver.read_into(reading)
        except Exception as exc:  # a driver bug must not cost the other sensors
            _log("sensor", name, "failed:", repr(exc))
            return _FAULTS[name]

    def encode(self):
        try:
            n = payload.encode_into(self.buf, payload.FPORT_AIR_QUALITY, self.reading)
        except payload.PayloadError as exc:
            # A value the format cannot carry is dropped, never sent wrong.
            _log("payload:", exc)
            for name in ("pm25", "pm10", "temperature", "humidity", "pressure", "battery", "co2"):
                try:
                    payload.encode(payload.FPORT_AIR_QUALITY, {name: self.reading.get(name)})
                except payload.PayloadError:
                    self.reading[name] = None
            n = payload.encode_into(self.buf, payload.FPORT_AIR_QUALITY, self.reading)
        return payload.FPORT_AIR_QUALITY, bytes(self.buf[:n])


def apply_downlink(cfg, safe_mode, fport, data):
    if fport == FPORT_CONFIG and len(data) == 4 and not safe_mode:
        interval = int.from_bytes(data, "big")
        raw = _read_raw_config()
        raw["interval_s"] = interval
        try:
            config.save(raw)
            cfg["interval_s"] = interval
            _log("interval set to", interval, "s")
        except ValueError as exc:
            _log("config downlink rejected:", exc)


def interval_ms(cfg, safe_mode):
    return int(cfg["safe_mode_interval_s" if safe_mode else "interval_s"] * 1000)


def _read_raw_config():
    import json

    with open(config.CONFIG_FILE) as f:
        return json.load(f)


def _device(board, cfg):
    from lorawan.mac import Device

    keys = {"dev_eui": cfg["dev_eui"]}
    if cfg["activation"] == "otaa":
        keys.update(join_eui=cfg["join_eui"], app_key=cfg["app_key"])
    else:
        keys.update(dev_addr=cfg["dev_addr"], nwk_s_key=cfg["nwk_s_key"],
                    app_s_key=cfg["app_s_key"])
    return Device(board.radio(), board.rtc, SESSION_FILE, data_rate=cfg["data_rate"],
                  adr=cfg["adr"], battery=lambda: _battery_level(board),
                  rtc_offset=rtcmem.MAC_OFFSET, **keys)


def _battery_level(board):
    """DevStatusAns battery: 1..254 from 3.3 V (empty) to 4.2 V (full), 0 = external power."""
    volts = board.battery_volts()
    if volts is None:
        return 0
    return max(1, min(254, int((volts - 3.3) / 0.9 * 253) + 1))


def cycle(board, cfg, boot, safe_mode):
    """One wake's work; returns how long to deep-sleep, in ms."""
    from lorawan.mac import DutyCycleDeferred

    node = AirNode(board, cfg, safe_mode)
    pending = boot.pending_uplink()
    if pending is None:
        node.measure()
        fport, data = node.encode()
    else:
        fport, data = pending
        _log("sending the uplink the duty cycle deferred")
    # The sensor drivers are done for this wake: their code leaves the heap before the MAC
    # and the radio driver come in, so the two never need RAM at the same time.
    del node
    release_drivers()
    device = _device(board, cfg)
    try:
        if not device.joined:
            if not device.join(cfg["join_tries"]):
                _log("join failed; retrying after", _JOIN_RETRY_MS, "ms")
                return _JOIN_RETRY_MS
            _log("joined, DevAddr", device.dev_addr.hex())
    except DutyCycleDeferred as wait:
        _log("duty cycle: join deferred by", wait.wait_ms, "ms")
        return wait.wait_ms
    confirmed = cfg["confirmed_every"] and boot.boots % cfg["confirmed_every"] == 0
    try:
        result = device.send(fport, data, confirmed=bool(confirmed), max_wait_ms=_SHORT_WAIT_MS)
    except DutyCycleDeferred as wait:
        boot.defer(fport, data)  # this reading goes out after the wait, not a later one
        _log("duty cycle: uplink deferred by", wait.wait_ms, "ms")
        return wait.wait_ms
    boot.clear_pending()
    _log("uplink fcnt", device.fcnt_up - 1, "port", fport, "payload", data.hex())
    if result.fport is not None and result.payload:
        apply_downlink(cfg, safe_mode, result.fport, result.payload)
    return interval_ms(cfg, safe_mode)



def run():
    board = Board.load()
    boot = rtcmem.BootState(board.rtc)
    boot.begin_boot()
    try:
        cfg = config.load()
    except (OSError, ValueError) as exc:
        _log("no usable config:", exc)
        board.deepsleep(3600_000)
    safe_mode = boot.failures > cfg["safe_mode_after"]
    if safe_mode:
        _log("safe mode after", boot.failures - 1, "failed boots")
    wdt = board.watchdog(cfg["watchdog_s"] * 1000)
    try:
        sleep_ms = cycle(board, cfg, boot, safe_mode)
    except Exception as exc:
        if not safe_mode:
            raise  # main.py reports it and resets: the boot counts as failed
        import sys

        # In safe mode a failing cycle must not become a reset loop that drains the battery.
        sys.print_exception(exc)
        board.deepsleep(cfg["safe_mode_interval_s"] * 1000)
    boot.healthy()
    wdt.feed()
    board.deepsleep(sleep_ms)
