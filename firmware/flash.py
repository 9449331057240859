"""Host side of flashing and checking a node over its serial port (USB board or virtual pty).

`flash()` provisions a board in one go: it probes the board (MicroPython version, .mpy ABI,
chip id, current identity) and refuses before writing anything when something does not fit;
compiles the application slot with mpy-cross (firmware/build.py) and copies only the modules
that board needs into the *inactive* slot, verifies them, replaces config/keys, board.json,
boot.py and main.py file by file (write `.new`, then rename), and switches `slot` last. An
interrupted flash therefore leaves the previous slot active, and repeating it is always safe.
Then it resets the board, runs the on-board self-test (app/selftest.py) and reports.

The board is driven through mpremote's own serial transport, so whatever mpremote supports
(raw REPL, raw-paste) is what we use.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allmende.firmware import build

FIRMWARE_VERSION_RE = re.compile(r'FIRMWARE_VERSION = "([^"]+)"')
SELFTEST_PREFIX = "SELFTEST "
# config.json fields a bundle may carry (firmware/app/config.py) besides the keys.
KEY_FIELDS = ("dev_eui", "join_eui", "app_key", "dev_addr", "nwk_s_key", "app_s_key")
CONFIG_FIELDS = ("activation", "interval_s", "data_rate", "adr", "confirmed_every", "sds011",
                 "low_battery_v", "safe_mode_after", "safe_mode_interval_s", "watchdog_s",
                 "join_tries") + KEY_FIELDS
# MicroPython's native architecture numbers in sys.implementation._mpy (bits 10 and up).
MPY_ARCHES = ("none", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp",
              "armv7emdp", "xtensa", "xtensawin", "rv32imc", "rv64imc")
MCU_PLATFORM = {"unix": "linux"}  # sys.platform per board "mcu"; esp32* boards say "esp32"
DOWNLOADS = "https://micropython.org/download/"
READ_TIMEOUT_S = 10
FIRMWARES = ("node", "bridge")
BRIDGE = Path(__file__).resolve().parent / "bridge"
BRIDGE_MODULES = ("bridge", "protocol")
PORT_HELP = ("check the cable and the port name (ls /dev/ttyUSB* /dev/ttyACM*), that you may "
             "use it (group dialout: sudo usermod -aG dialout $USER, then log in again), and "
             "that no other program (a serial terminal, mpremote) holds it open")


class FlashError(Exception):
    """Flashing was refused or failed. `changed` says whether the board was written to."""

    def __init__(self, message: str, *, changed: bool = False) -> None:
        super().__init__(message)
        self.changed = changed


class FleetError(Exception):
    """The fleet could not be asked (network, token, unknown device); the message says which."""


# -- provisioning bundles ---------------------------------------------------------------------
@dataclass
class Bundle:
    """What identifies a device and configures it: becomes the board's config.json."""

    dev_eui: str
    config: dict[str, Any]
    device: str | None = None
    board: str | None = None
    mac: str | None = None
    source: str = ""


def parse_bundle(data: dict[str, Any], *, source: str) -> Bundle:
    """A bundle file or a fleet answer -> Bundle; raises FlashError naming a bad field."""
    if not isinstance(data, dict):
        raise FlashError(f"{source}: a bundle is a JSON object")
    dev_eui = str(data.get("dev_eui") or "").strip().upper()
    if not re.fullmatch(r"[0-9A-F]{16}", dev_eui):
        raise FlashError(f"{source}: field dev_eui must be 16 hex digits (got {dev_eui!r})")
    cfg = {k: data[k] for k in CONFIG_FIELDS if k in data and data[k] is not None}
    cfg["dev_eui"] = dev_eui
    cfg["activation"] = str(cfg.get("activation", "otaa")).lower()
    for name in KEY_FIELDS:
        if name in cfg:
            cfg[name] = str(cfg[name]).upper()
    problem = _validate_config(cfg)
    if problem:
        raise FlashError(f"{source}: {problem}")
    mac = data.get("mac")
    return Bundle(dev_eui=dev_eui, config=cfg, device=data.get("device") or data.get("name"),
                  board=data.get("board"), mac=mac.replace(":", "").lower() if mac else None,
                  source=source)


