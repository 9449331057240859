# Runs one wake of the node; any escaping error is printed, then the board resets.
import sys

import machine

try:
    import airnode

    airnode.run()
except Exception as exc:
    sys.print_exception(exc)
    import time

    time.sleep(5)
    machine.reset()
