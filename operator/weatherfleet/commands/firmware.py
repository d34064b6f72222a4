"""`weatherfleet firmware build|sign|verify|push|keygen`: the release path for device firmware.

  weatherfleet firmware build --features bme280,sds011,tls,ota,influx --version 1.2.0 --out dist/fw
  weatherfleet firmware keygen --out keys/release            # keys/release.key (0600) + keys/release.pub
  weatherfleet firmware sign dist/fw --key keys/release.key  # dist/fw/signature.json
  weatherfleet firmware verify dist/fw --public-key keys/release.pub
  weatherfleet firmware push localhost:5000/fleet/dev-01:1.2.0 --bundle dist/fw --plain-http

Exit codes: 0 done, 1 the operation failed (verification, registry), 2 bad input (features, paths, refs).
The registry password is read from $WEATHERFLEET_REGISTRY_PASSWORD, never from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

USAGE_ERROR, FAILED = 2, 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="build a bundle with only the selected features")
    build.add_argument(
        "--features", required=True, help="comma-separated: bme280,scd30,sds011,influx|json,tls,mtls,ota"
    )
    build.add_argument("--version", required=True, help="semantic version of the release")
    build.add_argument("--security-version", type=int, default=0, metavar="N",
                       help="anti-rollback counter in the signed manifest (devices refuse releases below "
                       "the highest they confirmed); default 0")  # fmt: skip
    build.add_argument("--out", required=True, type=Path, help="output folder (absent or empty)")
    build.add_argument("--board", default="esp32-devkit-v1")
    build.add_argument("--source", type=Path, default=None, help="device sources (default: firmware/device)")
    build.add_argument(
        "--emit",
        choices=("mpy", "py"),
        default="mpy",
        help="mpy for boards; py ships sources for emulated devices",
    )
    build.add_argument("--march", default=None, help="mpy-cross -march (e.g. xtensawin for @native code)")

    keygen = sub.add_parser("keygen", help="make a signing key pair")
    keygen.add_argument(
        "--out", required=True, type=Path, help="path prefix: writes PREFIX.key and PREFIX.pub"
    )
    keygen.add_argument(
        "--algorithm",
        choices=("ed25519", "ecdsa-p256"),
        default="ed25519",
        help="ed25519 (devices verify it) or ecdsa-p256 (OtaFlux/operator only)",
    )

    sign = sub.add_parser(
        "sign", help="sign a bundle folder (or an image): cosign's payload naming its manifest digest"
    )
    sign.add_argument("target", type=Path, help="bundle folder, or an image file with --version")
    sign.add_argument("--key", required=True, type=Path, help="PEM private key (Ed25519 or ECDSA P-256)")
    _image_options(sign)
    sign.add_argument(
        "--output", type=Path, default=None, help="signature file (default: FOLDER/signature.json)"
    )
    sign.add_argument(
        "--repository",
        default=None,
        help="host/repository the release is pushed to: the docker-reference of the cosign payload "
        "(informational; cosign does not compare it)",
    )

    verify = sub.add_parser("verify", help="verify a bundle folder, an image, or a pushed REF")
    verify.add_argument("target", help="bundle folder, image file, or REGISTRY/REPO:TAG")
    verify.add_argument(
        "--public-key", required=True, type=Path, action="append", help="PEM public key (repeatable)"
    )
    verify.add_argument(
        "--signature", type=Path, default=None, help="signature file (default: FOLDER/signature.json)"
    )
    _image_options(verify)
    _registry_options(verify)

    push = sub.add_parser("push", help="push to an OCI registry with ORAS, signature included")
    push.add_argument("ref", help="REGISTRY/REPOSITORY:TAG (or REPOSITORY:TAG with --registry)")
    what = push.add_mutually_exclusive_group(required=True)
    what.add_argument("--bundle", type=Path, help="a built bundle folder")
    what.add_argument("--image", type=Path, help="a firmware binary (one layer)")
    push.add_argument("--key", type=Path, default=None, help="sign while pushing with this private key")
    push.add_argument("--signature", type=Path, default=None, help="image signature file from `sign`")
    push.add_argument(
        "--allow-unsigned", action="store_true", help="push without a signature (not for fleets)"
    )
    push.add_argument("--version", default=None, help="image version (bundles carry theirs)")
    push.add_argument("--board", default="esp32-devkit-v1")
    push.add_argument("--features", default="", help="image features, comma-separated")
    push.add_argument("--security-version", type=int, default=0, help="image anti-rollback counter")
    push.add_argument("--quiet", action="store_true", help="no progress bar")
    _registry_options(push)


def _image_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", default=None, help="for an image file: its version")
    parser.add_argument("--board", default="esp32-devkit-v1", help="for an image file: its board")
    parser.add_argument("--features", default="", help="for an image file: its features")
    parser.add_argument(
        "--security-version", type=int, default=0, help="for an image file: its anti-rollback counter"
    )


def _registry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry", default=None, help="registry URL (http://, https://, oci-layout:///dir)"
    )
    parser.add_argument("--plain-http", action="store_true", help="talk HTTP, not HTTPS, to REGISTRY in REF")
    parser.add_argument("--username", default=os.environ.get("WEATHERFLEET_REGISTRY_USERNAME"))


def _error(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _features(text: str) -> list[str]:
    return [f for f in text.split(",") if f.strip()]


def run(args: argparse.Namespace) -> int:
    from ..firmware.build import BuildError
    from ..firmware.features import FeatureError
    from ..firmware.push import PushError
    from ..firmware.signing import SigningError
    from ..oci import OciError

    try:
        return {"build": _build, "keygen": _keygen, "sign": _sign, "verify": _verify, "push": _push}[
            args.action
        ](args)
    except FeatureError as error:
        return _error(str(error), USAGE_ERROR)
    except (BuildError, PushError) as error:
        return _error(str(error), USAGE_ERROR)
    except SigningError as error:
        return _error(str(error), FAILED)
    except OciError as error:
        return _error(f"registry: {error}", FAILED)


def _build(args: argparse.Namespace) -> int:
    from ..firmware import build

    manifest = build.build(
        _features(args.features),
        args.version,
        args.out,
        board=args.board,
        source=args.source or build.DEFAULT_SOURCE,
        emit=args.emit,
        march=args.march,
        security_version=args.security_version,
    )
    total = sum(f.size for f in manifest.files)
    print(
        f"built {manifest.version} [{','.join(manifest.features)}] for {manifest.board}: "
        f"{len(manifest.files)} files, {total} bytes -> {args.out}"
    )
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from ..firmware import signing
    from ..oci.signatures import key_id

    private, public = args.out.with_suffix(".key"), args.out.with_suffix(".pub")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    key = signing.generate_key(args.algorithm, private, public)
    print(f"wrote {private} (private, 0600) and {public}; key id {key_id(key)}")
    raw = signing.device_key_text(key)
    if raw:
        print(f"device config signingKeys entry: {raw}")
    return 0


def _digest_of(target: Path, args: argparse.Namespace) -> str:
    from ..firmware import signing
    from ..firmware.build import BuildError

    if target.is_dir():
        return signing.bundle_digest(target)
    if target.is_file():
        if not args.version:
            raise BuildError(f"{target} is an image file: --version is required")
        return signing.image_digest(
            target, args.version, args.board, _features(args.features), args.security_version
        )
    raise BuildError(f"{target}: no such bundle folder or image file")


def _sign(args: argparse.Namespace) -> int:
    from ..firmware import signing

    digest = _digest_of(args.target, args)
    key = signing.read_private_key(args.key)
    if args.repository:
        document = signing.sign_digest(key, digest, args.repository)
    else:
        document = signing.sign_digest(key, digest)
    output = args.output or (
        args.target / signing.SIGNATURE_FILE if args.target.is_dir() else args.target.with_suffix(".sig.json")
    )
    signing.write_signature(output, document)
    print(f"signed {digest} with {document.algorithm} key {document.key_id} -> {output}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..firmware import push, signing

    keys = [signing.read_public_key(p) for p in args.public_key]
    target = Path(args.target)
    if target.exists():
        digest = _digest_of(target, args)
        signature = args.signature or (
            target / signing.SIGNATURE_FILE if target.is_dir() else target.with_suffix(".sig.json")
        )
        signing.check(keys, signing.read_signature(signature), digest)
    else:
        ref = push.parse_reference(args.target, args.registry, args.plain_http)
        digest = push.verify_pushed(_store(ref, args), ref, keys)
    print(f"OK: {args.target} {digest} is signed by a trusted key")
    return 0


def _store(ref, args: argparse.Namespace):
    from .. import oci

    password = os.environ.get("WEATHERFLEET_REGISTRY_PASSWORD")
    return oci.connect(ref.registry, username=args.username, password=password)


def _push(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from ..firmware import push, signing
    from ..firmware.build import load_bundle

    ref = push.parse_reference(args.ref, args.registry, args.plain_http)
    key = signing.read_private_key(args.key) if args.key else None
    store = _store(ref, args)
    if args.bundle:
        _manifest, files = load_bundle(args.bundle)
        sizes = {name: path.stat().st_size for name, path in files.items()}
    else:
        if not args.version:
            return _error("--image needs --version", USAGE_ERROR)
        sizes = {args.image.name: args.image.stat().st_size if args.image.is_file() else 0}
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        disable=args.quiet,
        transient=False,
    ) as bar:
        task = bar.add_task(f"pushing {ref}", total=sum(sizes.values()))

        def advance(name: str, size: int) -> None:
            bar.update(task, advance=sizes.get(name, size), description=f"pushed {name}")

        if args.bundle:
            result = push.push_bundle(
                store, ref, args.bundle, key=key, allow_unsigned=args.allow_unsigned, progress=advance
            )
        else:
            result = push.push_image(
                store,
                ref,
                args.image,
                version=args.version,
                board=args.board,
                features=_features(args.features),
                signature_file=args.signature or args.image.with_suffix(".sig.json"),
                key=key,
                allow_unsigned=args.allow_unsigned,
                progress=advance,
                security_version=args.security_version,
            )
    signed = f", signature at {result.signature_tag}" if result.signature_tag else ", UNSIGNED"
    print(f"pushed {result.kind} {ref}@{result.digest} ({result.uploaded} bytes){signed}")
    return 0