def _validate_config(cfg: dict[str, Any]) -> str | None:
    # The node validates with the same code (firmware/app/config.py, plain Python).
    from allmende.firmware.app import config as node_config

    try:
        node_config.validate(dict(cfg))
    except node_config.ConfigError as exc:
        return str(exc)
    return None


def load_bundle_file(path: Path) -> Bundle:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise FlashError(f"cannot read bundle {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise FlashError(f"bundle {path} is not valid JSON: {exc}") from None
    return parse_bundle(data, source=str(path))


def _fleet_request(method: str, url: str, token: str, body: Any = None,
                   timeout: float = 20) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        if exc.code in (401, 403):
            raise FleetError(f"the fleet refused the token ({exc.code}): ask for a token "
                             f"with the technician role. {detail}") from None
        raise FleetError(f"{method} {url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FleetError(f"cannot reach the fleet at {url}: {reason}. Working offline? Use "
                         "--bundle FILE with a bundle exported beforehand.") from None
    return json.loads(raw) if raw else None


def fetch_bundle(fleet: str, token: str, dev_eui: str) -> Bundle:
    """GET /api/v1/devices/{dev_eui}/bundle (the fleet audits the access: it holds keys)."""
    url = f"{fleet.rstrip('/')}/api/v1/devices/{dev_eui.upper()}/bundle"
    try:
        data = _fleet_request("GET", url, token)
    except FleetError as exc:
        raise FlashError(str(exc)) from None
    return parse_bundle(data, source=f"fleet {fleet}")


def report_to_fleet(fleet: str, token: str, dev_eui: str, report: dict[str, Any]) -> str:
    """POST /api/v1/devices/{dev_eui}/flash-reports; returns a line saying what happened."""
    url = f"{fleet.rstrip('/')}/api/v1/devices/{dev_eui.upper()}/flash-reports"
    try:
        _fleet_request("POST", url, token, report)
    except FleetError as exc:
        return f"fleet: the flash report was not recorded ({exc})"
    return "fleet: flash report recorded"


# -- the board --------------------------------------------------------------------------------
@dataclass
class BoardInfo:
    version: tuple[int, ...]
    version_text: str
    mpy: int
    platform: str
    machine: str
    chip_id: str
    slot: str | None
    board_name: str | None
    config: dict[str, Any] | None
    free_kb: int | None
    files: list[str] = field(default_factory=list)
    simulates: str | None = None  # a virtual board: the board definition it simulates

    @property
    def mpy_version(self) -> tuple[int, int]:
        return self.mpy & 0xFF, (self.mpy >> 8) & 3

    @property
    def arch(self) -> str:
        n = self.mpy >> 10
        return MPY_ARCHES[n] if n < len(MPY_ARCHES) else str(n)


_PROBE = """
import sys, os, json
try:
    import machine
    _id = machine.unique_id().hex()
except Exception:
    _id = ''
def _read(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return None
try:
    _fs = os.statvfs('/')
    _free = _fs[0] * _fs[3] // 1024
except Exception:
    _free = None
_c = _read('config.json')
try:
    _c = json.loads(_c) if _c else None
except ValueError:
    _c = {'invalid': True}
_b = _read('board.json')
try:
    _b = json.loads(_b).get('name') if _b else None
except ValueError:
    _b = None
_s = _read('slot')
try:  # the virtual board (allmende board virtual) names the hardware it simulates
    import vstate
    _v = vstate.hardware().get('name')
except Exception:
    _v = None
print(json.dumps({'version': list(sys.implementation.version[:3]),
 'version_text': '.'.join(str(x) for x in sys.implementation.version[:3]) +
   ('-' + sys.implementation.version[3] if len(sys.implementation.version) > 3 and
    sys.implementation.version[3] else ''),
 'mpy': getattr(sys.implementation, '_mpy', 0), 'platform': sys.platform,
 'machine': getattr(sys.implementation, '_machine', ''), 'chip_id': _id,
 'slot': _s.strip() if _s else None, 'board': _b, 'config': _c, 'free_kb': _free,
 'files': [e[0] for e in os.ilistdir('/')], 'simulates': _v}))
"""


RAW_REPL_TRIES = 3


class Connection:
    """One mpremote serial connection to a board, in the raw REPL."""

    def __init__(self, port: str, *, soft_reset: bool = True, wait_s: float = 0) -> None:
        try:
            from mpremote.transport import TransportError
            from mpremote.transport_serial import SerialTransport
        except ImportError:
            raise FlashError("mpremote is not installed: pip install 'allmende[dev]'") from None

        self.port = port
        self._error = TransportError
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.t = SerialTransport(port, baudrate=115200)
                break
            except TransportError:
                if time.monotonic() >= deadline:
                    raise FlashError(f"no board answers on {port}: {PORT_HELP}") from None
                time.sleep(0.2)
        # mpremote reads a pty without a timeout; a board that dies mid-command (power cut)
        # must end in an error, not a flasher waiting forever.
        self.t.serial.timeout = READ_TIMEOUT_S
        # A node that is running its application (or waking from deep sleep at the first
        # Ctrl-C) needs a moment before its REPL answers: a few tries, then give up.
        for attempt in range(RAW_REPL_TRIES):
            try:
                self.t.enter_raw_repl(soft_reset=soft_reset)
                break
            except (TransportError, OSError) as exc:
                if attempt + 1 < RAW_REPL_TRIES:
                    time.sleep(1.0)
                    continue
                self.t.close()
                raise FlashError(
                    f"the device on {port} does not answer like MicroPython ({exc}); is "
                    f"MicroPython installed? Get it from {DOWNLOADS}") from None

    def close(self) -> None:
        try:
            if self.t.in_raw_repl:
                self.t.exit_raw_repl()
            self.t.close()
        except OSError:
            pass

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, code: str, *, timeout: float = 30) -> str:
        try:
            out, err = self.t.exec_raw(code, timeout=timeout)
        except (self._error, OSError) as exc:
            raise FlashError(f"lost the board on {self.port}: {exc}", changed=True) from None
        if err:
            raise FlashError(f"the board reported an error: {err.decode(errors='replace')}",
                             changed=True)
        return out.decode("utf-8", "replace")

    def write_file(self, path: str, data: bytes) -> None:
        try:
            self.t.fs_writefile(path, data, chunk_size=1024)
        except (self._error, OSError) as exc:
            raise FlashError(f"writing {path} failed: {exc}", changed=True) from None

    def reset(self) -> None:
        """Hard reset (machine.reset), then the connection is closed."""
        try:
            self.t.exec_raw_no_follow("import time, machine\ntime.sleep_ms(50)\nmachine.reset()")
        except (self._error, OSError):
            pass
        self.t.in_raw_repl = False
        try:
            self.t.close()
        except OSError:
            pass


