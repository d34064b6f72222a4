"""`weatherfleet up`: the whole system on this machine, run by the same operator as in a cluster, on an
embedded API server that kubectl talks to (see weatherfleet.local.system)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=Path("gitops/examples"), help="folder of CR files")
    parser.add_argument("--sensors", type=int, help="run N emulated devices (clones of the folder's sensors)")
    parser.add_argument("--workdir", type=Path, default=Path(".weatherfleet"), help="state of the local run")
    parser.add_argument(
        "--registry",
        choices=("auto", "distribution", "layout"),
        default="auto",
        help="docker-registry when installed (auto), or the embedded OCI layout folder",
    )
    parser.add_argument(
        "--measurement-interval", type=int, help="seconds between readings (overrides the CRs)"
    )
    parser.add_argument("--check-interval", type=int, help="seconds between OTA checks (overrides the CRs)")
    parser.add_argument("--no-live", action="store_true", help="print the table now and then instead")
    parser.add_argument(
        "--print-every", type=float, default=10.0, help="seconds between tables with --no-live"
    )
    parser.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    parser.add_argument("--report", type=Path, help="on stop, write the HTML report of the run here")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from ..local.options import UpOptions
    from ..local.resources import ResourceError
    from ..local.supervisor import Stop, stop_on_signals
    from ..local.system import LocalSystem, run_loop
    from ..local.table import live_view
    from ..provisioning.deviceconfig import Timing
    from ..services.process import MissingDependency

    if args.sensors is not None and not 1 <= args.sensors <= 5000:
        print("error: --sensors must be between 1 and 5000", file=sys.stderr)
        return 2
    timing = None
    if args.measurement_interval or args.check_interval:
        timing = Timing(measurement_interval=args.measurement_interval, check_interval=args.check_interval)
    options = UpOptions(
        directory=args.dir, workdir=args.workdir, sensors=args.sensors, registry=args.registry, timing=timing
    )
    # a log or a pipe gets wide tables too (rich assumes 80 columns when it cannot ask a terminal)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    system = LocalSystem(options)
    with stop_on_signals():
        try:
            console.print(f"starting weatherfleet locally in {system.workdir.root} ...")
            system.start()
        except MissingDependency as error:
            print(f"error: {error}", file=sys.stderr)
            return 3
        except ResourceError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except (KeyboardInterrupt, Stop):
            console.print("stopped while starting")
            return 130
        console.print(system.summary())
        deadline = time.monotonic() + args.duration if args.duration else None

        def until() -> bool:
            return deadline is not None and time.monotonic() >= deadline

        try:
            if sys.stdout.isatty() and not args.no_live:
                with Live(live_view([], []), console=console, refresh_per_second=2) as live:
                    run_loop(
                        system,
                        0.5,
                        until,
                        lambda: live.update(live_view(system.device_rows(), system.rollout_rows())),
                    )
            else:
                last = [0.0]

                def show() -> None:
                    if time.monotonic() - last[0] >= args.print_every:
                        last[0] = time.monotonic()
                        console.print(live_view(system.device_rows(), system.rollout_rows()))

                run_loop(system, 0.5, until, show)
                console.print(live_view(system.device_rows(), system.rollout_rows()))
        except (KeyboardInterrupt, Stop):
            console.print("stopping ...")
        finally:
            try:
                if args.report:
                    from ..demo.report import write_report
                    from ..demo.reportdata import collect

                    console.print(f"report: {write_report(args.report, collect(system, 'weatherfleet up'))}")
            finally:
                system.stop()
    console.print(f"stopped; state kept in {system.workdir.root} (run `weatherfleet up` again to resume)")
    return 0
