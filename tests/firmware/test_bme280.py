"""BME280 driver: against the simulated chip on the unix port (heap capped), and its integer
compensation under CPython, checked against the datasheet's example and its double-precision
formulas (which the simulated chip uses)."""

from __future__ import annotations

import pytest
from allmende.firmware.app import payload
from hypothesis import given
from hypothesis import strategies as st

from tests.firmware.drivers_support import driver, run_mp, sim

bme280 = driver("bme280")
sim_bme280 = sim("sim_bme280")

# The integer formulas resolve 0.01 degC, Pa/256 and %RH/1024; the chip's ADC steps at the
# driver's oversampling are about 0.0025 degC, 0.16 Pa and 0.008 %RH.
TOL = {"temperature": 0.005, "pressure": 0.002, "humidity": 0.011}

_SETUP = """
from drvharness import Env, attach, report
from sim_bme280 import BME280Sim
from drivers.bme280 import BME280

def make(values=None, faults=None, address=0x76):
    env = Env(values, faults)
    chip = BME280Sim(env, address)
    i2c, _ = attach(i2c={address: chip})
    return env, chip, BME280(i2c, address=address)

def measure(drv):
    reading = {}
    flags = drv.read_into(reading)
    return {"flags": flags, "temperature": reading["temperature"],
            "humidity": reading["humidity"], "pressure": reading["pressure"]}
"""

POINTS = [
    {"temperature": 21.53, "humidity": 55.3, "pressure": 1013.25},
    {"temperature": -8.0, "humidity": 95.0, "pressure": 975.02},
    {"temperature": -39.99, "humidity": 0.5, "pressure": 300.5},
    {"temperature": 84.99, "humidity": 99.5, "pressure": 1099.9},
    {"temperature": 0.0, "humidity": 30.1, "pressure": 1040.0},
]


def test_reads_the_environment_within_the_sensor_resolution() -> None:
    results = run_mp(_SETUP + f"""
for values in {POINTS!r}:
    env, chip, drv = make(values)
    report(measure(drv))
""")
    for point, r in zip(POINTS, results, strict=True):
        assert r["flags"] == 0
        for name, tol in TOL.items():
            assert r[name] == pytest.approx(point[name], abs=tol), name


def test_calibration_is_read_once_and_every_reading_is_a_new_conversion() -> None:
    [r] = run_mp(_SETUP + """
env, chip, drv = make({"temperature": [20.0, 25.0]})
first, second = measure(drv), measure(drv)
report({"first": first["temperature"], "second": second["temperature"],
        "conversions": chip.conversions})
""")
    assert (r["first"], r["second"], r["conversions"]) == (20.0, 25.0, 2)


@pytest.mark.parametrize("fault", ["nack", "bad_chip_id", "busy", "no_data"])
def test_bus_errors_and_chip_faults_give_a_fault_and_no_values(fault: str) -> None:
    bad, good = run_mp(_SETUP + f"""
env, chip, drv = make(faults={{"bme280": "{fault}"}})
report(measure(drv))
env.faults.clear()
report(measure(drv))
""")
    assert bad == {"flags": payload.FLAG_CLIMATE_FAULT, "temperature": None, "humidity": None,
                   "pressure": None}
    assert good["flags"] == 0 and good["temperature"] == 21.53  # recovers once the fault clears


def test_bus_error_after_a_good_reading_gives_a_fault() -> None:
    good, bad = run_mp(_SETUP + """
env, chip, drv = make()
report(measure(drv))
env.faults["bme280"] = "nack"
report(measure(drv))
""")
    assert good["flags"] == 0
    assert bad["flags"] == payload.FLAG_CLIMATE_FAULT and bad["temperature"] is None


def test_no_device_at_the_address_gives_a_fault() -> None:
    [r] = run_mp(_SETUP + """
i2c, _ = attach(i2c={})
report(measure(BME280(i2c, address=0x77)))
""")
    assert r["flags"] == payload.FLAG_CLIMATE_FAULT and r["pressure"] is None


