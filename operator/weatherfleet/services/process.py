"""Start a server process, wait until it answers, stop it without leaving orphans."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path


class MissingDependency(RuntimeError):
    """A program the local system needs is not installed; the message says how to install it."""


def require_program(name: str, debian_package: str) -> str:
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if path is None:
        raise MissingDependency(f"{name} is not installed: run `sudo apt-get install -y {debian_package}`")
    return path


# Where the kernel takes the source ports of outgoing connections (Linux; the usual default otherwise).
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10000
_random = random.SystemRandom()  # not the `random` module's state, which tests may seed alike


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port on 127.0.0.1 nothing is bound to, for a server started next. Picked below the kernel's
    ephemeral range: a port from bind(0) comes from that range, where any outgoing connection made before
    the server binds may take it (a full test run saw the operator's health port 'address already in
    use')."""
    high = _ephemeral_start() - 1
    for _ in range(200 if high > _LOWEST_PORT else 0):
        port = _random.randint(_LOWEST_PORT, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; raise TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The HTTP status `url` answers with (an error status too), None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def http_ok(url: str, timeout: float = 1.0) -> bool:
    return http_status(url, timeout) == 200


class ManagedProcess:
    """One child process with its log in a file; `stop()` is safe to call twice."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        ready: Callable[[], bool],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name, self.argv, self.log_path, self._ready = name, argv, Path(log_path), ready
        # extra environment variables on top of ours (e.g. OtaFlux's REGISTRY_URL)
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **self.env} if self.env else None,
        )
        log.close()
        try:
            wait_until(lambda: self._exited() or self._ready(), timeout, f"{self.name} to start")
        except TimeoutError:
            self.stop()
            raise
        if self._exited():
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited at start (code {self.process.returncode}):\n{tail}")

    def _exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            self.process.send_signal(sig)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _signal_group(self, sig: int) -> None:
        # start_new_session made the child a process-group leader: signalling the group also reaches
        # anything it started, so nothing is left behind as an orphan
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is not None:
            self._signal_group(signal.SIGKILL)  # the leader is gone; its children may not be
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(timeout)
        self._signal_group(signal.SIGKILL)
