"""`weatherfleet otaflux` (and the `otaflux` command): run the OTA server."""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load
from .config import add_arguments as _add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load(args)
    except ConfigError as exc:
        print(f"otaflux: configuration error: {exc}", file=sys.stderr)
        return 2
    from .server import run as serve

    return serve(settings)
