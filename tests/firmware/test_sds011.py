"""SDS011 driver: against the simulated sensor on the unix port (heap capped), and its frame
parser and trimmed mean as pure functions under CPython."""

from __future__ import annotations

import pytest
from allmende.firmware.app import payload
from hypothesis import given
from hypothesis import strategies as st

from tests.firmware.drivers_support import driver, run_mp, sim

sds011 = driver("sds011")
sim_sds011 = sim("sim_sds011")

# Fast timing: frames every 50 ms instead of 1 s, a short warm-up the driver is told is enough.
_SETUP = """
from drvharness import Env, attach, report
from sim_sds011 import SDS011Sim
from drivers.sds011 import SDS011

def make(faults=None, values=None, seed=3, frame_ms=50, warmup_ms=150, stable_ms=150, **kw):
    env = Env(values, faults)
    sensor = SDS011Sim(env, seed=seed, frame_ms=frame_ms)
    _, uart = attach(uart=sensor)
    drv = SDS011(uart, warmup_ms=warmup_ms, samples=5, frame_ms=frame_ms, reply_ms=150,
                 stable_ms=stable_ms, **kw)
    return env, sensor, drv

def measure(drv):
    reading = {}
    flags = drv.read_into(reading)
    return {"flags": flags, "pm25": reading["pm25"], "pm10": reading["pm10"],
            "bad": drv.bad_frames, "dropped": drv.parser.dropped}
"""


def _run(body: str) -> list:
    return run_mp(_SETUP + body)


def test_reads_the_environment_and_puts_the_fan_to_sleep() -> None:
    [r] = _run("""
env, sensor, drv = make()
out = measure(drv)
out["working"] = sensor.working
out["commands"] = sensor.commands
report(out)
""")
    assert r["flags"] == 0
    assert (r["pm25"], r["pm10"]) == (12.3, 20.1)
    assert r["working"] is False
    # wake, ask the reporting mode (already active: left alone), sleep
    assert r["commands"] == [[6, 1, 1], [2, 0, 0], [6, 1, 0]]


def test_trimmed_mean_drops_the_highest_and_lowest_sample() -> None:
    # Any 5 consecutive frames of a 5-cycle hold the same samples, whichever frame comes first.
    [r] = _run("""
env, sensor, drv = make(values={"pm25": (10.0, 11.0, 12.0, 100.0, 1.0),
                                "pm10": (20.0, 23.0, 26.0, 400.0, 0.5)})
report(measure(drv))
""")
    assert r["flags"] == 0
    assert r["pm25"] == pytest.approx(11.0)  # plain mean: 26.8
    assert r["pm10"] == pytest.approx(23.0)  # plain mean: 93.9


def test_short_warm_up_is_flagged_but_still_measured() -> None:
    [r] = _run("""
env, sensor, drv = make(stable_ms=30000)
report(measure(drv))
""")
    assert r["flags"] == payload.FLAG_PM_WARMUP
    assert (r["pm25"], r["pm10"]) == (12.3, 20.1)


def test_sleeping_sensor_in_query_mode_is_woken_and_set_to_active_reporting() -> None:
    [r] = _run("""
env, sensor, drv = make()
sensor.working = False
sensor.query_mode = True
out = measure(drv)
out["query_mode"] = sensor.query_mode
out["commands"] = sensor.commands
report(out)
""")
    assert r["flags"] == 0
    assert (r["pm25"], r["pm10"]) == (12.3, 20.1)
    assert r["query_mode"] is False
    assert [2, 1, 0] in r["commands"]


def test_start_ahead_overlaps_the_warm_up() -> None:
    [r] = _run("""
import time
env, sensor, drv = make(warmup_ms=200, stable_ms=200)
started = drv.start()
time.sleep_ms(250)
out = measure(drv)
out["started"] = started
report(out)
""")
    assert r["started"] is True
    assert r["flags"] == 0
    assert (r["pm25"], r["pm10"]) == (12.3, 20.1)


@pytest.mark.parametrize("fault", ["bad_checksum", "silent"])
def test_corrupt_or_missing_frames_give_a_fault_and_no_value(fault: str) -> None:
    [r] = _run(f"""
env, sensor, drv = make(faults={{"sds011": "{fault}"}})
report(measure(drv))
""")
    assert r["flags"] == payload.FLAG_PM_FAULT
    assert r["pm25"] is None and r["pm10"] is None
    if fault == "bad_checksum":
        assert r["bad"] >= 5


@pytest.mark.parametrize("fault", ["garbage", "corrupt"])
def test_noise_on_the_line_is_skipped_and_never_turns_into_a_wrong_number(fault: str) -> None:
    results = _run(f"""
for seed in (1, 2, 3, 4):
    env, sensor, drv = make(faults={{"sds011": "{fault}"}}, seed=seed)
    report(measure(drv))
""")
    for r in results:
        if r["flags"] & payload.FLAG_PM_FAULT:
            assert r["pm25"] is None and r["pm10"] is None
        else:
            assert (r["pm25"], r["pm10"]) == (12.3, 20.1)
    assert sum(r["dropped"] + r["bad"] for r in results) > 0  # the noise did reach the parser
    assert sum(not r["flags"] & payload.FLAG_PM_FAULT for r in results) >= 3


