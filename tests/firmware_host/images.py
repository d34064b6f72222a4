"""Emulated firmware images for partition tests: a valid ESP32 app image whose frozen modules say which
version it is (and carry incompressible padding, so an update spans several flash blocks)."""

from __future__ import annotations

import random

from devicesim import esp_image


def image(version: str, padding: int = 12_000) -> bytes:
    blob = random.Random(version).randbytes(padding)
    return esp_image.build_image(
        esp_image.application_zip({"fwversion.py": f"VERSION = {version!r}\n", "padding.bin": blob})
    )


def frozen(version: str) -> dict[str, bytes]:
    return {"fwversion.py": f"VERSION = {version!r}\n".encode()}


# An image updater written against MicroPython's esp32.Partition API, as an application would be:
# stream the new image into the next slot block by block, read it back and check its sha256, switch, reset;
# the new image confirms itself. A file "no-confirm" makes the new image skip the confirmation.
UPDATER = """
import esp32, machine, hashlib, os
import fwversion
running = esp32.Partition(esp32.Partition.RUNNING)
print("BOOTED", fwversion.VERSION, running.info()[4])

def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False

if fwversion.VERSION == "2":
    if exists("no-confirm"):
        print("NOT CONFIRMING")
        machine.reset()
    esp32.Partition.mark_app_valid_cancel_rollback()
    print("CONFIRMED", running.info()[4])
elif exists("update.bin") and not exists("gave-up"):
    target = running.get_next_update()
    buf = bytearray(4096)
    digest = hashlib.sha256()
    size = 0
    with open("update.bin", "rb") as f:
        block = 0
        while True:
            n = f.readinto(buf)
            if not n:
                break
            digest.update(buf[:n])
            size += n
            for i in range(n, 4096):
                buf[i] = 0xFF
            target.writeblocks(block, buf)
            block += 1
    check = hashlib.sha256()
    left = size
    block = 0
    while left:
        target.readblocks(block, buf)
        check.update(buf[: min(left, 4096)])
        left -= min(left, 4096)
        block += 1
    if check.digest() != digest.digest():
        print("VERIFY FAILED")
    else:
        if exists("no-confirm"):
            with open("gave-up", "w") as f:
                f.write("1")
        target.set_boot()
        print("SWITCHING")
        machine.reset()
print("IDLE", fwversion.VERSION)
"""
