"""Process supervision for the local mode: start, watch, restart, and stop every child cleanly.

Every child runs in its own process group (ManagedProcess uses start_new_session), so Ctrl-C in the
terminal reaches only `up`, which then stops each group in reverse start order: nothing is orphaned and
nothing is killed before the things that depend on it. The pids are kept in the workdir so that a later
`up` can clean up after one that was killed with SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ..services.process import ManagedProcess
from .workdir import Workdir

WORKDIR_ENV = "WEATHERFLEET_WORKDIR"


class Supervisor:
    def __init__(self, workdir: Workdir) -> None:
        self.workdir = workdir
        self.processes: dict[str, ManagedProcess] = {}
        self.restarts: dict[str, int] = {}

    # --- start and track -------------------------------------------------------------------------------

    def start(
        self,
        name: str,
        argv: list[str],
        ready: Callable[[], bool],
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> ManagedProcess:
        process = ManagedProcess(
            name,
            argv,
            self.workdir.logs / f"{name}.log",
            ready,
            env={**(env or {}), WORKDIR_ENV: str(self.workdir.root)},
        )
        self.processes[name] = process
        try:
            process.start(timeout=timeout)
        finally:
            self._record()
        return process

    def adopt(self, name: str, process: ManagedProcess | None) -> None:
        """Track a process a service class started itself (MosquittoBroker, DistributionRegistry)."""
        if process is not None:
            self.processes[name] = process
            self._record()

    def _record(self) -> None:
        self.workdir.write_pids({n: p.pid for n, p in self.processes.items() if p.pid is not None})

    def dead(self) -> list[str]:
        """Names of children that exited although nobody stopped them."""
        return [n for n, p in self.processes.items() if p.process is not None and not p.running]

    def restart(self, name: str, timeout: float = 60.0) -> None:
        process = self.processes[name]
        process.stop()
        self.restarts[name] = self.restarts.get(name, 0) + 1
        process.start(timeout=timeout)
        self._record()

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process:
            process.stop()
            self._record()

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes[name].stop()
        self.processes.clear()
        self.workdir.pids_path.unlink(missing_ok=True)

    # --- after a crash ---------------------------------------------------------------------------------

    def reap_stale(self) -> list[str]:
        """Stop the process groups a previous `up` on this workdir left behind (it was SIGKILLed or the
        machine's session ended). A pid only counts when the process still carries this workdir in its
        command line or environment, so a recycled pid is never touched."""
        reaped = []
        for name, pid in self.workdir.read_pids().items():
            if _belongs_to(pid, self.workdir.root):
                _kill_group(pid)
                reaped.append(name)
        self.workdir.pids_path.unlink(missing_ok=True)
        return reaped


def _belongs_to(pid: int, root: Path) -> bool:
    marker = str(root).encode()
    for part in ("cmdline", "environ"):
        try:
            if marker in Path(f"/proc/{pid}/{part}").read_bytes():
                return True
        except OSError:
            continue
    return False


def _kill_group(pid: int, grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class Stop(Exception):
    """Raised in the main thread when the user or the system asks `up` to stop."""


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGINT end `up` through the same clean shutdown path. SIGINT is handled here
    too, not left to Python's KeyboardInterrupt: a process started with SIGINT ignored (a background job
    of a script, `nohup`) never gets Python's handler, and Ctrl-C or `kill -INT` did nothing (issue 14)."""

    def handler(signum: int, _frame: object) -> None:
        raise Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
