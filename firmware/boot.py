# Puts the active application slot on sys.path. Must always return: a failure here only
# falls back to slot A, never stops the board from reaching main.py.
import sys

try:
    with open("slot") as f:
        _slot = f.read().strip()
    if _slot not in ("a", "b"):
        _slot = "a"
except OSError:
    _slot = "a"
sys.path.insert(1, "app_" + _slot)
del _slot
