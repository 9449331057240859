"""State the virtual board shares with its host launcher: files in $ALLMENDE_VBOARD_STATE.

sim.json (written by the launcher): seed, node id, board, radio medium, injected faults.
boot.json (launcher): reset cause and boot index of this wake.
rtc.bin: RTC memory, written through like the ESP32's RTC slow memory; the launcher deletes
it on a power cut. exit.json: why this wake ended (deep sleep and for how long, or reset).
wdt.json: armed watchdog; its modification time is the last feed.
"""

import json
import os

_cache = {}


def _dir():
    d = os.getenv("ALLMENDE_VBOARD_STATE")
    if not d:
        raise RuntimeError("ALLMENDE_VBOARD_STATE is not set: start the board with the launcher")
    return d


def _path(name):
    return _dir() + "/" + name


def _load(name, default):
    if name not in _cache:
        try:
            with open(_path(name)) as f:
                _cache[name] = json.load(f)
        except OSError:
            _cache[name] = default
    return _cache[name]


def _write(name, data, mode="w"):
    tmp = _path(name + ".tmp")
    with open(tmp, mode) as f:
        f.write(data)
    os.rename(tmp, _path(name))


def sim():
    return _load("sim.json", {})


def hardware():
    """The board definition the simulated hardware follows (not the firmware's copy)."""
    return _load("board.json", {})


def boot():
    return _load("boot.json", {"cause": 1, "index": 0})


def node_id_bytes():
    return bytes.fromhex(sim().get("node_id", "0242ac000001"))


def rtc_memory():
    if "rtc" not in _cache:
        try:
            with open(_path("rtc.bin"), "rb") as f:
                _cache["rtc"] = f.read()
        except OSError:
            _cache["rtc"] = b""
    return _cache["rtc"]


def set_rtc_memory(data):
    _cache["rtc"] = data
    _write("rtc.bin", data, "wb")


def leave(kind, ms):
    _write("exit.json", json.dumps({"kind": kind, "ms": ms}))


def watchdog_arm(timeout_ms):
    _write("wdt.json", json.dumps({"timeout_ms": timeout_ms}))


def watchdog_feed():
    with open(_path("wdt.json"), "a") as f:
        f.write(" ")


def append_line(name, line):
    with open(_path(name), "a") as f:
        f.write(line + "\n")
