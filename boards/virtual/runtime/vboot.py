"""One wake of the virtual board: runs boot.py then main.py from the board's flash (the cwd),
in one shared __main__ namespace, as MicroPython on an ESP32 does after reset."""

import sys


def _run(name, scope):
    try:
        with open(name) as f:
            code = f.read()
    except OSError:
        return
    exec(code, scope)


def start():
    runtime = sys.path[0]
    # As on a board: the flash root and its lib/ — with the virtual hardware shadowing the
    # unix port's partial `machine` module.
    sys.path[:] = [runtime, "", ".frozen", "lib"]
    scope = {"__name__": "__main__"}
    _run("boot.py", scope)
    _run("main.py", scope)


start()