def probe(conn: Connection) -> BoardInfo:
    text = conn.run(_PROBE)
    data = json.loads(text.strip().splitlines()[-1])
    return BoardInfo(version=tuple(data["version"]), version_text=data["version_text"],
                     mpy=int(data["mpy"]), platform=data["platform"], machine=data["machine"],
                     chip_id=data["chip_id"], slot=data["slot"], board_name=data["board"],
                     config=data["config"], free_kb=data["free_kb"], files=data["files"],
                     simulates=data.get("simulates"))


def check_compatible(info: BoardInfo, board: dict[str, Any], port: str) -> None:
    """Refuses a board whose MicroPython or .mpy ABI does not fit the board definition."""
    want = board.get("micropython") or {}
    name = board["name"]
    platform = MCU_PLATFORM.get(board["mcu"], "esp32" if board["mcu"].startswith("esp32")
                                else board["mcu"])
    if info.simulates is not None:
        # A virtual board runs bytecode on the unix port for any board it simulates: the
        # platform and native arch are the host's, the MicroPython and .mpy ABI must fit.
        if info.simulates != name:
            raise FlashError(f"the virtual board on {port} simulates a {info.simulates}, not a "
                             f"{name}: check --board (or start it with --board {name})")
        platform = info.platform
    if info.platform != platform:
        raise FlashError(f"the board on {port} runs MicroPython for {info.platform} "
                         f"({info.machine}), not for a {name} ({board['mcu']}): check --board "
                         "(allmende board list) or the port")
    need_version = str(want.get("version", ""))
    have = ".".join(str(x) for x in info.version[:2])
    need = (int(want.get("mpy_version", 6)), int(want.get("mpy_sub_version", 3)))
    if (need_version and have != need_version) or info.mpy_version != need:
        raise FlashError(
            f"the board on {port} runs MicroPython {info.version_text} (.mpy "
            f"v{info.mpy_version[0]}.{info.mpy_version[1]}); the {name} firmware needs "
            f"MicroPython {need_version} (.mpy v{need[0]}.{need[1]}). Install MicroPython "
            f"{need_version} for {board['mcu']} first ({DOWNLOADS}, e.g. esptool.py "
            f"--chip {board['mcu']} write_flash 0 <firmware.bin>), then flash again.")
    arch = want.get("arch")
    if arch and info.simulates is None and info.arch not in ("none", arch):
        raise FlashError(f"the board on {port} reports native code arch {info.arch}, the {name} "
                         f"definition says {arch}: check --board")


