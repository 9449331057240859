"""RTC memory, shared out: the application's boot state first, the LoRaWAN session after it.

RTC memory survives deep sleep and resets but not a power cut; whatever must outlive a power
cut is mirrored to flash by its owner. A region offers the `machine.RTC().memory()` API so
each owner sees only its own bytes.
"""

import struct

_MAGIC = b"AM"
_APP_FMT = ">2sIBB"  # magic, boot count, consecutive failed boots, pending uplink length
APP_SIZE = 8
PENDING_SIZE = 24  # an uplink deferred by the duty cycle waits here: fport + payload
MAC_OFFSET = APP_SIZE + PENDING_SIZE


class Region:
    """`offset`..`offset+size` of RTC memory, with the RTC.memory() API."""

    def __init__(self, rtc, offset, size):
        self.rtc = rtc
        self.offset = offset
        self.size = size

    def memory(self, data=None):
        whole = bytes(self.rtc.memory())
        if data is None:
            return whole[self.offset : self.offset + self.size]
        if len(data) > self.size:
            raise ValueError("RTC region overflow: %d > %d bytes" % (len(data), self.size))
        whole = whole + bytes(max(0, self.offset - len(whole)))
        self.rtc.memory(whole[: self.offset] + bytes(data) + whole[self.offset + len(data) :])
        return None


class BootState:
    """Boot counter and consecutive failed boots, for safe mode; a pending deferred uplink."""

    def __init__(self, rtc):
        self.region = Region(rtc, 0, MAC_OFFSET)
        raw = self.region.memory()
        if len(raw) >= APP_SIZE and raw[:2] == _MAGIC:
            _, self.boots, self.failures, plen = struct.unpack(_APP_FMT, raw[:APP_SIZE])
            self.pending = raw[APP_SIZE : APP_SIZE + plen] if plen else None
        else:  # power-on: RTC memory is blank
            self.boots, self.failures, self.pending = 0, 0, None

    def _store(self):
        pending = self.pending or b""
        head = struct.pack(_APP_FMT, _MAGIC, self.boots, min(self.failures, 255), len(pending))
        self.region.memory(head + pending)

    def begin_boot(self):
        """Counts this boot as failed until `healthy` says otherwise."""
        self.boots += 1
        self.failures += 1
        self._store()

    def healthy(self):
        self.failures = 0
        self._store()

    def defer(self, fport, data):
        if len(data) + 1 > PENDING_SIZE:
            raise ValueError("deferred uplink too long")
        self.pending = bytes([fport]) + bytes(data)
        self._store()

    def pending_uplink(self):
        """(fport, payload) of the deferred uplink, or None; cleared once it was sent."""
        return (self.pending[0], self.pending[1:]) if self.pending else None

    def clear_pending(self):
        if self.pending:
            self.pending = None
            self._store()
