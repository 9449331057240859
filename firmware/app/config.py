"""Node configuration: a plain dict loaded once from config.json and validated.

A bad file is reported with the field that is wrong; the node then falls back to the last
good config (config.json.old, kept by `save`), so a broken update never silences a node.
"""

import json

CONFIG_FILE = "config.json"
FALLBACK_FILE = "config.json.old"

DEFAULTS = {
    "activation": "otaa",
    "interval_s": 300,
    "data_rate": 5,  # EU868 DR5 = SF7BW125; ADR may change it
    "adr": True,
    "confirmed_every": 0,  # every Nth uplink confirmed; 0 = never
    "sds011": {"warmup_s": 30, "samples": 5},
    "low_battery_v": 3.45,
    "safe_mode_after": 3,  # consecutive failed boots before safe mode
    "safe_mode_interval_s": 3600,
    "watchdog_s": 120,
    "join_tries": 3,
}


class ConfigError(ValueError):
    """The config is unusable; `field` names the offending entry."""

    def __init__(self, field, problem):
        super().__init__("config field %r: %s" % (field, problem))
        self.field = field


def _hex(cfg, field, nbytes):
    value = cfg.get(field)
    if not isinstance(value, str):
        raise ConfigError(field, "missing (hex string of %d bytes)" % nbytes)
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(field, "not hexadecimal")
    if len(raw) != nbytes:
        raise ConfigError(field, "%d bytes, need %d" % (len(raw), nbytes))
    return raw


def _number(cfg, field, low, high):
    value = cfg[field]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(field, "%r is not a number in [%s, %s]" % (value, low, high))


def validate(raw):
    """Returns a complete config (defaults filled in, keys as bytes) or raises ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError("(top level)", "not a JSON object")
    cfg = dict(DEFAULTS)
    cfg.update(raw)
    sds = dict(DEFAULTS["sds011"])
    sds.update(raw.get("sds011") or {})
    cfg["sds011"] = sds
    if cfg["activation"] == "otaa":
        cfg["dev_eui"] = _hex(cfg, "dev_eui", 8)
        cfg["join_eui"] = _hex(cfg, "join_eui", 8)
        cfg["app_key"] = _hex(cfg, "app_key", 16)
    elif cfg["activation"] == "abp":
        cfg["dev_eui"] = _hex(cfg, "dev_eui", 8)
        cfg["dev_addr"] = _hex(cfg, "dev_addr", 4)
        cfg["nwk_s_key"] = _hex(cfg, "nwk_s_key", 16)
        cfg["app_s_key"] = _hex(cfg, "app_s_key", 16)
    else:
        raise ConfigError("activation", "must be 'otaa' or 'abp'")
    _number(cfg, "interval_s", 1, 86400)
    _number(cfg, "data_rate", 0, 5)
    _number(cfg, "confirmed_every", 0, 1000)
    _number(cfg, "low_battery_v", 0, 5)
    _number(cfg, "safe_mode_after", 1, 100)
    _number(cfg, "safe_mode_interval_s", 1, 86400)
    _number(cfg, "watchdog_s", 10, 3600)
    _number(cfg, "join_tries", 1, 100)
    _number(sds, "warmup_s", 0, 120)
    _number(sds, "samples", 1, 60)
    return cfg


def _read(path):
    with open(path) as f:
        return validate(json.load(f))


def load(path=CONFIG_FILE, fallback=FALLBACK_FILE):
    """Loads and validates the config; on failure the fallback, else raises the first error."""
    try:
        return _read(path)
    except (OSError, ValueError) as exc:
        first = exc
    try:
        cfg = _read(fallback)
    except (OSError, ValueError):
        raise first
    print("config: %s unusable (%s); using %s" % (path, first, fallback))
    return cfg


def save(raw, path=CONFIG_FILE, fallback=FALLBACK_FILE):
    """Validates and writes a new config, keeping the current one as the fallback."""
    validate(raw)
    import os

    try:
        _read(path)  # only a good config becomes the fallback
        os.rename(path, fallback)
    except (OSError, ValueError):
        pass
    with open(path, "w") as f:
        json.dump(raw, f)