def test_fault_that_clears_recovers_on_the_next_reading() -> None:
    first, second = _run("""
env, sensor, drv = make(faults={"sds011": "bad_checksum"})
report(measure(drv))
env.faults.clear()
report(measure(drv))
""")
    assert first["flags"] == payload.FLAG_PM_FAULT
    assert second["flags"] == 0 and (second["pm25"], second["pm10"]) == (12.3, 20.1)


def test_out_of_range_values_are_rejected() -> None:
    # The sensor's range ends at 999.9 ug/m3; 0xFFFF tenths cannot be a measurement.
    [r] = _run("""
env, sensor, drv = make(faults={"sds011": "out_of_range"})
out = measure(drv)
out["implausible"] = drv.implausible
report(out)
""")
    assert r["flags"] == payload.FLAG_PM_FAULT
    assert r["pm25"] is None and r["pm10"] is None
    assert r["implausible"] >= 5


def test_frame_parser_allocates_nothing() -> None:
    [r] = run_mp("""
import gc
from drvharness import report
from drivers.sds011 import FrameParser, FRAME_DATA
from sim_sds011 import frame
stream = bytearray()
for i in range(20):
    stream.extend(frame(0xC0, i, 0, 2 * i, 0, 1, 2))
    stream.extend(b"\\xaa\\x00\\xaa\\xc0\\x01")
p = FrameParser()
found = 0
gc.collect()
before = gc.mem_alloc()
for i in range(len(stream)):
    if p.feed(stream[i]) == FRAME_DATA:
        found += 1
report([found, gc.mem_alloc() - before])
""")
    assert r == [20, 0]


# -- pure functions under CPython ------------------------------------------------------------


def _frame(pm25: int, pm10: int, ident: int = 0xC1D2) -> bytes:
    return bytes(sim_sds011.frame(0xC0, pm25 & 0xFF, pm25 >> 8, pm10 & 0xFF, pm10 >> 8,
                                  ident >> 8, ident & 0xFF))


def _parse(stream: bytes) -> tuple[list[bytes], object]:
    parser = sds011.FrameParser()
    found = []
    for b in stream:
        if parser.feed(b) in (sds011.FRAME_DATA, sds011.FRAME_REPLY):
            found.append(bytes(parser.frame))
    return found, parser


@given(st.binary(max_size=400))
def test_parser_never_raises_and_reports_only_checksummed_frames(data: bytes) -> None:
    found, _ = _parse(data)
    for f in found:
        assert f in data
        assert f[0] == 0xAA and f[1] in (0xC0, 0xC5) and f[9] == 0xAB
        assert sum(f[2:8]) & 0xFF == f[8]


frames = st.lists(st.tuples(st.integers(0, 9999), st.integers(0, 9999)), min_size=1, max_size=8)
no_header = st.binary(max_size=12).map(lambda b: b.replace(b"\xaa", b""))


@given(frames, st.lists(no_header, min_size=9, max_size=9))
def test_parser_finds_every_frame_between_garbage(values: list, junk: list[bytes]) -> None:
    stream = b"".join(junk[i] + _frame(*v) for i, v in enumerate(values)) + junk[-1]
    found, _ = _parse(stream)
    assert found == [_frame(*v) for v in values]


@given(frames, st.integers(0, 9))
def test_a_damaged_frame_is_counted_and_the_next_one_still_found(values: list, pos: int) -> None:
    damaged = bytearray(_frame(1, 2))
    damaged[pos] ^= 0x40
    found, parser = _parse(bytes(damaged) + b"".join(_frame(*v) for v in values))
    assert found[-len(values):] == [_frame(*v) for v in values]
    assert parser.bad_frames + parser.dropped > 0


def test_checksum_of_the_datasheet_sleep_command() -> None:
    # "AA B4 06 01 00 .. 00 FF FF 05 AB" puts the sensor to sleep (protocol V1.3).
    cmd = bytes([0xAA, 0xB4, 0x06, 0x01] + [0] * 11 + [0xFF, 0xFF, 0x05, 0xAB])
    assert sds011.checksum(cmd, 2, 17) == 0x05


@given(st.lists(st.integers(0, 9999), min_size=1, max_size=30))
def test_trimmed_mean_matches_its_definition(values: list[int]) -> None:
    got = sds011.trimmed_mean(values, len(values))
    kept = sorted(values)[1:-1] if len(values) >= 3 else values
    assert got == pytest.approx(sum(kept) / len(kept))


def test_trimmed_mean_of_nothing_is_none() -> None:
    assert sds011.trimmed_mean([], 0) is None
