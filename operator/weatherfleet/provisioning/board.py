"""What `weatherfleet provision` puts on a board, and the exact commands that put it there.

Computing the steps (`provisioning_steps`) is separate from running the commands, so the file set and the command
lines are tested without a board; `--dry-run` prints the same steps."""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

from pydantic import BaseModel

MICROPYTHON_OFFSET = "0x1000"  # where the ESP32 (classic) MicroPython image starts


class BoardFile(BaseModel):
    board_path: str
    local_path: Path
    size: int
    sha256: str
    secret: bool = False


class ProvisioningSteps(BaseModel):
    device: str
    port: str
    files: list[BoardFile]
    commands: list[list[str]]

    def describe(self) -> str:
        lines = [f"provisioning {self.device} on {self.port}", "files:"]
        for f in self.files:
            mark = "  (private key)" if f.secret else ""
            lines.append(f"  {f.board_path:<32} {f.size:>7} bytes  sha256:{f.sha256[:16]}{mark}")
        lines.append("commands:")
        lines.extend("  " + shlex.join(c) for c in self.commands)
        return "\n".join(lines)


def stage_files(staging: Path, files: dict[str, bytes], secret_paths: set[str]) -> list[BoardFile]:
    """Write the board's files under `staging` (private keys 0600, the folder 0700)."""
    staging.mkdir(parents=True, exist_ok=True)
    os.chmod(staging, 0o700)
    staged = []
    for board_path in sorted(files):
        if board_path.startswith("/") or ".." in Path(board_path).parts:
            raise ValueError(f"{board_path!r} is not a relative board path")
        local = staging / board_path
        local.parent.mkdir(parents=True, exist_ok=True)
        data = files[board_path]
        fd = os.open(
            local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if board_path in secret_paths else 0o644
        )
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        staged.append(
            BoardFile(
                board_path=board_path,
                local_path=local,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                secret=board_path in secret_paths,
            )
        )
    return staged


def _mkdirs_script(directories: list[str]) -> str:
    """One line of MicroPython creating the folders that are missing, parents first (`mpremote fs mkdir`
    fails on a folder that exists, as on a board provisioned before)."""
    return (
        f"import os; [os.mkdir('/' + d) for d in {tuple(directories)!r} "
        "if d.split('/')[-1] not in os.listdir('/' + '/'.join(d.split('/')[:-1]))]"
    )


def provisioning_steps(
    device: str,
    port: str,
    files: list[BoardFile],
    *,
    flash_image: Path | None = None,
    mpremote: str = "mpremote",
    esptool: str = "esptool",
    chip: str = "esp32",
    baud: int = 460800,
) -> ProvisioningSteps:
    commands: list[list[str]] = []
    if flash_image is not None:
        commands.append([esptool, "--chip", chip, "--port", port, "erase_flash"])
        commands.append(
            [esptool, "--chip", chip, "--port", port, "--baud", str(baud), "write_flash", "-z",
             MICROPYTHON_OFFSET, str(flash_image)]
        )  # fmt: skip
    directories: list[str] = []
    for f in files:
        parts = Path(f.board_path).parts[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in directories:
                directories.append(d)
    connect = [mpremote, "connect", port]
    if directories:
        commands.append([*connect, "exec", _mkdirs_script(directories)])
    # config.json last: a board interrupted half-way has no config and idles safely instead of booting
    # with certificates or code that are not all there
    ordered = sorted(files, key=lambda f: (f.board_path == "config.json", f.board_path))
    for f in ordered:
        commands.append([*connect, "fs", "cp", str(f.local_path), f":{f.board_path}"])
    commands.append([*connect, "reset"])
    return ProvisioningSteps(device=device, port=port, files=files, commands=commands)


def bundle_board_files(bundle_dir: Path) -> tuple[dict[str, bytes], str]:
    """(board path -> content, version) of a built firmware bundle (`weatherfleet firmware build --out`):
    its files flat in the board's root, where boot.py finds a first install (no slot yet)."""
    from ..firmware.build import BuildError, load_bundle

    try:
        manifest, files = load_bundle(Path(bundle_dir))
    except BuildError as error:
        raise ValueError(str(error)) from None
    return {name: path.read_bytes() for name, path in files.items()}, manifest.version
