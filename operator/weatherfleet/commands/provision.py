"""`weatherfleet provision DEVICE --port PORT`: config, CA, client certificate and key, signing key and the
firmware bundle onto a real board with mpremote (optionally flashing MicroPython with esptool first)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", metavar="DEVICE", help="deviceId of a WeatherSensor in --dir")
    parser.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    parser.add_argument("--dir", type=Path, default=Path("gitops/examples"), help="folder of CR files")
    parser.add_argument("--workdir", type=Path, default=Path(".weatherfleet"), help="local CA and keys")
    parser.add_argument("--broker-host", help="MQTT broker host the board uses (default: the fleet's)")
    parser.add_argument("--broker-port", type=int, help="MQTT broker port (default: the fleet's)")
    parser.add_argument("--ota-host", default="otaflux", help="OtaFlux host the board uses")
    parser.add_argument("--ota-port", type=int, default=8080)
    parser.add_argument(
        "--wifi-ssid", help="Wi-Fi network; the password is read from $WEATHERFLEET_WIFI_PASSWORD"
    )
    parser.add_argument(
        "--firmware", type=Path, help="a built bundle folder (weatherfleet firmware build --out)"
    )
    parser.add_argument("--flash-image", type=Path, help="MicroPython .bin to flash with esptool first")
    parser.add_argument("--dry-run", action="store_true", help="stage the files and print the commands only")


def _tool(name: str, pip_name: str, dry_run: bool) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    if dry_run:
        return name
    raise SystemExit(f"error: {name} is not installed: run `.venv/bin/pip install {pip_name}`")


def run(args: argparse.Namespace) -> int:
    from ..local.deviceconfig import Endpoints, device_config, device_files
    from ..local.provisioning import bundle_board_files, plan_provision, stage_files
    from ..local.resources import ResourceError, load_resources
    from ..local.signing import device_key, ensure_signing_key
    from ..pki import LocalCA

    try:
        resources = load_resources(args.dir)
    except ResourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sensor = resources.sensor(args.device)
    if sensor is None:
        known = ", ".join(sorted(s.spec.device_id for s in resources.sensors)) or "none"
        print(
            f"error: no WeatherSensor with deviceId {args.device} in {args.dir} (known: {known})",
            file=sys.stderr,
        )
        return 2
    fleet = next((f for f in resources.fleets if sensor in resources.members(f)), None)
    if args.flash_image is not None and not args.flash_image.is_file():
        print(f"error: --flash-image {args.flash_image}: no such file", file=sys.stderr)
        return 2
    wifi = None
    if args.wifi_ssid:
        password = os.environ.get("WEATHERFLEET_WIFI_PASSWORD")
        if password is None:
            print("error: --wifi-ssid needs the password in $WEATHERFLEET_WIFI_PASSWORD", file=sys.stderr)
            return 2
        wifi = {"ssid": args.wifi_ssid, "password": password}

    workdir = args.workdir.resolve()
    ca = LocalCA(workdir / "pki")
    _private, public = ensure_signing_key(workdir / "signing")
    endpoints = Endpoints(
        broker_host=args.broker_host or (fleet.spec.broker.host if fleet else "localhost"),
        broker_port=args.broker_port or (fleet.spec.broker.port if fleet else 8883),
        ota_host=args.ota_host,
        ota_port=args.ota_port,
    )
    bundle: dict[str, bytes] = {}
    version = None
    if args.firmware is not None:
        try:
            bundle, version = bundle_board_files(args.firmware)
        except (OSError, ValueError) as error:
            print(f"error: --firmware: {error}", file=sys.stderr)
            return 2
    config = device_config(
        sensor, fleet, endpoints, [device_key(public)], wifi=wifi, firmware_version=version
    )
    files = {**bundle, **device_files(ca, config)}
    secret = {"certs/device.key", "config.json"} if wifi else {"certs/device.key"}
    staged = stage_files(workdir / "provision" / args.device, files, secret)
    plan = plan_provision(
        args.device,
        args.port,
        staged,
        flash_image=args.flash_image,
        mpremote=_tool("mpremote", "mpremote", args.dry_run),
        esptool=_tool("esptool", "esptool", args.dry_run) if args.flash_image else "esptool",
    )
    print(plan.describe())
    if args.dry_run:
        return 0
    for command in plan.commands:
        print("+ " + " ".join(command[:6]) + (" ..." if len(command) > 6 else ""), flush=True)
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            print(f"error: step failed with exit code {result.returncode}; the board may be half provisioned:"
                  " run the same command again", file=sys.stderr)  # fmt: skip
            return result.returncode
    print(f"{args.device} provisioned")
    return 0
