"""The air-quality node: wake, read sensors, encode, uplink, RX windows, deep sleep.

One call of `run()` is one wake. The boot counter in RTC memory counts a boot as failed
until the cycle ends healthy; after `safe_mode_after` failed boots in a row the node runs in
safe mode (essential sensors only, flagged uplinks, long sleep, no reset loops). The
watchdog is fed only after a healthy cycle.
"""

import time

import config
import payload
import rtcmem
from board import Board

FIRMWARE_VERSION = "0.1.0"
FPORT_CONFIG = 10  # downlink: u32 big-endian new uplink interval in seconds
_SHORT_WAIT_MS = 10_000  # a duty-cycle wait up to this is slept through, longer ones deep-slept
_JOIN_RETRY_MS = 60_000


def _log(*args):
    print("node:", *args)


class AirNode:
    def __init__(self, board, cfg, boot, safe_mode):
        self.board = board
        self.cfg = cfg
        self.boot = boot
        self.safe_mode = safe_mode
        self.buf = bytearray(payload.max_size(payload.FPORT_AIR_QUALITY, 1))
        self.reading = {}

    def measure(self):
        """Fills self.reading from every fitted sensor; a failing sensor only sets its flag."""
        reading = self.reading
        reading.clear()
        flags = payload.FLAG_SAFE_MODE if self.safe_mode else 0
        sensors = ("bme280", "sds011") if self.safe_mode else ("bme280", "sds011", "scd4x")
        faults = {"bme280": payload.FLAG_CLIMATE_FAULT, "sds011": payload.FLAG_PM_FAULT,
                  "scd4x": payload.FLAG_CO2_FAULT}
        self.board.power_sensors(True)
        for name in sensors:
            try:
                driver = self.board.sensor(name)
                if driver is None:
                    continue
                if name == "sds011":
                    sds = self.cfg["sds011"]
                    driver.warmup_ms = int(sds["warmup_s"] * 1000)
                    driver.samples = sds["samples"]
                flags |= driver.read_into(reading)
            except Exception as exc:  # a driver bug must not cost the other sensors
                _log("sensor", name, "failed:", repr(exc))
                flags |= faults[name]
        self.board.power_sensors(False)
        volts = self.board.battery_volts()
        reading["battery"] = volts
        if volts is not None and volts < self.cfg["low_battery_v"]:
            flags |= payload.FLAG_LOW_BATTERY
        reading["flags"] = flags
        return reading

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

    def apply_downlink(self, fport, data):
        if fport == FPORT_CONFIG and len(data) == 4 and not self.safe_mode:
            interval = int.from_bytes(data, "big")
            raw = _read_raw_config()
            raw["interval_s"] = interval
            try:
                config.save(raw)
                self.cfg["interval_s"] = interval
                _log("interval set to", interval, "s")
            except ValueError as exc:
                _log("config downlink rejected:", exc)

    def interval_ms(self):
        key = "safe_mode_interval_s" if self.safe_mode else "interval_s"
        return int(self.cfg[key] * 1000)


def _read_raw_config():
    import json

    with open(config.CONFIG_FILE) as f:
        return json.load(f)


def _device(board, cfg, boot):
    from lorawan.mac import Device

    region = rtcmem.Region(board.rtc, rtcmem.MAC_OFFSET, 2048 - rtcmem.MAC_OFFSET)
    keys = {"dev_eui": cfg["dev_eui"]}
    if cfg["activation"] == "otaa":
        keys.update(join_eui=cfg["join_eui"], app_key=cfg["app_key"])
    else:
        keys.update(dev_addr=cfg["dev_addr"], nwk_s_key=cfg["nwk_s_key"], app_s_key=cfg["app_s_key"])
    return Device(board.radio(), region, "session.bin", data_rate=cfg["data_rate"],
                  adr=cfg["adr"], battery=lambda: _battery_level(board), **keys)


def _battery_level(board):
    """DevStatusAns battery: 1..254 from 3.3 V (empty) to 4.2 V (full), 0 = external power."""
    volts = board.battery_volts()
    if volts is None:
        return 0
    return max(1, min(254, int((volts - 3.3) / 0.9 * 253) + 1))


def cycle(board, cfg, boot, safe_mode):
    """One wake's work; returns how long to deep-sleep, in ms."""
    from lorawan.mac import DutyCycleDeferred

    node = AirNode(board, cfg, boot, safe_mode)
    device = _device(board, cfg, boot)
    if not device.joined:
        if not device.join(cfg["join_tries"]):
            _log("join failed; retrying after", _JOIN_RETRY_MS, "ms")
            return _JOIN_RETRY_MS
        _log("joined")
    pending = boot.pending_uplink()
    if pending is None:
        node.measure()
        fport, data = node.encode()
    else:
        fport, data = pending
        _log("sending uplink deferred by the duty cycle")
    confirmed = cfg["confirmed_every"] and boot.boots % cfg["confirmed_every"] == 0
    while True:
        try:
            result = device.send(fport, data, confirmed=bool(confirmed))
            break
        except DutyCycleDeferred as wait:
            if wait.wait_ms > _SHORT_WAIT_MS:
                boot.defer(fport, data)
                _log("duty cycle: uplink deferred by", wait.wait_ms, "ms")
                return wait.wait_ms
            time.sleep_ms(wait.wait_ms)
    boot.clear_pending()
    _log("uplink fcnt", device.fcnt_up - 1, "port", fport, "bytes", len(data), data.hex())
    if result.fport is not None and result.payload:
        node.apply_downlink(result.fport, result.payload)
    return node.interval_ms()


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
