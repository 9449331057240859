"""Where the session lives: RTC memory (survives deep sleep), mirrored rarely to a flash file.

The mirror is written through a temporary file and an atomic rename, so a power cut
during the write leaves either the old or the new mirror, never a torn one.
"""

import os

from lorawan import session

SOURCE_RTC = "rtc"
SOURCE_FLASH = "flash"
SOURCE_NEW = "new"


class Store:
    """Reads and writes one Session in `rtc` memory at `offset` and in the file `path`.

    `rtc` has the machine.RTC API: memory() -> bytes, memory(data). Bytes outside
    [offset, offset + session.SIZE) are preserved. `every` is the mirror interval: the
    flash mirror is at most `every` uplinks behind, and a restore from it jumps FCntUp
    ahead by `every` so no counter is ever sent twice.
    """

    def __init__(self, rtc, path, every, offset=0):
        self._rtc = rtc
        self._path = path
        self._tmp = path + ".tmp"
        self._every = every
        self._offset = offset
        self._buf = bytearray(session.SIZE)

    def restore(self, ident):
        """The session for credentials `ident`, and where it came from (SOURCE_*)."""
        s = session.Session(ident)
        nonce = 0
        if self._read_rtc(s):
            if s.ident == ident:
                return s, SOURCE_RTC
            nonce = s.nonce_next
        for path in (self._tmp, self._path):
            if self._read_file(s, path):
                if s.ident == ident:
                    # RTC memory was lost: up to `every` counters were sent after this mirror.
                    s.fcnt_up = min(s.fcnt_up + self._every, session.FCNT_LIMIT)
                    self._write_rtc(s)
                    return s, SOURCE_FLASH
                nonce = max(nonce, s.nonce_next)
        # Other credentials or nothing stored: a fresh state, but a DevNonce never goes back.
        s = session.Session(ident)
        s.nonce_next = nonce
        return s, SOURCE_NEW

    def save(self, s, flash=False):
        """Writes `s` to RTC memory, and first to the flash mirror when `flash` is true."""
        if flash:
            previous = s.fcnt_flash
            s.fcnt_flash = s.fcnt_up
            s.pack(self._buf)
            try:
                with open(self._tmp, "wb") as f:
                    f.write(self._buf)
                os.rename(self._tmp, self._path)
            except OSError:
                # The mirror still holds the old counter: keep saying so, or a later
                # restore would jump ahead from a value that never reached flash.
                s.fcnt_flash = previous
                raise
        else:
            s.pack(self._buf)
        self._write_rtc(s, packed=True)

    def mirror_due(self, s):
        """True when the flash mirror must be written before FCntUp - 1 goes on air."""
        return s.fcnt_up - s.fcnt_flash >= self._every

    def _read_rtc(self, s):
        mem = self._rtc.memory()
        start = self._offset
        if len(mem) < start + session.SIZE:
            return False
        return s.unpack(memoryview(mem)[start : start + session.SIZE])

    def _read_file(self, s, path):
        try:
            with open(path, "rb") as f:
                data = f.read(session.SIZE + 1)
        except OSError:
            return False
        return len(data) == session.SIZE and s.unpack(data)

    def _write_rtc(self, s, packed=False):
        if not packed:
            s.pack(self._buf)
        start = self._offset
        end = start + session.SIZE
        mem = bytearray(self._rtc.memory())
        if len(mem) < end:
            mem.extend(bytes(end - len(mem)))
        mem[start:end] = self._buf
        self._rtc.memory(mem)
