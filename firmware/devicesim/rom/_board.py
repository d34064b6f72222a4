# The board's ROM (MicroPython): what the ESP32 firmware does before boot.py, then boot.py and main.py.
#
#   MICROPYPATH=ROM micropython -X heapsize=H -m _board ROM FLASH_DIR FROZEN_DIR|- CAUSE UID_HEX RFD WFD
#
# Opens the wire to the hardware host, mounts the flash directory at "/" (counted writes, power cuts),
# puts the booted image's frozen modules (/.image) and the emulated hardware modules (machine, esp32, network) on
# sys.path behind the flash, then runs boot.py and main.py in one __main__ namespace like pyexec does.
import sys
import vfs
import os

import _hw


def _run(name, ns):
    try:
        f = open(name)
    except OSError:
        return
    src = f.read()
    f.close()
    code = compile(src, name, "exec")
    del src
    exec(code, ns)


def _main():
    rom, flash, frozen, cause, uid, rfd, wfd = sys.argv[1:8]
    _hw.init(int(rfd), int(wfd))
    _hw.CAUSE = int(cause)
    import binascii

    _hw.UID = binascii.unhexlify(uid)
    hidden = [("/.rom/", rom)]
    if frozen != "-":
        hidden.append(("/.image/", frozen))
    import _flash

    vfs.umount("/")
    vfs.mount(_flash.Flash(flash, hidden), "/")
    os.chdir("/")
    # ESP32: ['', '.frozen', '/lib']. '.frozen' is the VM's own (asyncio, ...); the frozen modules of the
    # booted emulated image are a folder next to it, the emulated built-ins come last
    sys.path[:] = ["", ".frozen", "/.image", "/lib", "/.rom"]
    sys.argv[:] = []
    ns = {"__name__": "__main__"}
    for script in ("boot.py", "main.py"):
        try:
            _run(script, ns)
        except SystemExit:
            break
        except BaseException as e:
            sys.print_exception(e)
            msg = "%s: %s" % (type(e).__name__, e)
            _hw.send(_hw.OP_ERROR, msg.encode())
    _hw.args()
    _hw.send(_hw.OP_IDLE)
    print("MicroPython REPL (main.py ended)")
    _hw.hang()


_main()
