"""Process supervision: children and grandchildren stop with the group, a crashed run's leftovers are
reaped by the next one, and a pid that is not ours is never touched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from weatherfleet.local.supervisor import Supervisor
from weatherfleet.local.workdir import Workdir
from weatherfleet.services.process import wait_until

# a child that starts a grandchild and reports both pids
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def start_family(supervisor: Supervisor, name: str) -> tuple[int, int]:
    log = supervisor.workdir.logs / f"{name}.log"
    supervisor.start(
        name, [sys.executable, "-c", PARENT], lambda: log.exists() and log.read_text().strip() != ""
    )
    return supervisor.processes[name].pid, int(log.read_text().split()[0])


def test_stop_all_leaves_no_grandchild_behind(tmp_path):
    supervisor = Supervisor(Workdir(tmp_path))
    parent, grandchild = start_family(supervisor, "svc")
    assert alive(parent) and alive(grandchild)
    supervisor.stop_all()
    wait_until(lambda: not alive(parent) and not alive(grandchild), 10, "the process group to end")
    assert not (tmp_path / "pids.json").exists()


def test_a_dead_child_is_reported_and_restarted(tmp_path):
    supervisor = Supervisor(Workdir(tmp_path))
    log = tmp_path / "logs" / "short.log"
    supervisor.start("short", [sys.executable, "-c", "print('up', flush=True); import time; time.sleep(1)"],
                     lambda: log.exists() and "up" in log.read_text())  # fmt: skip
    wait_until(lambda: supervisor.dead() == ["short"], 15, "the child to exit")
    supervisor.restart("short")
    assert supervisor.dead() == [] and supervisor.restarts == {"short": 1}
    supervisor.stop_all()


def test_next_run_reaps_what_a_killed_run_left(tmp_path):
    workdir = Workdir(tmp_path)
    # an `up` killed with SIGKILL: its children keep running, their pids stay in pids.json
    crashed = Supervisor(workdir)
    parent, grandchild = start_family(crashed, "svc")
    assert workdir.read_pids() == {"svc": parent}
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    try:
        workdir.write_pids({"svc": parent, "stranger": stranger.pid})
        reaped = Supervisor(workdir).reap_stale()
        assert reaped == ["svc"]
        wait_until(lambda: not alive(parent) and not alive(grandchild), 10, "the stale group to end")
        assert stranger.poll() is None, "a process without this workdir in its environment was killed"
    finally:
        stranger.kill()
        stranger.wait()
        crashed.processes.clear()


def test_children_carry_the_workdir_marker(tmp_path):
    supervisor = Supervisor(Workdir(tmp_path))
    parent, _ = start_family(supervisor, "svc")
    try:
        environ = Path(f"/proc/{parent}/environ").read_bytes()
        assert f"WEATHERFLEET_WORKDIR={tmp_path.resolve()}".encode() in environ
    finally:
        supervisor.stop_all()
    assert not alive(parent)
