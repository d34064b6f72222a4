"""The rollout plan the operator writes: a directory (mounted ConfigMap, one FleetPlan per `*.json`,
keyed by file stem `<namespace>.<fleet>`, its members in the `<namespace>.<fleet>.members` file beside it)
or one file holding a whole RolloutPlan. Re-read when a file changes (stat is cheap; kubelet swaps a
symlink, which changes what stat follows). A file that does not parse, or whose member file is missing or
another plan's, keeps its last good content, so a bad edit never changes what devices are offered. The
member lists are decoded once per change into the plan's sets; a request costs a set lookup.

With a plan configured, the plan alone decides: a device it does not list, or every device while the plan
is missing (not mounted yet, deleted), is offered nothing ("no update"), never the highest tag; that is
only the answer of an OtaFlux run without ROLLOUT_PLAN_PATH, as the original OtaFlux."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import ValidationError

from weatherfleet.rollout import FleetPlan, RolloutPlan
from weatherfleet.rollout.members import members_name

log = logging.getLogger("otaflux.plan")

Signature = tuple[tuple[str, int, int], ...]


class PlanSource:
    def __init__(self, path: Path | None, poll_interval: float = 1.0) -> None:
        self.path, self.poll_interval = path, poll_interval
        self.generation = 0  # bumped whenever the effective plan changes
        self.errors = 0
        self._plan: RolloutPlan | None = None
        self._signature: Signature | None = None
        self._fleets: dict[str, tuple[tuple[int, int], FleetPlan]] = {}
        self._checked = float("-inf")

    def current(self) -> RolloutPlan | None:
        """The plan now in force; None only when no plan is configured (serve the latest tag). A configured
        plan that cannot be read is an empty plan: no device is offered anything. Stats at most every
        poll_interval."""
        if self.path is None:
            return None
        now = time.monotonic()
        if now - self._checked >= self.poll_interval:
            self._checked = now
            self.reload()
        return self._plan

    def _stat(self) -> Signature:
        path = self.path
        try:
            if path.is_dir():
                files = sorted(
                    p for p in (*path.glob("*.json"), *path.glob("*.members")) if not p.name.startswith(".")
                )
            else:
                files = [path] if path.exists() else []
            stats = []
            for file in files:
                st = file.stat()
                stats.append((str(file), st.st_mtime_ns, st.st_size))
            return tuple(stats)
        except OSError:
            return ()

    def reload(self) -> bool:
        """Re-read when anything changed; True when the effective plan changed."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        if self.path.is_dir():
            plan = self._read_directory(signature)
        elif signature:
            plan = self._read_file()
        else:
            plan = RolloutPlan()
        if plan is not None and self._plan is not None and plan.model_dump() == self._plan.model_dump():
            return False
        if not plan.fleets and not self.path.exists():
            log.warning(
                "rollout plan %s is missing: no device is offered an update until it appears", self.path
            )
        self._plan = plan
        self.generation += 1
        log.info(
            "rollout plan loaded (generation %d): %d fleet(s)",
            self.generation,
            len(plan.fleets),
        )
        return True

    def _read_file(self) -> RolloutPlan:
        try:
            return RolloutPlan.model_validate_json(self.path.read_bytes())
        except (OSError, ValidationError, ValueError) as exc:
            self.errors += 1
            log.error("rollout plan %s is invalid, keeping the previous one: %s", self.path, _first_line(exc))
            return self._plan if self._plan is not None else RolloutPlan()

    def _read_directory(self, signature: Signature) -> RolloutPlan:
        fleets: dict[str, tuple[tuple[int, ...], FleetPlan]] = {}
        stats = {name: (mtime, size) for name, mtime, size in signature}
        for name in stats:
            file = Path(name)
            if file.suffix != ".json":
                continue
            namespace, _, fleet = file.stem.partition(".")
            key = f"{namespace}/{fleet}" if fleet else namespace
            seen = (*stats[name], *stats.get(str(file.with_name(members_name(file.name))), ()))
            previous = self._fleets.get(key)
            if previous and previous[0] == seen:
                fleets[key] = previous
                continue
            try:
                fleets[key] = (seen, read_fleet_plan(file))
            except (OSError, ValidationError, ValueError) as exc:
                self.errors += 1
                log.error(
                    "rollout plan file %s is invalid, keeping its previous content: %s",
                    file,
                    _first_line(exc),
                )
                if previous:
                    fleets[key] = previous
        self._fleets = fleets
        return RolloutPlan(fleets={key: plan for key, (_sig, plan) in fleets.items()})


def read_fleet_plan(file: Path) -> FleetPlan:
    """One fleet's plan file with its member lists. Both are read from the folder the JSON file resolves
    to: in a kubelet mount, one timestamped folder holds one consistent version of every key (the ConfigMap
    as one write left it), so the JSON and its members file always come from the same plan."""
    real = file.resolve()
    plan = FleetPlan.model_validate_json(real.read_bytes())
    if plan.members is None:
        return plan
    members = real.with_name(members_name(real.name))
    return plan.unpacked(members.read_bytes() if members.exists() else None)


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
