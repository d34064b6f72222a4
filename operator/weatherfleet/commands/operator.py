"""`weatherfleet operator`: the kopf operator with the project's handlers (a thin wrapper over kopf run).

Settings come from WEATHERFLEET_* environment variables (see weatherfleet.controller.settings); the
flags here are kopf's own: scope, peering (leader election) and logging."""

from __future__ import annotations

import argparse
import importlib
import logging
import secrets
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch only this namespace")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--standalone", action="store_true", help="no peering: only for a single replica (development)"
    )
    parser.add_argument(
        "--peering", default="weatherfleet", help="KopfPeering name: replicas sharing it elect one leader"
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority (highest acts, the others pause); default: WEATHERFLEET_PRIORITY or random",
    )
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint")
    parser.add_argument("--log-format", choices=["json", "plain", "full"], default="json")
    parser.add_argument("--verbose", action="store_true")


def check_settings() -> str | None:
    """None when the WEATHERFLEET_* environment is usable, else what is wrong, by variable name."""
    from pydantic import ValidationError

    from weatherfleet.controller.settings import ENV_PREFIX, OperatorSettings

    try:
        OperatorSettings.from_env().mqtt()
    except ValidationError as exc:
        return "; ".join(f"{ENV_PREFIX}{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors())
    except ValueError as exc:
        return str(exc)
    return None


def run(args: argparse.Namespace) -> int:
    problem = check_settings()
    if problem:
        print(f"weatherfleet operator: invalid settings: {problem}", file=sys.stderr)
        return 2
    # kopf is heavy: imported only by this command, and only once the settings are known to be good.
    import kopf

    from weatherfleet.controller.settings import OperatorSettings

    priority = args.priority if args.priority is not None else OperatorSettings.from_env().priority
    if priority is None:
        # kopf pauses every peer when two share the highest priority: distinct random priorities make
        # exactly one replica act; when it goes away, the next-highest resumes (failover).
        priority = secrets.randbelow(1_000_000) + 1
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    importlib.import_module("weatherfleet.controller.handlers")
    # kopf.run installs SIGTERM/SIGINT handlers: running reconciles finish, cleanup stops MQTT.
    kopf.run(
        standalone=args.standalone,
        namespaces=args.namespace,
        clusterwide=args.all_namespaces or not args.namespace,
        peering_name=None if args.standalone else args.peering,
        priority=priority,
        liveness_endpoint=args.liveness or None,
    )
    return 0