def check_identity(info: BoardInfo, bundle: Bundle, board: dict[str, Any], port: str, *,
                   expect_device: str | None, reprovision: bool) -> None:
    """Refuses a bundle that is not for this device or this board."""
    if expect_device and expect_device.upper() != bundle.dev_eui:
        raise FlashError(f"the bundle from {bundle.source} is for device {bundle.dev_eui}, not "
                         f"{expect_device.upper()}: fetch or pick the bundle of the device "
                         "you are flashing")
    if bundle.board and bundle.board != board["name"]:
        raise FlashError(f"the bundle is for device {bundle.dev_eui} on a {bundle.board} board, "
                         f"but you chose --board {board['name']}: check the board type")
    if bundle.mac and info.chip_id and bundle.mac != info.chip_id.lower():
        raise FlashError(f"the bundle is for device {bundle.dev_eui} with chip id {bundle.mac}, "
                         f"but the board on {port} has chip id {info.chip_id}: this is another "
                         "board; use the bundle registered for this chip")
    current = (info.config or {}).get("dev_eui")
    if current and str(current).upper() != bundle.dev_eui and not reprovision:
        raise FlashError(f"the board on {port} is provisioned as device {str(current).upper()}, "
                         f"the bundle is for {bundle.dev_eui}. If this board really becomes "
                         "that device (hardware swap), repeat with --reprovision")


# -- building ---------------------------------------------------------------------------------
def needed_drivers(board: dict[str, Any]) -> set[str]:
    """Driver modules the board's definition calls for (sensors fitted, radio chip)."""
    names = {name for name, fitted in (board.get("sensors") or {}).items() if fitted}
    chip = (board.get("radio") or {}).get("chip", "")
    if chip.startswith("sx127"):
        names.add("sx127x")
    elif chip.startswith("sx126"):
        names.add("sx126x")
    return names


