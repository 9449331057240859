"""SCD4x driver: against the simulated sensor on the unix port (heap capped), and its CRC-8
under CPython."""

from __future__ import annotations

import pytest
from allmende.firmware.app import payload
from hypothesis import given
from hypothesis import strategies as st

from tests.firmware.drivers_support import driver, run_mp, sim

scd4x = driver("scd4x")
sim_scd4x = sim("sim_scd4x")

# The sensor's 5-s measurement shortened to 150 ms on both sides.
_SETUP = """
from drvharness import Env, attach, report
from sim_scd4x import SCD4xSim
from drivers.scd4x import SCD4x

def make(values=None, faults=None, variant="scd41", single_shot=True):
    env = Env(values, faults)
    sensor = SCD4xSim(env, variant=variant, measure_ms=150)
    i2c, _ = attach(i2c={0x62: sensor})
    return env, sensor, SCD4x(i2c, single_shot=single_shot, measure_ms=150)

def measure(drv):
    reading = {}
    flags = drv.read_into(reading)
    return {"flags": flags, "co2": reading["co2"], "temperature": drv.temperature,
            "humidity": drv.humidity}
"""


@pytest.mark.parametrize("single_shot", [True, False])
def test_reads_the_environment(single_shot: bool) -> None:
    [r] = run_mp(_SETUP + f"""
env, sensor, drv = make(single_shot={single_shot})
drv.pressure_hpa = 1013.25
out = measure(drv)
out["periodic"] = sensor.periodic
out["pressure"] = sensor.ambient_pressure
report(out)
""")
    assert r["flags"] == 0
    assert r["co2"] == 612
    # Its own temperature and humidity words: 175/65535 degC and 100/65535 %RH steps.
    assert r["temperature"] == pytest.approx(21.53, abs=0.002)
    assert r["humidity"] == pytest.approx(55.3, abs=0.001)
    assert r["periodic"] is False  # periodic measurement stopped again
    assert r["pressure"] == 1013  # the argument's CRC was accepted


@pytest.mark.parametrize("fault", ["nack", "bad_crc", "not_ready"])
def test_bus_and_crc_errors_give_a_fault_and_no_value(fault: str) -> None:
    bad, good = run_mp(_SETUP + f"""
env, sensor, drv = make(faults={{"scd4x": "{fault}"}})
report(measure(drv))
env.faults.clear()
report(measure(drv))
""")
    assert bad["flags"] == payload.FLAG_CO2_FAULT and bad["co2"] is None
    assert good["flags"] == 0 and good["co2"] == 612


def test_sensor_left_in_periodic_mode_is_stopped_and_measured() -> None:
    [r] = run_mp(_SETUP + """
env, sensor, drv = make()
sensor.write(None, b"\\x21\\xb1")  # start_periodic_measurement by an earlier, interrupted wake
report(measure(drv))
""")
    assert r["flags"] == 0 and r["co2"] == 612


def test_scd40_needs_periodic_mode() -> None:
    single, periodic = run_mp(_SETUP + """
env, sensor, drv = make(variant="scd40")
report(measure(drv))
env, sensor, drv = make(variant="scd40", single_shot=False)
report(measure(drv))
""")
    assert single["flags"] == payload.FLAG_CO2_FAULT and single["co2"] is None
    assert periodic["flags"] == 0 and periodic["co2"] == 612


def test_implausible_co2_is_rejected() -> None:
    [r] = run_mp(_SETUP + """
env, sensor, drv = make({"co2": 0})
report(measure(drv))
""")
    assert r["flags"] == payload.FLAG_CO2_FAULT and r["co2"] is None


def test_crc8_datasheet_vector_on_the_unix_port() -> None:
    [r] = run_mp("""
from drvharness import report
from drivers.scd4x import crc8
report(crc8(b"\\xbe\\xef"))
""")
    assert r == 0x92


# -- pure functions under CPython ------------------------------------------------------------


def test_crc8_datasheet_vector() -> None:
    assert scd4x.crc8(b"\xbe\xef") == 0x92  # Sensirion SCD4x datasheet, CRC example


@given(st.binary(min_size=2, max_size=2))
def test_crc8_over_word_and_crc_is_zero(word: bytes) -> None:
    # With no final XOR, appending the CRC zeroes the register: what a receiver can check.
    framed = word + bytes([scd4x.crc8(word)])
    assert scd4x.crc8(framed, 0, 3) == 0
    assert sim_scd4x.crc8(word) == scd4x.crc8(word)  # the simulator's own implementation agrees


@given(st.binary(min_size=2, max_size=2), st.integers(0, 15))
def test_crc8_detects_every_single_bit_error(word: bytes, bit: int) -> None:
    damaged = bytearray(word)
    damaged[bit // 8] ^= 1 << (bit % 8)
    assert scd4x.crc8(damaged) != scd4x.crc8(word)
