"""One wake of the virtual board: runs boot.py then main.py from the board's flash (the cwd),
in one shared __main__ namespace, as MicroPython on an ESP32 does after reset.

Behind a pty (allmende.boards.virtual.pty_board) the interpreter stays for the REPL
afterwards (MICROPYINSPECT, unset again when boot.py/main.py exit), and the board's flash
becomes the filesystem root: the harness sets ALLMENDE_VBOARD_FLASH (host path of the flash
directory) and ALLMENDE_VBOARD_MOUNT (host path of the state directory, holding the
precompiled runtime; reachable as the hidden /.vboard). ALLMENDE_VBOARD_REPL=raw means the board restarts into the raw REPL, where a
board runs boot.py but not main.py; "interrupted" skips main.py too (Ctrl-C woke the board).
"""

import os
import sys


def _run(name, scope):
    try:
        with open(name) as f:
            code = f.read()
    except OSError:
        return
    try:
        exec(code, scope)
    except SystemExit:
        # machine.deepsleep()/reset() or sys.exit(): the process must end (the harness
        # restarts the board), not fall into the REPL.
        os.unsetenv("MICROPYINSPECT")
        raise


class _BoardFs:
    """The board's filesystem behind the pty: the flash directory as "/", and the state
    directory (with the runtime) under the hidden /.vboard, which no listing shows, so
    `mpremote fs ls :/` sees only the flash and `rm -r :/` cannot reach the state.

    Built on the unix port's VfsPosix, whose rename() loses the old path when it has a root
    (both paths are built in one buffer: ENOENT); renames go through a root-less VfsPosix."""

    HIDDEN = "/.vboard"

    def __init__(self, flash, state):
        import vfs

        self._flash_root = flash.rstrip("/")
        self._state_root = state.rstrip("/")
        self._flash = vfs.VfsPosix(flash)
        self._state = vfs.VfsPosix(state)
        self._host = vfs.VfsPosix()

    def _route(self, path):
        if not path.startswith("/"):
            path = self._flash.getcwd().rstrip("/") + "/" + path
        if path == self.HIDDEN or path.startswith(self.HIDDEN + "/"):
            return self._state, path[len(self.HIDDEN):] or "/", self._state_root
        return self._flash, path, self._flash_root

    def rename(self, old, new):
        _, old, old_root = self._route(old)
        _, new, new_root = self._route(new)
        self._host.rename(old_root + old, new_root + new)

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        fs, path, _ = self._route(path)
        return fs.open(path, mode)

    def ilistdir(self, path):
        # With the size as 4th field, as a board's littlefs/FAT listing has it.
        fs, path, _ = self._route(path)
        prefix = path.rstrip("/") + "/"
        for entry in fs.ilistdir(path):
            size = 0
            if entry[1] == 0x8000:
                try:
                    size = fs.stat(prefix + entry[0])[6]
                except OSError:
                    pass
            yield (entry[0], entry[1], entry[2], size)

    def stat(self, path):
        fs, path, _ = self._route(path)
        return fs.stat(path)

    def statvfs(self, path):
        fs, path, _ = self._route(path)
        return fs.statvfs(path)

    def mkdir(self, path):
        fs, path, _ = self._route(path)
        return fs.mkdir(path)

    def rmdir(self, path):
        fs, path, _ = self._route(path)
        return fs.rmdir(path)

    def remove(self, path):
        fs, path, _ = self._route(path)
        return fs.remove(path)

    def chdir(self, path):
        return self._flash.chdir(path)

    def getcwd(self):
        return self._flash.getcwd()


def _mount_flash_as_root(flash, state):
    # Like an ESP32, "/" is the flash: mpremote's absolute paths land in the flash directory.
    import vfs

    vfs.umount("/")
    vfs.mount(_BoardFs(flash, state), "/")
    os.chdir("/")
    with open(_BoardFs.HIDDEN + "/ready", "w") as f:
        f.write("1")
    return _BoardFs.HIDDEN + "/runtime"


def start():
    runtime = sys.path[0]  # the directory of this script: the runtime (ROM)
    flash = os.getenv("ALLMENDE_VBOARD_FLASH")
    if flash:
        runtime = _mount_flash_as_root(flash, os.getenv("ALLMENDE_VBOARD_MOUNT"))
        # Then the REPL, as on a board — also after an error or Ctrl-C in boot.py/main.py.
        os.putenv("MICROPYINSPECT", "1")
    # As on a board: the flash root and its lib/ — with the virtual hardware shadowing the
    # unix port's partial `machine` module.
    sys.path[:] = [runtime, "", ".frozen", "lib"]
    import vdevices

    vdevices.power_on()
    del vdevices
    scope = {"__name__": "__main__"}
    _run("boot.py", scope)
    # "raw": restarting into the raw REPL; "interrupted": woken from deep sleep by Ctrl-C.
    if os.getenv("ALLMENDE_VBOARD_REPL") not in ("raw", "interrupted"):
        _run("main.py", scope)


start()
# The REPL that follows behind a pty starts with a clean namespace, as on a board.
del _run, _BoardFs, _mount_flash_as_root, start, os, sys
