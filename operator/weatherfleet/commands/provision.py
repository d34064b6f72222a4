"""`weatherfleet provision DEVICE --port PORT`: config, CA, client certificate and key, signing keys and the
firmware bundle onto a real board with mpremote (optionally flashing MicroPython with esptool first).

Everything comes from the cluster the board will join, through a kubeconfig (`--kubeconfig`/`--context`,
else $KUBECONFIG, else the local mode's `<workdir>/kubeconfig`): the WeatherSensor with this deviceId, its
fleet (and NanoMQ login), and the public keys its releases name. The board's identity is made here: a new
key that goes only onto the board, and a certificate signing request that becomes an approved cert-manager
CertificateRequest for the fleet's issuer (`provisioning.identity`); the signed certificate is awaited
(`--timeout`). In the local mode that issuer is the local CA, through the cert-manager stand-in."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", metavar="DEVICE", help="deviceId of a WeatherSensor")
    parser.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    parser.add_argument("-n", "--namespace", default="weatherfleet", help="namespace of the WeatherSensor")
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="the cluster (default: $KUBECONFIG, else <workdir>/kubeconfig of `up`)",
    )
    parser.add_argument("--context", help="kubeconfig context (default: its current context)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for cert-manager to sign the board's certificate request",
    )
    parser.add_argument("--workdir", type=Path, default=Path(".weatherfleet"), help="where files are staged")
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
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="stage the files and print the commands only (the certificate is still requested and signed: "
        "the staged files are the real ones)",
    )


def _tool(name: str, pip_name: str, dry_run: bool) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    if dry_run:
        return name
    raise SystemExit(f"error: {name} is not installed: run `.venv/bin/pip install {pip_name}`")


def _kubeconfig(args: argparse.Namespace) -> Path | None:
    if args.kubeconfig is not None:
        return args.kubeconfig
    if os.environ.get("KUBECONFIG"):
        return Path(os.environ["KUBECONFIG"])
    local = args.workdir / "kubeconfig"
    return local if local.exists() else None


def run(args: argparse.Namespace) -> int:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    from ..models import FirmwareRelease, SensorFleet, WeatherSensor
    from ..provisioning import credentials, identity
    from ..provisioning.board import bundle_board_files, provisioning_steps, stage_files
    from ..provisioning.deviceconfig import Endpoints, device_config, device_files
    from ..reconcilers.fleet import fleet_for_sensor

    kubeconfig = _kubeconfig(args)
    if kubeconfig is None:
        print(
            "error: no cluster to provision from: pass --kubeconfig, set $KUBECONFIG, or start "
            f"`weatherfleet up --workdir {args.workdir}`",
            file=sys.stderr,
        )
        return 2
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

    try:
        api = config.new_client_from_config(str(kubeconfig), context=args.context)
    except (config.ConfigException, OSError, ValueError) as error:
        print(f"error: kubeconfig {kubeconfig}: {error}", file=sys.stderr)
        return 2
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)

    def listed(plural: str, model):
        items = custom.list_namespaced_custom_object("weatherfleet.io", "v1alpha1", args.namespace, plural)
        out = []
        for item in items["items"]:
            try:
                out.append(model.model_validate(item))
            except ValueError:
                continue  # an invalid object is reported on itself by the operator
        return out

    try:
        sensors = listed("weathersensors", WeatherSensor)
        sensor = next((s for s in sensors if s.spec.device_id == args.device), None)
        if sensor is None:
            known = ", ".join(sorted(s.spec.device_id for s in sensors)) or "none"
            print(
                f"error: no WeatherSensor with deviceId {args.device} in namespace {args.namespace} "
                f"(known: {known})",
                file=sys.stderr,
            )
            return 2
        fleet = fleet_for_sensor(sensor, listed("sensorfleets", SensorFleet))
        if fleet is None:
            print(
                f"error: {args.device} is in no SensorFleet: no issuer to sign its certificate",
                file=sys.stderr,
            )
            return 2
        keys = credentials.signing_keys(core, listed("firmwarereleases", FirmwareRelease))
        signed = identity.request_identity(
            api, sensor, fleet, timeout=args.timeout, note=lambda m: print(m, file=sys.stderr)
        )
        print(f"certificate signed through CertificateRequest {signed.request}")
        creds = identity.board_credentials(core, signed, sensor, fleet)
    except credentials.NotIssued as error:
        print(f"error: {args.device} cannot be provisioned yet: {error}", file=sys.stderr)
        return 3
    except identity.NotSigned as error:
        print(f"error: {args.device}: {error}", file=sys.stderr)
        return 3
    except (ApiException, HTTPError, OSError) as error:
        print(f"error: the cluster in {kubeconfig} did not answer: {error}", file=sys.stderr)
        return 3

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
    config_ = device_config(
        sensor, fleet, endpoints, keys, wifi=wifi, firmware_version=version, login=creds.login
    )
    files = {**bundle, **device_files(config_, creds)}
    # config.json holds the Wi-Fi and broker passwords when there are any
    secret = {"certs/device.key", "config.json"} if (wifi or creds.login) else {"certs/device.key"}
    staged = stage_files(args.workdir.resolve() / "provision" / args.device, files, secret)
    steps = provisioning_steps(
        args.device,
        args.port,
        staged,
        flash_image=args.flash_image,
        mpremote=_tool("mpremote", "mpremote", args.dry_run),
        esptool=_tool("esptool", "esptool", args.dry_run) if args.flash_image else "esptool",
    )
    print(steps.describe())
    if args.dry_run:
        return 0
    for command in steps.commands:
        print("+ " + " ".join(command[:6]) + (" ..." if len(command) > 6 else ""), flush=True)
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            print(f"error: step failed with exit code {result.returncode}; the board may be half provisioned:"
                  " run the same command again", file=sys.stderr)  # fmt: skip
            return result.returncode
    print(f"{args.device} provisioned")
    return 0
