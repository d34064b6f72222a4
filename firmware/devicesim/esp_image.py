"""The ESP32 application image format, as the second-stage bootloader checks it before booting a slot.

Layout (ESP-IDF `esp_image_header_t`): a 24-byte header (magic 0xE9, segment count, SPI settings, entry
point, extended header with `hash_appended`), segments (load address, length, data), padding so that the
checksum byte ends a 16-byte line, the checksum (0xEF XOR every segment byte), then the SHA-256 of all of
that. An emulated image carries one segment whose data is the "application": a zip of frozen modules the
runner imports (MicroPython firmware ships frozen modules the same way)."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile

MAGIC = 0xE9
CHECKSUM_SEED = 0xEF
HEADER = struct.Struct("<BBBBIBBBBHBHH4sB")  # 24 bytes
SEGMENT = struct.Struct("<II")
LOAD_ADDRESS = 0x3F400020  # DROM, where read-only data lives on the ESP32


def build_image(application: bytes) -> bytes:
    """A valid image whose single segment is `application` (padded to 4 bytes)."""
    # the length prefix lets the runner recover the exact application from the padded segment
    data = struct.pack("<I", len(application)) + application
    data += b"\0" * (-len(data) % 4)
    header = HEADER.pack(MAGIC, 1, 2, 0x20, 0x40080000, 0xEE, 0, 0, 0, 0, 0, 0, 0xFFFF, b"\0" * 4, 1)
    body = header + SEGMENT.pack(LOAD_ADDRESS, len(data)) + data
    checksum = CHECKSUM_SEED
    for byte in data:
        checksum ^= byte
    body += b"\0" * (15 - len(body) % 16) + bytes([checksum])
    return body + hashlib.sha256(body).digest()


def parse_image(read) -> bytes | None:
    """The application inside a flashed image, or None when the bootloader would reject it.
    `read(offset, n)` reads the slot."""
    header = read(0, HEADER.size)
    fields = HEADER.unpack(header)
    magic, segments, hash_appended = fields[0], fields[1], fields[-1]
    if magic != MAGIC or not 1 <= segments <= 16:
        return None
    offset, checksum, parts = HEADER.size, CHECKSUM_SEED, []
    for _ in range(segments):
        _address, length = SEGMENT.unpack(read(offset, SEGMENT.size))
        if length > 16 * 1024 * 1024:
            return None
        data = read(offset + SEGMENT.size, length)
        for byte in data:
            checksum ^= byte
        parts.append(data)
        offset += SEGMENT.size + length
    offset += 15 - offset % 16
    if read(offset, 1)[0] != checksum:
        return None
    offset += 1
    if hash_appended:
        body = read(0, offset)
        if read(offset, 32) != hashlib.sha256(body).digest():
            return None
    application = b"".join(parts)
    (length,) = struct.unpack_from("<I", application)
    return application[4 : 4 + length]


def application_zip(files: dict[str, bytes | str]) -> bytes:
    """The emulated application: a zip of frozen module sources."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in sorted(files.items()):
            archive.writestr(name, content)
    return buffer.getvalue()


def frozen_modules(application: bytes) -> dict[str, bytes]:
    """The frozen modules of an application (empty for anything that is not our zip)."""
    try:
        with zipfile.ZipFile(io.BytesIO(application)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except (zipfile.BadZipFile, ValueError):
        return {}