def build_slot(board: dict[str, Any], out: Path, *, firmware: str = "node") -> dict[str, bytes]:
    """Compiles the app; returns slot-relative path -> bytes of what this board needs.

    `firmware` "bridge" is the gateway's serial LoRa modem (firmware/bridge): its modules
    plus the board layer and the radio driver, no sensors, no LoRaWAN MAC."""
    arch = (board.get("micropython") or {}).get("arch")
    build.compile_app(out, arch=arch)
    drivers = needed_drivers(board)
    if firmware == "bridge":
        radio = (board.get("radio") or {}).get("chip", "")[:5] + "x"  # sx1276 -> sx127x
        drivers = {radio}
    files = {}
    for path in sorted(out.rglob("*.mpy")):
        rel = path.relative_to(out).as_posix()
        if rel.startswith("drivers/") and rel != "drivers/__init__.mpy":
            if Path(rel).stem not in drivers:
                continue
        elif firmware == "bridge" and rel not in ("board.mpy", "drivers/__init__.mpy"):
            continue
        files[rel] = path.read_bytes()
    if firmware == "bridge":
        for name in BRIDGE_MODULES:
            target = out / "bridge" / f"{name}.mpy"
            target.parent.mkdir(exist_ok=True)
            args = [build.mpy_cross_cmd(), "-o", str(target), "-s", f"{name}.py"]
            if arch:
                args.append(f"-march={arch}")
            args.append(str(BRIDGE / f"{name}.py"))
            proc = subprocess.run(args, capture_output=True, text=True)
            if proc.returncode != 0:
                raise build.BuildError(f"mpy-cross failed on bridge/{name}.py: {proc.stderr}")
            files[f"{name}.mpy"] = target.read_bytes()
    return files


def firmware_version() -> str:
    found = FIRMWARE_VERSION_RE.search((build.APP / "airnode.py").read_text())
    return found.group(1) if found else "unknown"


# -- flashing ---------------------------------------------------------------------------------
@dataclass
class FlashResult:
    ok: bool
    dev_eui: str
    board: str
    slot: str
    selftest: dict[str, Any]
    lines: list[str]

    def report(self, port: str, info: BoardInfo) -> dict[str, Any]:
        return {"dev_eui": self.dev_eui, "board": self.board, "ok": self.ok, "slot": self.slot,
                "firmware": firmware_version(), "micropython": info.version_text,
                "chip_id": info.chip_id, "selftest": self.selftest, "port": port,
                "time": datetime.datetime.now(datetime.UTC).isoformat()}


_VERIFY = """
import hashlib, binascii, os
def _walk(d):
    for e in os.ilistdir(d):
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            yield from _walk(p)
        else:
            yield p
for p in _walk({slot!r}):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            b = f.read(512)
            if not b:
                break
            h.update(b)
    print(p, binascii.hexlify(h.digest()).decode())
"""

_RMTREE = """
import os
def _rm(d):
    try:
        entries = list(os.ilistdir(d))
    except OSError:
        return
    for e in entries:
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            _rm(p)
        else:
            os.remove(p)
    os.rmdir(d)
_rm({path!r})
"""

_REPLACE = """
import os
def _replace(new, old, keep=None):
    if keep:
        try:
            os.remove(keep)
        except OSError:
            pass
        try:
            os.rename(old, keep)
        except OSError:
            pass
    try:
        os.rename(new, old)
    except OSError:  # FAT cannot rename over a file
        os.remove(old)
        os.rename(new, old)
"""


def _mkdirs(conn: Connection, dirs: list[str]) -> None:
    code = "import os\nfor d in %r:\n    try:\n        os.mkdir(d)\n    except OSError:\n" \
           "        pass\n" % (dirs,)
    conn.run(code)


