"""Exceptions of the LoRaWAN device MAC; each carries the data a caller needs to react."""


class LoRaWANError(Exception):
    """Base class of every error the MAC raises on purpose."""


class NotJoined(LoRaWANError):
    """No session: join first (OTAA), or the frame counter is exhausted and a rejoin is due."""


class DevNonceExhausted(LoRaWANError):
    """All 65536 DevNonces of this DevEUI are used: the device can never join again."""


class DutyCycleDeferred(LoRaWANError):
    """Sending now would break the duty cycle; nothing was sent, retry after `wait_ms` ms."""

    def __init__(self, wait_ms):
        super().__init__(wait_ms)
        self.wait_ms = wait_ms


class PayloadTooLarge(LoRaWANError):
    """The payload does not fit the current data rate; at most `max_len` bytes fit."""

    def __init__(self, max_len):
        super().__init__(max_len)
        self.max_len = max_len


class NoChannel(LoRaWANError):
    """No enabled channel allows data rate `dr` (the channel plan excludes it)."""

    def __init__(self, dr):
        super().__init__(dr)
        self.dr = dr
