"""`sys`, `gc` and `micropython`: the interpreter-level modules, per boot."""

from __future__ import annotations

import traceback
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..device import Boot

HEAP_BYTES = 111_000  # what MicroPython reports on an ESP32 without PSRAM


class _Console:
    def __init__(self, boot: Boot) -> None:
        self._boot, self._partial = boot, ""

    def write(self, text) -> int:
        text = text.decode() if isinstance(text, bytes | bytearray) else str(text)
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self._boot.device.log(line)
        return len(text)

    def flush(self) -> None:
        pass


def make_sys(boot: Boot) -> types.ModuleType:
    module = types.ModuleType("sys")
    console = _Console(boot)
    module.path = ["", ".frozen", "/lib"]
    module.modules = boot.importer.modules
    module.platform = "esp32"
    module.byteorder = "little"
    module.maxsize = 2**31 - 1
    module.argv = []
    module.version = "3.4.0; MicroPython v1.24.1 on 2024-11-29 (devicesim)"
    module.version_info = (3, 4, 0)
    module.implementation = types.SimpleNamespace(
        name="micropython",
        version=(1, 24, 1, ""),
        _machine="ESP32 module with ESP32 (devicesim)",
        _mpy=0x0A06,
    )
    module.stdout = module.stderr = console
    module.stdin = None

    def print_exception(exc: BaseException, file=None) -> None:
        (file or console).write("".join(traceback.format_exception(exc)))

    def exit(code=0):
        raise SystemExit(code)

    module.print_exception = print_exception
    module.exit = exit
    module.atexit = lambda func: func

    def _print(*args, sep=" ", end="\n", file=None) -> None:
        (file or console).write(sep.join(str(a) for a in args) + end)

    # the device's print goes to its own console
    boot.importer.builtins["print"] = _print
    boot.importer.builtins["open"] = lambda path, mode="r", *a, **k: _open(boot, path, mode)
    boot.importer.builtins["input"] = lambda *_a: (_ for _ in ()).throw(OSError(5, "no REPL input"))
    return module


def _open(boot: Boot, path, mode: str):
    from ..flash import open_on_flash

    boot.check()
    return open_on_flash(boot.device.flash, str(path), mode, boot.cwd, boot.check)


def make_gc(boot: Boot) -> types.ModuleType:
    """Heap figures are an estimate (CPython cannot measure a MicroPython heap); allocation figures that
    matter are measured under the real MicroPython interpreter in bench/firmware.py."""
    module = types.ModuleType("gc")
    state = {"enabled": True, "threshold": -1}

    def mem_alloc() -> int:
        return min(HEAP_BYTES - 4096, 18_000 + 2_600 * len(boot.importer.modules))

    module.collect = lambda: None
    module.mem_alloc = mem_alloc
    module.mem_free = lambda: HEAP_BYTES - mem_alloc()
    module.enable = lambda: state.update(enabled=True)
    module.disable = lambda: state.update(enabled=False)
    module.isenabled = lambda: state["enabled"]

    def threshold(amount=None):
        if amount is None:
            return state["threshold"]
        state["threshold"] = amount
        return None

    module.threshold = threshold
    return module


def make_micropython(boot: Boot) -> types.ModuleType:
    module = types.ModuleType("micropython")
    state = {"locked": 0, "level": 0}

    def schedule(function, argument) -> None:
        boot.loop.call_soon_threadsafe(function, argument)

    module.const = lambda value: value
    module.native = module.viper = module.asm_thumb = module.asm_xtensa = lambda f: f
    module.opt_level = lambda level=None: state["level"] if level is None else state.update(level=level)
    module.alloc_emergency_exception_buf = lambda size: None
    module.mem_info = lambda verbose=None: boot.device.log("mem: total=111000")
    module.qstr_info = lambda verbose=None: None
    module.stack_use = lambda: 2048
    module.heap_lock = lambda: state.update(locked=state["locked"] + 1)
    module.heap_unlock = lambda: state.update(locked=max(0, state["locked"] - 1)) or state["locked"]
    module.heap_locked = lambda: state["locked"]
    module.kbd_intr = lambda char: None
    module.schedule = schedule
    return module
