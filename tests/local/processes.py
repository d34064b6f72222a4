"""Find the processes a local run started, by the workdir marker the supervisor puts in their environment."""

from __future__ import annotations

from pathlib import Path


def processes_of(workdir: Path) -> list[int]:
    """Processes with the supervisor's marker in their environment, or the workdir in their command line
    (Mosquitto and the registry run with config files from it)."""
    root = str(Path(workdir).resolve())
    marker = f"WEATHERFLEET_WORKDIR={root}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ours = marker in (proc / "environ").read_bytes().split(b"\0")
            ours = ours or any(
                a.startswith(root.encode() + b"/") for a in (proc / "cmdline").read_bytes().split(b"\0")
            )
            if ours:
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found
