"""`os` over the device's flash directory (LittleFS-like: renames and removes are atomic)."""

from __future__ import annotations

import os as host_os
import posixpath
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..device import Boot

S_IFDIR, S_IFREG = 0x4000, 0x8000


def make_os(boot: Boot) -> types.ModuleType:
    flash = boot.device.flash
    module = types.ModuleType("os")

    def host(path: str):
        boot.check()
        return flash.host_path(str(path), boot.cwd)

    def _enoent(path):
        if not path.exists():
            raise OSError(2, "ENOENT")

    def listdir(path: str = "") -> list[str]:
        target = host(path or boot.cwd)
        _enoent(target)
        if not target.is_dir():
            raise OSError(20, "ENOTDIR")
        return sorted(p.name for p in target.iterdir() if not p.name.endswith(".devicesim-tmp"))

    def ilistdir(path: str = ""):
        target = host(path or boot.cwd)
        for name in listdir(path):
            entry = target / name
            yield (
                name,
                S_IFDIR if entry.is_dir() else S_IFREG,
                0,
                0 if entry.is_dir() else entry.stat().st_size,
            )

    def stat(path: str) -> tuple:
        target = host(path)
        _enoent(target)
        size = 0 if target.is_dir() else target.stat().st_size
        mtime = int(target.stat().st_mtime)
        return (S_IFDIR if target.is_dir() else S_IFREG, 0, 0, 0, 0, 0, size, mtime, mtime, mtime)

    def remove(path: str) -> None:
        target = host(path)
        _enoent(target)
        if target.is_dir():
            raise OSError(21, "EISDIR")
        flash.metadata(target.unlink)

    def rmdir(path: str) -> None:
        target = host(path)
        _enoent(target)
        if any(target.iterdir()):
            raise OSError(39, "ENOTEMPTY")
        flash.metadata(target.rmdir)

    def mkdir(path: str) -> None:
        target = host(path)
        if target.exists():
            raise OSError(17, "EEXIST")
        if not target.parent.is_dir():
            raise OSError(2, "ENOENT")
        flash.metadata(target.mkdir)

    def rename(old: str, new: str) -> None:
        source, destination = host(old), host(new)
        _enoent(source)
        if destination.is_dir() and any(destination.iterdir()):
            raise OSError(39, "ENOTEMPTY")
        flash.metadata(lambda: host_os.replace(source, destination))

    def chdir(path: str) -> None:
        target = host(path)
        if not target.is_dir():
            raise OSError(2, "ENOENT")
        boot.cwd = posixpath.normpath(posixpath.join(boot.cwd, str(path)))

    def statvfs(path: str = "/") -> tuple:
        block = 4096
        total = flash.capacity // block
        free = max(0, total - (flash.used_bytes() + block - 1) // block)
        return (block, block, total, free, free, 0, 0, 0, 0, 255)

    module.listdir, module.ilistdir, module.stat, module.remove, module.unlink = (
        listdir,
        ilistdir,
        stat,
        remove,
        remove,
    )
    module.rmdir, module.mkdir, module.rename, module.chdir, module.statvfs = (
        rmdir,
        mkdir,
        rename,
        chdir,
        statvfs,
    )
    module.getcwd = lambda: boot.cwd
    module.sync = lambda: None
    module.sep = "/"
    module.urandom = host_os.urandom
    module.uname = lambda: types.SimpleNamespace(
        sysname="esp32",
        nodename="esp32",
        release="1.24.1",
        version="v1.24.1 (devicesim)",
        machine="ESP32 module with ESP32",
    )
    module.dupterm = lambda stream=None, index=0: None
    module.mount = module.umount = lambda *a, **k: None
    return module
