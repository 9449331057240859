"""On-board self-test, run by the flasher after flashing (and by `allmende node selftest`).

Checks that the config is valid, the LoRaWAN keys are present, the radio answers (chip
version register / status) and every fitted sensor answers. Prints one line per check for a
person and, last, one machine-readable line:

    SELFTEST {"ok": true, "checks": {"config": {"ok": true, "detail": "..."}, ...}}
"""

import json

RESULT_PREFIX = "SELFTEST "
_ZERO_KEY = "0" * 32


def _check(results, name, probe):
    from board import release_drivers

    try:
        detail = probe()
        ok = True
    except Exception as exc:  # every failure is a result to report, never a crash
        detail = "%s: %s" % (type(exc).__name__, exc)
        ok = False
    release_drivers()  # one driver in RAM at a time, as in a wake
    results[name] = {"ok": ok, "detail": detail}
    print("selftest: %-8s %s  %s" % (name, "ok  " if ok else "FAIL", detail))
    return ok


def _config(path):
    import config

    with open(path) as f:
        raw = json.load(f)
    cfg = config.validate(raw)
    return raw, cfg


def _keys(raw):
    if raw.get("activation", "otaa") == "abp":
        names = ("dev_eui", "dev_addr", "nwk_s_key", "app_s_key")
    else:
        names = ("dev_eui", "join_eui", "app_key")
    missing = [n for n in names if not raw.get(n)]
    if missing:
        raise ValueError("missing keys: " + ", ".join(missing))
    for name in ("app_key", "nwk_s_key", "app_s_key"):
        if raw.get(name, "").lower() == _ZERO_KEY:
            raise ValueError("%s is all zeros (a placeholder, not a provisioned key)" % name)
    return "%s present (%s activation)" % (", ".join(names), raw.get("activation", "otaa"))


def _radio(board):
    chip = board.d["radio"]["chip"]
    radio = board.radio()  # the driver resets the chip and checks its version / status
    try:
        radio.sleep()
    except Exception:
        pass
    return "%s answers" % chip


def _sensor(board, name):
    cfg = board.d["sensors"][name]
    board.power_sensors(True)
    if isinstance(cfg, dict) and "address" in cfg:
        found = board.i2c().scan()
        if cfg["address"] not in found:
            raise OSError("no answer at I2C address 0x%02x (bus has %s)" % (
                cfg["address"], ", ".join("0x%02x" % a for a in found) or "nothing"))
    driver = board.sensor(name)
    if name == "sds011":
        if not driver.start():
            raise OSError("no reply on its UART (wiring, 5 V supply?)")
        driver.sleep()
        return "answers on UART"
    if name == "bme280":
        reading = {}
        if driver.read_into(reading):
            raise OSError("measurement failed (wrong chip id or bus error)")
        return "answers, %.1f degC" % reading["temperature"]
    return "answers at I2C 0x%02x" % cfg["address"]


def run(config_file="config.json"):
    """Runs every check, prints the report and the result line; returns True if all passed."""
    results = {}
    state = {}

    def load_config():
        state["raw"], cfg = _config(config_file)
        return "valid, interval %ss" % cfg["interval_s"]

    def load_board():
        from board import Board

        state["board"] = Board.load()
        return state["board"].name

    _check(results, "config", load_config)
    if "raw" in state:
        _check(results, "keys", lambda: _keys(state["raw"]))
    else:
        results["keys"] = {"ok": False, "detail": "no valid config"}
    if _check(results, "board", load_board):
        board = state["board"]
        if board.d.get("radio"):
            _check(results, "radio", lambda: _radio(board))
        for name, fitted in sorted((board.d.get("sensors") or {}).items()):
            if fitted:
                _check(results, name, lambda: _sensor(board, name))
        try:
            board.power_sensors(False)
        except Exception:
            pass
    ok = True
    for r in results.values():
        ok = ok and r["ok"]
    print(RESULT_PREFIX + json.dumps({"ok": ok, "checks": results}))
    return ok