def flash(
    port: str,
    board: dict[str, Any],
    bundle: Bundle | None,
    *,
    firmware: str = "node",
    expect_device: str | None = None,
    reprovision: bool = False,
    say: Callable[[str], None] = print,
    selftest_timeout: float = 120,
) -> FlashResult:
    """Flashes and provisions the board on `port`; raises FlashError when refused or broken.

    The node firmware needs a `bundle`; the gateway's bridge firmware takes none (a bridge
    holds no keys) and refuses a board that is a provisioned node unless `reprovision`."""
    if (bundle is None) != (firmware == "bridge"):
        raise FlashError("the node firmware needs a provisioning bundle; the bridge none")
    with Connection(port) as conn:
        info = probe(conn)
        say(f"board on {port}: MicroPython {info.version_text} (.mpy v{info.mpy_version[0]}."
            f"{info.mpy_version[1]}, {info.platform}), chip id {info.chip_id or '?'}, "
            f"slot {info.slot or '-'}")
        check_compatible(info, board, port)
        current = (info.config or {}).get("dev_eui")
        if bundle is not None:
            check_identity(info, bundle, board, port, expect_device=expect_device,
                           reprovision=reprovision)
        elif current and not reprovision:
            raise FlashError(f"the board on {port} is provisioned as device {current}; to turn "
                             "it into a gateway bridge (its keys are removed), repeat with "
                             "--reprovision")
        with tempfile.TemporaryDirectory(prefix="allmende-build-") as tmp:
            target_board = board
            if info.simulates is not None:  # bytecode for the unix port, not the real chip
                target_board = dict(board)
                target_board["micropython"] = dict(board.get("micropython") or {}, arch=None)
            try:
                files = build_slot(target_board, Path(tmp), firmware=firmware)
            except build.BuildError as exc:
                raise FlashError(str(exc)) from None
        size_kb = sum(len(b) for b in files.values()) // 1024 + 1
        if info.free_kb is not None and info.free_kb < 2 * size_kb:
            raise FlashError(f"the board has {info.free_kb} KB free, a slot needs {size_kb} KB: "
                             "erase the flash (esptool.py erase_flash), reinstall MicroPython")
        active = info.slot if info.slot in ("a", "b") else None
        target = "b" if active == "a" else "a"
        slot_dir = f"app_{target}"
        say(f"compiled {len(files)} modules ({size_kb} KB) for {board['name']}; "
            f"writing slot {target} (active: {active or 'none'})")
        # From here on the board changes; the active slot stays untouched until the switch.
        conn.run(_RMTREE.format(path=slot_dir))
        dirs = sorted({slot_dir} | {f"{slot_dir}/{Path(rel).parent.as_posix()}"
                                    for rel in files if "/" in rel})
        _mkdirs(conn, dirs)
        for rel, data in files.items():
            conn.write_file(f"{slot_dir}/{rel}", data)
        written = {}
        for line in conn.run(_VERIFY.format(slot=slot_dir), timeout=60).splitlines():
            if " " in line:
                path, digest = line.rsplit(" ", 1)
                written[path.removeprefix("./").removeprefix("/")] = digest
        for rel, data in files.items():
            if written.get(f"{slot_dir}/{rel}") != hashlib.sha256(data).hexdigest():
                raise FlashError(f"{slot_dir}/{rel} did not verify after writing; flash "
                                 "again (the previous slot is still active)", changed=True)
        identity_changed = bool(info.config) and (
            bundle is None or str((info.config or {}).get("dev_eui", "")).upper()
            != bundle.dev_eui)
        main_py = BRIDGE / "main.py" if firmware == "bridge" else build.FIRMWARE / "main.py"
        root = {
            "boot.py": (build.FIRMWARE / "boot.py").read_bytes(),
            "main.py": main_py.read_bytes(),
            "board.json": json.dumps(board).encode(),
        }
        if bundle is not None:
            root["config.json"] = json.dumps(bundle.config).encode()
        for name, data in root.items():
            conn.write_file(f"{name}.new", data)
        replace: list[tuple[str, str, str | None]] = [
            ("boot.py.new", "boot.py", None), ("main.py.new", "main.py", None),
            ("board.json.new", "board.json", None)]
        if bundle is not None:
            # The old config stays as the node's fallback, unless it was another device's.
            replace.append(("config.json.new", "config.json",
                            None if identity_changed or not info.config else "config.json.old"))
        code = _REPLACE + "".join(f"_replace({n!r}, {o!r}, {k!r})\n" for n, o, k in replace)
        if identity_changed:
            # Another device's LoRaWAN session, frame counters (and, becoming a bridge, its
            # keys) must not carry over.
            gone = ("lorawan.bin", "config.json.old") + (("config.json",) if bundle is None
                                                          else ())
            code += (f"for _p in {gone!r}:\n    try:\n"
                     "        os.remove(_p)\n    except OSError:\n        pass\n"
                     "try:\n    import machine\n    machine.RTC().memory(b'')\n"
                     "except Exception:\n    pass\n")
        conn.run(code)
        conn.write_file("slot.new", target.encode())
        conn.run(_REPLACE + "_replace('slot.new', 'slot')\n")  # the switch
        what = f"config for {bundle.dev_eui}" if bundle else "gateway bridge firmware"
        say(f"slot {target} verified and active; {what} written; resetting")
        conn.reset()
    time.sleep(0.3)
    ok, results, lines = run_selftest(port, timeout=selftest_timeout, wait_s=15,
                                      expect_slot=target, firmware=firmware)
    return FlashResult(ok=ok, dev_eui=bundle.dev_eui if bundle else "", board=board["name"],
                       slot=target, selftest=results, lines=lines)


