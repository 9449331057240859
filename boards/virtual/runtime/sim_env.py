"""The simulated physical world of one wake: seeded, so a test knows what a node measured.

Every wake draws new values from (seed, boot index) and appends them to truth.jsonl in the
state directory: the oracle the tests compare decoded uplinks with. Values come at the
resolution the real sensors deliver, so a correct driver reproduces them exactly.
"""

import json
import random

import vstate

# name: (low, high, decimals) — plausible for a German city street.
_RANGES = {
    "pm25": (3.0, 45.0, 1),
    "temperature": (-8.0, 32.0, 2),
    "humidity": (25.0, 95.0, 1),
    "pressure": (975.0, 1040.0, 2),
    "co2": (410.0, 1400.0, 0),
    "battery": (3.35, 4.15, 2),
}


class Environment:
    def __init__(self, seed, boot_index, faults=None, fixed=None):
        self._rng = random
        random.seed(seed * 100003 + boot_index)
        values = {}
        for name, (low, high, decimals) in _RANGES.items():
            values[name] = round(random.uniform(low, high), decimals)
        values["pm10"] = round(values["pm25"] * random.uniform(1.2, 1.9), 1)
        values.update(fixed or {})
        self.values = values
        self.faults = faults or {}
        self.boot_index = boot_index

    @classmethod
    def from_state(cls):
        sim = vstate.sim()
        env = cls(sim.get("seed", 1), vstate.boot().get("index", 0), sim.get("faults"),
                  sim.get("env"))
        vstate.append_line("truth.jsonl", json.dumps(dict(env.values, boot=env.boot_index,
                                                          faults=env.faults)))
        return env

    def value(self, name):
        return self.values[name]

    def fault(self, device):
        return self.faults.get(device)

    def rand(self):
        return self._rng.random()

    def randbytes(self, n):
        return bytes(self._rng.getrandbits(8) for _ in range(n))
