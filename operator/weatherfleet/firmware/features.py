"""Build features -> device files: the MicroPython equivalent of the original firmware's Cargo features.

The file names are those of firmware/device/ (flat, as on the board). A feature pulls in its files; the
core is always there. `resolve` validates a feature list and says clearly what is wrong."""

from __future__ import annotations

from ..models.release import FEATURES

SENSORS = ("bme280", "scd30", "sds011")
PAYLOADS = ("influx", "json")

# boot.py and main.py must exist; every source file that no feature claims is core (so a new helper the
# device code grows is shipped without touching this table)
REQUIRED_FILES: tuple[str, ...] = ("boot.py", "main.py")

FEATURE_FILES: dict[str, tuple[str, ...]] = {
    "bme280": ("bme280.py",),
    "scd30": ("scd30.py",),
    "sds011": ("sds011.py",),
    # payload.py writes both formats (the feature selects one in the config); ssl is built into
    # MicroPython, so tls/mtls add no files either
    "influx": (),
    "json": (),
    "tls": (),
    "mtls": (),
    "ota": ("ota.py", "crc32.py", "edverify.py", "httpc.py"),
}
assert set(FEATURE_FILES) == set(FEATURES), "FEATURE_FILES must cover exactly the FirmwareRelease features"


class FeatureError(ValueError):
    """The feature list cannot be built; the message names the problem and the valid choices."""


def resolve(requested: list[str]) -> list[str]:
    """The validated, de-duplicated, sorted feature list."""
    features = [f.strip().lower() for f in requested if f.strip()]
    unknown = sorted(set(features) - set(FEATURES))
    if unknown:
        raise FeatureError(f"unknown feature(s) {', '.join(unknown)}; known features: {', '.join(FEATURES)}")
    chosen = set(features)
    if chosen >= set(PAYLOADS):
        raise FeatureError("features influx and json conflict: a build has exactly one payload format")
    if not chosen & set(PAYLOADS):
        raise FeatureError("choose a payload format: add influx or json")
    if "mtls" in chosen and "tls" not in chosen:
        raise FeatureError("feature mtls requires tls (client certificates are sent inside TLS)")
    if not chosen & set(SENSORS):
        raise FeatureError(f"choose at least one sensor: {', '.join(SENSORS)}")
    return sorted(chosen)


def claimed_files() -> set[str]:
    return {file for files in FEATURE_FILES.values() for file in files}


def files_for(features: list[str], available: set[str]) -> list[str]:
    """The device files (of `available`, the source folder's .py files) a build with these features
    contains: the core (whatever no feature claims) plus the selected features' files."""
    selected = set(REQUIRED_FILES)
    for feature in features:
        selected.update(FEATURE_FILES[feature])
    missing = sorted(selected - available)
    if missing:
        raise FeatureError(f"firmware source is missing {', '.join(missing)} (needed by the features)")
    return sorted(selected | (available - claimed_files()))
