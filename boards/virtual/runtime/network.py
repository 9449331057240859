"""`network` for the virtual board: a LoRa node has no Wi-Fi; the interface stays inactive."""

STA_IF = 0
AP_IF = 1


class WLAN:
    def __init__(self, interface=STA_IF):
        self._active = False

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = False  # no radio to bring up on the virtual board
        return None

    def isconnected(self):
        return False

    def connect(self, *args, **kwargs):
        raise OSError("virtual board: no Wi-Fi")

    def config(self, *args, **kwargs):
        if args == ("mac",):
            import vstate

            return vstate.node_id_bytes()
        return None
