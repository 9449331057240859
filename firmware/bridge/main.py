"""Entry point of the bridge firmware on an ESP32 LoRa board (copied to / as main.py).

The USB serial line is the protocol channel; Ctrl-C still reaches the REPL for a technician.
"""

import select
import sys
import time

import bridge
import machine
from board import Board


def _reader():
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)

    def read_available():
        chars = []
        while len(chars) < 700 and poll.poll(0):
            chars.append(sys.stdin.read(1))
        return "".join(chars)

    return read_available


def main():
    board = Board.load()
    radio = bridge.gateway_mode(board.radio())
    link = bridge.Bridge(radio, sys.stdout.write, chip=board.d["radio"]["chip"])
    link.run(_reader())


try:
    main()
except Exception as e:  # last resort on a board: report, then restart clean
    sys.print_exception(e)
    time.sleep(5)
    machine.reset()
