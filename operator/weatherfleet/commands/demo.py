"""`weatherfleet demo`: the scripted story (see weatherfleet.demo.story); exits non-zero when a check of
the story does not hold."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", type=Path, default=Path(".weatherfleet/demo"), help="state of the demo run"
    )
    parser.add_argument(
        "--report", type=Path, help="where to write the HTML report (default: in the workdir)"
    )
    parser.add_argument(
        "--fast", action="store_true", help="the shortened story (fewer devices, shorter waves)"
    )
    parser.add_argument("--devices", type=int, help="number of emulated devices")
    parser.add_argument(
        "--registry", choices=("auto", "distribution", "layout"), default="auto", help="registry to use"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the previous demo's state instead of starting fresh"
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..demo.story import FAST, FULL, Story
    from ..local.supervisor import Stop, stop_on_signals
    from ..services.process import MissingDependency

    config = (FAST if args.fast else FULL).model_copy()
    if args.devices is not None:
        if not 5 <= args.devices <= 200:
            print("error: --devices must be between 5 and 200", file=sys.stderr)
            return 2
        config.devices = args.devices
    workdir = args.workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / "demo-crs").is_dir():
        # the demo wipes its workdir; never a folder it did not make (a mistyped --workdir ~ must not cost a home)
        print(
            f"error: {workdir} is not empty and not a demo workdir; choose another --workdir", file=sys.stderr
        )
        return 2
    if workdir.exists() and not args.keep:
        # a story starts from factory-fresh boards; kill leftovers of a crashed demo before wiping
        from ..local.supervisor import Supervisor
        from ..local.workdir import Workdir

        Supervisor(Workdir(workdir)).reap_stale()
        shutil.rmtree(workdir)
    # a log or a pipe gets wide tables too (rich assumes 80 columns when it cannot ask a terminal)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    story = Story(workdir, config, console, registry=args.registry)
    ok = False
    with stop_on_signals():
        try:
            ok = story.run()
        except MissingDependency as error:
            print(f"error: {error}", file=sys.stderr)
            story.system.stop()
            return 3
        except (KeyboardInterrupt, Stop):
            console.print("interrupted")
            story.system.stop()
            return 130
        except Exception as error:  # a step blew up: still show what was checked, still clean up
            console.print(f"[red]the story broke off:[/] {type(error).__name__}: {error}")
            ok = False
        try:
            story.summary()
            report = story.report(args.report or workdir / "report.html")
            console.print(f"report: {report}")
        finally:
            story.system.stop()
    console.print("[green]the story held[/]" if ok else "[red]the story did not hold[/]")
    return 0 if ok else 1
