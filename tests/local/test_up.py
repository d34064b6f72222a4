"""`weatherfleet up` with five emulated devices: readings from all five reach the store, the table shows
them, kubectl shows them through the workdir's kubeconfig, Ctrl-C stops every process, and a second `up`
resumes from the workdir (also after a SIGKILL): the same objects in the API, the same CA, the same flash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from weatherfleet.ingest.sqlite_store import SQLiteStore
from weatherfleet.services.process import wait_until

from .processes import processes_of

pytestmark = pytest.mark.slow
DEVICES = {"dev-01", "dev-02", "dev-01-s3", "dev-02-s4", "dev-01-s5"}


class Up:
    """`weatherfleet up` as a user runs it, in its own process group (like a shell job)."""

    def __init__(self, cr_dir: Path, workdir: Path, log: Path, *extra: str) -> None:
        self.log = log
        self.out = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "weatherfleet.cli", "up", "--dir", str(cr_dir), "--sensors", "5",
             "--workdir", str(workdir), "--no-live", "--print-every", "2", "--measurement-interval", "2",
             "--check-interval", "30", *extra],
            stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ctrl_c(self, timeout: float = 60) -> int:
        os.killpg(self.process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        try:
            return self.process.wait(timeout)
        finally:
            self.out.close()


def readings_since(store_path: Path, moment: datetime) -> set[str]:
    if not store_path.exists():
        return set()
    store = SQLiteStore(store_path)
    try:
        return {d for d, r in store.latest_readings().items() if r.time >= moment}
    finally:
        store.close()


def test_five_devices_publish_and_up_survives_a_restart(cr_dir, tmp_path):
    workdir = tmp_path / "wd"
    store_path = workdir / "store" / "weather.sqlite"
    log = tmp_path / "up.log"
    first_start = datetime.now(UTC)
    up = Up(cr_dir, workdir, log)
    try:
        wait_until(
            lambda: readings_since(store_path, first_start) >= DEVICES, 180, "readings from all five", 1
        )
        # the table shows every device online with its reading
        wait_until(
            lambda: all(f"{d} " in up.text() for d in DEVICES) and "T=" in up.text() and "yes" in up.text(),
            60,
            "the table with all five devices online",
            1,
        )
        ports = json.loads((workdir / "state.json").read_text())["ports"]
        children = processes_of(workdir)
        assert len(children) >= 6, children  # operator, mosquitto, registry, otaflux, ingest, devices
        # kubectl works against the local mode, with the CRDs' printer columns
        kubectl = subprocess.run(
            ["kubectl", "get", "ws", "-n", "weatherfleet"],
            env={**os.environ, "KUBECONFIG": str(workdir / "kubeconfig")},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert kubectl.returncode == 0, kubectl.stderr
        assert kubectl.stdout.split()[:3] == ["NAME", "LOCATION", "SENSORS"]
        assert sum(line.split()[0] in DEVICES for line in kubectl.stdout.splitlines()[1:]) == 5
    finally:
        code = up.ctrl_c()
    assert code == 0, up.text()[-3000:]
    assert "stopped; state kept in" in up.text()
    assert processes_of(workdir) == [], "processes left after Ctrl-C"

    # second run: same workdir, same ports, same CA; devices keep their flash and resume publishing
    app_file = next((workdir / "devices" / "dev-01" / "fs").glob("app.*"))
    flashed = app_file.stat().st_mtime_ns
    ca = (workdir / "devices" / "dev-01" / "fs" / "certs" / "ca.pem").read_bytes()
    api_state = (workdir / "apiserver" / "state.json").stat().st_size
    assert api_state > 0
    before = SQLiteStore(store_path)
    rows_before = before.count("weather")
    before.close()
    second_start = datetime.now(UTC)
    report = tmp_path / "up-report.html"
    up = Up(cr_dir, workdir, log, "--report", str(report))
    try:
        wait_until(
            lambda: readings_since(store_path, second_start) >= DEVICES, 180, "readings after restart", 1
        )
        assert json.loads((workdir / "state.json").read_text())["ports"]["mqtt"] == ports["mqtt"]
        # the boards were powered up again, not re-flashed, and the CA (kept in the API's objects) is the
        # one they trust
        assert app_file.stat().st_mtime_ns == flashed
        assert (workdir / "devices" / "dev-01" / "fs" / "certs" / "ca.pem").read_bytes() == ca
    finally:
        assert up.ctrl_c() == 0
    after = SQLiteStore(store_path)
    assert after.count("weather") > rows_before  # old readings kept, new ones added
    # the run's report: both locations charted, every device listed
    html = report.read_text()
    assert 'data-series="garden"' in html and 'data-series="roof"' in html
    assert sum(f"<td>{d}</td>" in html for d in DEVICES) == 5
    after.close()
    assert processes_of(workdir) == []


def test_up_after_a_sigkill_reaps_the_orphans(cr_dir, tmp_path):
    workdir = tmp_path / "wd"
    log = tmp_path / "up.log"
    up = Up(cr_dir, workdir, log)
    try:
        wait_until(lambda: (workdir / "pids.json").exists() and len(json.loads((workdir / "pids.json").read_text())) >= 5,
                   180, "all services started", 1)  # fmt: skip
        orphans = processes_of(workdir)
        os.kill(up.process.pid, signal.SIGKILL)  # no chance to clean up
        up.process.wait(30)
        time.sleep(1)
        assert set(orphans) & set(processes_of(workdir)), "the children should outlive a SIGKILLed up"
    finally:
        up.out.close()
    up = Up(cr_dir, workdir, tmp_path / "up-again.log")
    try:
        wait_until(lambda: "rollout plan" in up.text(), 120, "the second up to be running", 1)
        wait_until(lambda: "stopped processes left by an earlier run" in (workdir / "timeline.jsonl").read_text()
                   if (workdir / "timeline.jsonl").exists() else False, 120, "the stale processes reaped", 1)  # fmt: skip
        wait_until(lambda: not set(orphans) & set(processes_of(workdir)), 30, "the orphans to be gone", 0.5)
    finally:
        assert up.ctrl_c() == 0
    assert processes_of(workdir) == []
