"""`weatherfleet crds`: print the generated CRDs, or write them into crds/."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..crds import all_crds, file_name, to_yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--write", metavar="DIR", type=Path, help="write one file per CRD into DIR")


def run(args: argparse.Namespace) -> int:
    docs = all_crds()
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        for doc in docs:
            (args.write / file_name(doc)).write_text(to_yaml(doc))
        return 0
    print("---\n".join(to_yaml(doc) for doc in docs), end="")
    return 0
