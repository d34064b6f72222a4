# The board's flash filesystem (MicroPython): a directory on the host, mounted at "/" through this VFS so
# every byte written is counted by the host, which can cut the power at any of them. Renames, removes,
# mkdirs and rmdirs are atomic units (LittleFS semantics: they happen entirely or not at all); a write is
# torn at the armed byte (harsher than LittleFS, which commits a file on close).
import io
import vfs

import _hw


def _unit():
    if _hw.units(1) < 1:
        _hw.cut()


class File(io.IOBase):
    """A file opened for writing: writes go straight to the host file, counted."""

    def __init__(self, f):
        self.f = f

    def write(self, b):
        n = len(b)
        ok = _hw.units(n)
        if ok < n:
            if ok:
                self.f.write(b[:ok])
            _hw.cut()
        return self.f.write(b)

    def read(self, n=-1):
        return self.f.read(n)

    def readinto(self, b, n=-1):
        return self.f.readinto(b) if n < 0 else self.f.readinto(memoryview(b)[:n])

    def readline(self):
        return self.f.readline()

    def seek(self, offset, whence=0):
        return self.f.seek(offset, whence)

    def tell(self):
        return self.f.tell()

    def flush(self):
        pass  # unbuffered: what was written is on flash

    def ioctl(self, req, arg):
        return 0

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


class Flash:
    """The flash directory at "/"; read-only host folders (the emulated ROM and the booted image's frozen
    modules) answer under their own prefixes without showing in the flash's listing."""

    def __init__(self, root, hidden):
        self.p = vfs.VfsPosix(root)
        self.hidden = [(prefix, vfs.VfsPosix(folder)) for prefix, folder in hidden]

    def _rom(self, path):
        for prefix, fs in self.hidden:
            if path.startswith(prefix):
                return fs, path[len(prefix) - 1 :]  # "/.rom/x" -> "/x" under that folder
        return None, path

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        fs, sub = self._rom(path)
        if fs is not None:
            return fs.open(sub, "rb" if "b" in mode else "r")
        if "w" in mode or "a" in mode or "+" in mode or "x" in mode:
            if "w" in mode:
                try:
                    self.p.stat(path)
                    _unit()  # truncating an existing file reaches flash too
                except OSError:
                    pass
            return File(self.p.open(path, mode))
        return self.p.open(path, mode)

    def ilistdir(self, path):
        fs, sub = self._rom(path)
        return (fs or self.p).ilistdir(sub)

    def stat(self, path):
        fs, sub = self._rom(path)
        return (fs or self.p).stat(sub)

    def statvfs(self, path):
        # a 4 MiB ESP32's vfs partition: 240 blocks of 4 KiB
        return (4096, 4096, 240, 200, 200, 0, 0, 0, 0, 255)

    def mkdir(self, path):
        _unit()
        self.p.mkdir(path)

    def rmdir(self, path):
        _unit()
        self.p.rmdir(path)

    def remove(self, path):
        self.p.stat(path)  # ENOENT before the unit: nothing reaches flash
        _unit()
        self.p.remove(path)

    def rename(self, old, new):
        self.p.stat(old)
        _unit()
        self.p.rename(old, new)

    def chdir(self, path):
        self.p.chdir(path)

    def getcwd(self):
        return self.p.getcwd()
