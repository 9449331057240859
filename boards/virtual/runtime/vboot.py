"""One wake of the virtual board: runs boot.py then main.py from the board's flash (the cwd),
in one shared __main__ namespace, as MicroPython on an ESP32 does after reset.

Behind a pty (allmende.boards.virtual.pty_board) the interpreter stays for the REPL
afterwards (MICROPYINSPECT, unset again when boot.py/main.py exit), and the board's flash becomes the filesystem root: the
harness sets ALLMENDE_VBOARD_FLASH (host path of the flash directory) and
ALLMENDE_VBOARD_MOUNT (host path mounted at /.vboard: the state directory, holding a copy of
this runtime). ALLMENDE_VBOARD_REPL=raw means the board restarts into the raw REPL, where a
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


class _HostDir:
    """A host directory as a filesystem (the unix port's VfsPosix with a root), except that
    rename() works: VfsPosix builds both paths of a rename in one buffer when it has a root,
    so the old path is lost (ENOENT); here the rename goes through a root-less VfsPosix."""

    def __init__(self, root):
        import vfs

        self._root = root.rstrip("/")
        self._fs = vfs.VfsPosix(root)
        self._host = vfs.VfsPosix()

    def _host_path(self, path):
        if not path.startswith("/"):
            path = self._fs.getcwd().rstrip("/") + "/" + path
        return self._root + path

    def rename(self, old, new):
        self._host.rename(self._host_path(old), self._host_path(new))

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        return self._fs.open(path, mode)

    def ilistdir(self, path):
        # With the size as 4th field, as a board's littlefs/FAT listing has it.
        prefix = path.rstrip("/") + "/" if path else ""
        for entry in self._fs.ilistdir(path):
            size = 0
            if entry[1] == 0x8000:
                try:
                    size = self._fs.stat(prefix + entry[0])[6]
                except OSError:
                    pass
            yield (entry[0], entry[1], entry[2], size)

    def stat(self, path):
        return self._fs.stat(path)

    def statvfs(self, path):
        return self._fs.statvfs(path)

    def mkdir(self, path):
        return self._fs.mkdir(path)

    def rmdir(self, path):
        return self._fs.rmdir(path)

    def remove(self, path):
        return self._fs.remove(path)

    def chdir(self, path):
        return self._fs.chdir(path)

    def getcwd(self):
        return self._fs.getcwd()


def _mount_flash_as_root(flash, state):
    # Like an ESP32, "/" is the flash: mpremote's absolute paths land in the flash directory.
    # The runtime and the state directory stay reachable below /.vboard.
    import vfs

    vfs.umount("/")
    vfs.mount(_HostDir(flash), "/")
    vfs.mount(_HostDir(state), "/.vboard")
    os.chdir("/")
    with open("/.vboard/ready", "w") as f:
        f.write("1")
    return "/.vboard/runtime"


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
del _run, _HostDir, _mount_flash_as_root, start, os, sys
