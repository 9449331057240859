"""Node config validation and the last-good fallback, on the MicroPython unix port."""

from __future__ import annotations

import json
from pathlib import Path

from allmende.boards.virtual import unix_port

GOOD = {"dev_eui": "70b3d57ed0000001", "join_eui": "0000000000000000",
        "app_key": "00112233445566778899aabbccddeeff", "interval_s": 60}


def _load(tmp_path: Path) -> str:
    code = (
        "import config\n"
        "try:\n"
        "    c = config.load()\n"
        "    print('OK', c['interval_s'], c['dev_eui'].hex(), c['sds011']['samples'])\n"
        "except ValueError as e:\n"
        "    print('ERR', getattr(e, 'field', None), e)\n"
    )
    proc = unix_port.run(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_good_config_gets_defaults(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(GOOD))
    assert _load(tmp_path) == "OK 60 70b3d57ed0000001 5"


def test_bad_field_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(dict(GOOD, app_key="abc")))
    assert _load(tmp_path).startswith("ERR app_key")
    (tmp_path / "config.json").write_text(json.dumps(dict(GOOD, interval_s=0)))
    assert _load(tmp_path).startswith("ERR interval_s")
    (tmp_path / "config.json").write_text(json.dumps(dict(GOOD, activation="psk")))
    assert _load(tmp_path).startswith("ERR activation")


def test_broken_config_falls_back_to_the_last_good_one(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(GOOD))
    code = (
        "import config, json\n"
        "raw = json.load(open('config.json'))\n"
        "raw['interval_s'] = 120\n"
        "config.save(raw)\n"
        "try:\n"
        "    config.save(dict(raw, interval_s=-5))\n"
        "except ValueError as e:\n"
        "    print('refused', e.field)\n"
    )
    proc = unix_port.run(code, cwd=tmp_path)
    assert proc.stdout.split() == ["refused", "interval_s"], proc.stderr
    assert json.loads((tmp_path / "config.json.old").read_text())["interval_s"] == 60
    # An update that got through corrupt (half-written file): the node keeps working.
    (tmp_path / "config.json").write_text('{"dev_eui": ')
    assert _load(tmp_path) == "OK 60 70b3d57ed0000001 5"
