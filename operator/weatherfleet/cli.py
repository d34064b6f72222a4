"""The `weatherfleet` command. Each subcommand lives in its own module and is imported only when used,
so `weatherfleet crds` does not pay for kopf, paho or ORAS."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module exposing `add_arguments(parser)` and `run(args) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "crds": ("weatherfleet.commands.crds", "print (or --write) the CustomResourceDefinitions"),
    "render": ("weatherfleet.commands.render", "render every child of the CRs in a folder as YAML"),
    "operator": ("weatherfleet.commands.operator", "run the kopf operator against a cluster"),
    "otaflux": ("otaflux.cli", "run the OtaFlux OTA server"),
    "ingest": ("weatherfleet.commands.ingest", "move MQTT measurements into InfluxDB 3 or SQLite"),
    "firmware": ("weatherfleet.commands.firmware", "build, sign, verify and push firmware"),
    "up": ("weatherfleet.commands.up", "run the whole system locally"),
    "demo": ("weatherfleet.commands.demo", "play the scripted demo story locally"),
    "provision": ("weatherfleet.commands.provision", "write config, certificates and firmware to a board"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (default: this process's arguments): only the subcommand it names imports
    its module and adds its arguments."""
    selected = (sys.argv[1:] if argv is None else argv)[:1]
    parser = argparse.ArgumentParser(prog="weatherfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module_name)
        if name in selected:
            importlib.import_module(module_name).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
