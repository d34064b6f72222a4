"""What `weatherfleet provision` puts on a board, and the exact commands that put it there.

Pure planning (`plan_provision`) is separate from running the commands, so the file set and the command
lines are tested without a board; `--dry-run` prints the same plan."""

from __future__ import annotations

import hashlib
import json
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


class ProvisionPlan(BaseModel):
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


def plan_provision(
    device: str,
    port: str,
    files: list[BoardFile],
    *,
    flash_image: Path | None = None,
    mpremote: str = "mpremote",
    esptool: str = "esptool",
    chip: str = "esp32",
    baud: int = 460800,
) -> ProvisionPlan:
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
    return ProvisionPlan(device=device, port=port, files=files, commands=commands)


def bundle_board_files(bundle_dir: Path) -> dict[str, bytes]:
    """Board path -> content of a built firmware bundle (the `weatherfleet firmware build --out` folder,
    with its manifest.json listing the files)."""
    manifest_path = Path(bundle_dir) / "manifest.json"
    if not manifest_path.exists():
        raise ValueError(f"{bundle_dir}: no manifest.json, not a firmware bundle folder")
    manifest = json.loads(manifest_path.read_text())
    files = {}
    for entry in manifest.get("files", []):
        path = Path(bundle_dir) / entry["path"]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"].removeprefix("sha256:"):
            raise ValueError(f"{path}: content does not match the bundle manifest's sha256")
        files[entry["path"]] = data
    files["manifest.json"] = manifest_path.read_bytes()
    return files
