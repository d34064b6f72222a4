"""The per-boot import system: each boot of each device has its own module table, its own shims and its
own `__builtins__` (with `__import__`, `open` and `print` bound to that device).

The device code is executed with these builtins, so `import machine` inside it resolves to this device's
shim and `import mqtt` to this device's file on its flash, never to another device's or the host's.
Only modules MicroPython also has are importable: CPython-only imports fail here as on the board."""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import importlib
import posixpath
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .device import Boot

# MicroPython modules that CPython's own implementation serves faithfully enough
PASSTHROUGH = {
    "array",
    "binascii",
    "collections",
    "errno",
    "hashlib",
    "heapq",
    "io",
    "json",
    "math",
    "cmath",
    "random",
    "re",
    "select",
    "struct",
}
U_ALIASES = {"u" + name: name for name in [*PASSTHROUGH, "asyncio", "os", "socket", "ssl", "sys", "time"]}
U_ALIASES["uasyncio"] = "asyncio"


_CODE_CACHE: dict[tuple[str, bytes], types.CodeType] = {}


def compiled(source: bytes, filename: str) -> types.CodeType:
    """Code objects are immutable, so devices running the same file share one compilation (hundreds of
    devices boot the same firmware; compiling it once per device would dominate start-up)."""
    key = (filename.rsplit("/", 1)[-1], hashlib.sha256(source).digest())
    code = _CODE_CACHE.get(key)
    if code is None:
        code = _CODE_CACHE[key] = compile(source, filename, "exec")
    return code


class DeviceImporter:
    def __init__(
        self, boot: Boot, shims: dict[str, Callable[[Boot], types.ModuleType]], frozen: dict[str, bytes]
    ) -> None:
        self.boot = boot
        self.shims = shims
        self.frozen = frozen
        self.modules: dict[str, types.ModuleType] = {}
        self.builtins: dict[str, Any] = dict(builtins.__dict__)
        self.builtins["__import__"] = self.import_
        for name in ("breakpoint", "help", "copyright", "credits", "license", "exit", "quit"):
            self.builtins.pop(name, None)

    # -- the device's __import__ ----------------------------------------------------------------------
    def import_(self, name: str, globals=None, locals=None, fromlist=(), level: int = 0):
        if level:
            package = (globals or {}).get("__package__") or ""
            parts = package.split(".") if package else []
            base = ".".join(parts[: len(parts) - level + 1])
            name = f"{base}.{name}" if name and base else (name or base)
        module = self.load(name)
        if fromlist:
            for item in fromlist:
                if item != "*" and not hasattr(module, item):
                    with contextlib.suppress(ImportError):
                        self.load(f"{name}.{item}")
            return module
        return self.modules[name.partition(".")[0]]

    def load(self, name: str) -> types.ModuleType:
        self.boot.check()
        if name in self.modules:
            return self.modules[name]
        head, _, _tail = name.rpartition(".")
        if head:
            parent = self.load(head)
            module = self._from_path(name, getattr(parent, "__path__", None))
            setattr(parent, name.rpartition(".")[2], module)
            return module
        canonical = U_ALIASES.get(name, name)
        if canonical in self.shims:
            module = self.modules.get(canonical) or self.shims[canonical](self.boot)
            self.modules[canonical] = self.modules[name] = module
            return module
        if canonical in PASSTHROUGH:
            module = importlib.import_module(canonical)
            self.modules[name] = module
            return module
        return self._from_path(name, None)

    def _candidates(self, name: str, search: list[str] | None):
        leaf = name.rpartition(".")[2]
        for entry in search if search is not None else list(self.modules["sys"].path):
            if entry == ".frozen":
                for file in (f"{leaf}.py", f"{leaf}/__init__.py"):
                    if file in self.frozen:
                        yield ("frozen", file)
                continue
            base = posixpath.join(self.boot.cwd, entry) if not entry.startswith("/") else entry
            for file, package in ((f"{leaf}.py", False), (f"{leaf}/__init__.py", True), (f"{leaf}", True)):
                path = posixpath.join(base, file)
                host = self.boot.device.flash.host_path(path)
                if package and file == leaf:
                    if host.is_dir():
                        yield ("namespace", path)
                elif host.is_file():
                    yield ("file", path)
                elif file.endswith(".py") and host.with_suffix(".mpy").is_file() and not package:
                    raise ImportError(
                        f"{path[:-3]}.mpy is compiled bytecode: devicesim runs sources, "
                        "build the bundle with --emit py for emulated devices"
                    )

    def _from_path(self, name: str, search: list[str] | None) -> types.ModuleType:
        for kind, path in self._candidates(name, search):
            module = types.ModuleType(name)
            module.__dict__["__builtins__"] = self.builtins
            if kind == "namespace":
                module.__path__ = [path]
                self.modules[name] = module
                return module
            if kind == "frozen":
                source, filename = self.frozen[path], f"<frozen {path}>"
                module.__file__ = path
            else:
                host = self.boot.device.flash.host_path(path)
                source, filename = host.read_bytes(), str(host)
                module.__file__ = path
            if path.endswith("__init__.py"):
                module.__path__ = [posixpath.dirname(path)]
                module.__package__ = name
            else:
                module.__package__ = name.rpartition(".")[0]
            self.modules[name] = module
            try:
                exec(compiled(source, filename), module.__dict__)
            except BaseException:
                self.modules.pop(name, None)
                raise
            return module
        raise ImportError(f"no module named '{name}'")

    def run_file(self, path: str, namespace: dict[str, Any]) -> bool:
        """Execute boot.py / main.py in the `__main__` namespace; False when the file does not exist."""
        host = self.boot.device.flash.host_path(path)
        if not host.is_file():
            return False
        namespace.setdefault("__builtins__", self.builtins)
        namespace.setdefault("__name__", "__main__")
        exec(compiled(host.read_bytes(), str(host)), namespace)
        return True