def test_implausible_values_are_rejected() -> None:
    hot, thin_air = run_mp(_SETUP + """
env, chip, drv = make({"temperature": 120.0})
report(measure(drv))
env, chip, drv = make({"pressure": 250.0})
report(measure(drv))
""")
    # 120 degC is beyond the sensor's range: no quantity can be trusted (all use t_fine).
    assert hot == {"flags": payload.FLAG_CLIMATE_FAULT, "temperature": None, "humidity": None,
                   "pressure": None}
    # 250 hPa is below the range: pressure dropped, temperature and humidity still good.
    assert thin_air["flags"] == payload.FLAG_CLIMATE_FAULT
    assert thin_air["pressure"] is None and thin_air["temperature"] == 21.53


# -- pure functions under CPython ------------------------------------------------------------

CAL = sim_bme280.CALIBRATION


def test_datasheet_compensation_example() -> None:
    # BMP280/BME280 datasheet example: adc_T 519888 -> t_fine 128422, 25.08 degC;
    # adc_P 415148 -> 100653.27 Pa (the same T and P formulas serve both chips).
    fine = bme280.t_fine(CAL, 519888)
    assert fine == 128422
    assert bme280.temperature(fine) == 2508
    assert bme280.pressure(CAL, fine, 415148) / 256 == pytest.approx(100653.27, abs=0.05)


s16 = st.integers(-32768, 32767)
calibrations = st.tuples(
    st.integers(26000, 29000), st.integers(25000, 28000), st.integers(-1500, 0),  # T1..T3
    st.integers(35000, 39000), st.integers(-11500, -10000), st.integers(2000, 4000),  # P1..P3
    st.integers(2000, 9000), st.integers(-200, 200), st.integers(-10, 10),  # P4..P6
    st.integers(9000, 16000), st.integers(-15000, -10000), st.integers(4000, 7000),  # P7..P9
    st.integers(0, 255), st.integers(300, 400), st.integers(0, 255),  # H1..H3
    st.integers(-2048, 2047), st.integers(-2048, 2047), st.integers(-128, 127),  # H4..H6
)


@given(calibrations)
def test_calibration_layout_round_trips(cal: tuple) -> None:
    # The chip's packing (simulator) and the driver's parsing, H4/H5 sharing a byte included.
    tp, h = sim_bme280.calibration_bytes(cal)
    assert bme280.parse_calibration(tp, h) == cal


@given(calibrations, st.integers(0, 2**20 - 1), st.integers(0, 2**20 - 1), st.integers(0, 65535))
def test_compensation_never_raises_and_humidity_stays_in_range(cal, adc_t, adc_p, adc_h) -> None:
    fine = bme280.t_fine(cal, adc_t)
    assert isinstance(bme280.temperature(fine), int)
    assert isinstance(bme280.pressure(cal, fine, adc_p), int)  # the driver range-checks it
    assert 0 <= bme280.humidity(cal, fine, adc_h) <= 100 * 1024


@given(st.floats(-40, 85), st.floats(300, 1100), st.floats(0, 100))
def test_integer_and_double_formulas_agree(t: float, p: float, h: float) -> None:
    # Full 20-bit raw values: the integer temperature formula drops adc_T's 3 lowest bits
    # (up to 11 units of t_fine, 0.002 degC), which moves the pressure by up to half a pascal.
    adc_t, adc_p, adc_h = sim_bme280.raw_values(CAL, t, p, h)
    fine = bme280.t_fine(CAL, adc_t)
    fine_d = sim_bme280.t_fine_double(CAL, adc_t)
    assert bme280.temperature(fine) / 100 == pytest.approx(fine_d / 5120, abs=0.01)
    assert bme280.pressure(CAL, fine, adc_p) / 256 == pytest.approx(
        sim_bme280.pressure_double(CAL, fine_d, adc_p), abs=1.0)
    assert bme280.humidity(CAL, fine, adc_h) / 1024 == pytest.approx(
        sim_bme280.humidity_double(CAL, fine_d, adc_h), abs=0.01)