_BRIDGE_SELFTEST = """
import json
try:
    from board import Board
    _b = Board.load()
    _b.radio()
    _r = {'ok': True, 'detail': _b.d['radio']['chip'] + ' answers'}
except Exception as e:
    _r = {'ok': False, 'detail': '%s: %s' % (type(e).__name__, e)}
print('selftest: %-8s %s  %s' % ('radio', 'ok  ' if _r['ok'] else 'FAIL', _r['detail']))
print('SELFTEST ' + json.dumps({'ok': _r['ok'], 'checks': {'radio': _r}}))
"""


def run_selftest(port: str, *, timeout: float = 120, wait_s: float = 0,
                 expect_slot: str | None = None,
                 firmware: str = "node") -> tuple[bool, dict[str, Any], list[str]]:
    """Runs app/selftest.py on the board (the bridge: its radio only); returns (passed,
    checks, report lines)."""
    with Connection(port, wait_s=wait_s) as conn:
        code = ("import sys\nprint('SLOT', [p for p in sys.path if p.startswith('app_')])\n"
                + (_BRIDGE_SELFTEST if firmware == "bridge"
                   else "import selftest\nselftest.run()\n"))
        try:
            out, err = conn.t.exec_raw(code, timeout=timeout)
        except (conn._error, OSError) as exc:
            raise FlashError(f"the self-test did not finish: {exc}", changed=True) from None
    text = out.decode("utf-8", "replace")
    lines = [ln.rstrip() for ln in text.splitlines() if ln.startswith("selftest:")]
    result: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith(SELFTEST_PREFIX):
            result = json.loads(line[len(SELFTEST_PREFIX):])
    if not result:
        error = err.decode("utf-8", "replace").strip() or text.strip()
        lines.append(f"selftest: could not run: {error[-500:]}")
        return False, {"selftest": {"ok": False, "detail": error[-500:]}}, lines
    checks = result.get("checks", {})
    if expect_slot is not None and f"app_{expect_slot}" not in text.split("SLOT", 1)[-1]\
            .split("\n", 1)[0]:
        checks["slot"] = {"ok": False, "detail": f"the board did not boot slot {expect_slot}"}
        lines.append(f"selftest: slot     FAIL  did not boot {expect_slot}")
        return False, checks, lines
    return bool(result.get("ok")), checks, lines


def start_node(port: str) -> None:
    """Hard-resets the board out of the flasher's REPL session into its normal life: boot,
    main.py, join, measure, sleep — what the technician wants to see before leaving."""
    Connection(port, soft_reset=False).reset()


def board_info(port: str) -> BoardInfo:
    with Connection(port, soft_reset=False) as conn:
        return probe(conn)


def console(port: str) -> int:
    """The board's REPL in this terminal (mpremote's, Ctrl-] leaves)."""
    return subprocess.call([sys.executable, "-m", "mpremote", "connect", port, "repl"])
