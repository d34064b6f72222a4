"""OtaFlux benchmark: the same content served by OtaFlux and by nginx (Debian package), same machine,
same run, same number of worker processes, same load generator (wrk).

1. `/version?device=...` with 64 concurrent keep-alive connections: requests per second.
   Goal: OtaFlux >= 0.5x nginx.
2. `/firmware?device=...`, a 1.5 MiB firmware, 32 concurrent connections downloading in a loop:
   aggregate MB/s. Goal: OtaFlux >= 0.8x nginx.

OtaFlux gets its firmware from a real distribution registry (pushed with weatherfleet.oci / oras-py),
so every answer goes through the real resolution path (cache hit, refresh check). nginx serves the same
bytes from files in a temporary directory: it is the ceiling, not a peer doing the same work.

    .venv/bin/python bench/otaflux.py --quick          # ~25 s: one round of 3 s per case
    .venv/bin/python bench/otaflux.py                  # ~1.5 min: 3 rounds of 6 s per case

Columns: the best figure of each server over the rounds, the median of the per-round ratios (each round
runs nginx and OtaFlux back to back, so both see the same background load), and every round's ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from weatherfleet import oci
from weatherfleet.services.process import ManagedProcess, free_port, port_open, require_program
from weatherfleet.services.registry import DistributionRegistry

DEVICE = "bench-01"
PREFIX = "bench/"
FIRMWARE_SIZE = 1536 * 1024

NGINX_CONF = """
daemon off;
{user}
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location = /version {{ default_type "text/plain; charset=utf-8"; alias {dir}/www/version; }}
        location = /firmware {{ default_type application/octet-stream; alias {dir}/www/firmware; }}
    }}
}}
"""


def wrk(url: str, connections: int, seconds: float, threads: int) -> tuple[float, float]:
    """(requests/s, bytes/s) as wrk reports them."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out).groups()
    scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]
    if "Non-2xx" in out or ("Socket errors" in out and "timeout 0" not in out):
        print(
            f"  warning from wrk for {url}:\n"
            + "\n".join(line for line in out.splitlines() if "rror" in line or "Non-2xx" in line)
        )
    return rps, float(value) * scale


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (3 s each)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for both servers")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds; the median per-round ratio is reported"
    )
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    rounds = 1 if args.quick else args.rounds
    require_program("wrk", "wrk")
    nginx = require_program("nginx", "nginx")
    threads = max(1, min(2, os.cpu_count() or 1))

    with tempfile.TemporaryDirectory(prefix="otaflux-bench-") as tmp:
        root = Path(tmp)
        registry = DistributionRegistry(directory=root / "registry", port=free_port()).start()
        processes: list[ManagedProcess] = []
        try:
            firmware = os.urandom(FIRMWARE_SIZE)
            (root / "firmware.bin").write_bytes(firmware)
            oci.connect(registry.url).push_image(
                f"{PREFIX}{DEVICE}", "1.0.0", root / "firmware.bin", version="1.0.0"
            )

            ota_port, nginx_port = free_port(), free_port()
            otaflux = ManagedProcess(
                "otaflux",
                [sys.executable, "-m", "otaflux"],
                root / "otaflux.log",
                lambda: port_open(ota_port),
                env={
                    "REGISTRY_URL": registry.url,
                    "REPOSITORY_PREFIX": PREFIX,
                    "LISTEN_ADDR": f"127.0.0.1:{ota_port}",
                    "METRICS_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
                    "WORKERS": str(args.workers),
                    "LOG_LEVEL": "warn",
                    "CACHE_DIR": str(root / "cache"),
                    "OTAFLUX_LOOP": os.environ.get("OTAFLUX_LOOP", ""),
                },
            )
            otaflux.start(timeout=30)
            processes.append(otaflux)
            ota = f"http://127.0.0.1:{ota_port}"
            # Warm every worker's cache (the kernel spreads connections over the workers).
            for _ in range(8 * args.workers):
                version_body = fetch(f"{ota}/version?device={DEVICE}")
            assert fetch(f"{ota}/firmware?device={DEVICE}") == firmware

            www = root / "nginx" / "www"
            www.mkdir(parents=True)
            (root / "nginx" / "tmp").mkdir()
            (www / "version").write_bytes(version_body)
            shutil.copy(root / "firmware.bin", www / "firmware")
            conf = root / "nginx" / "nginx.conf"
            # As root, nginx workers would drop to `nobody`, who cannot read our private temporary directory.
            user = "user root;" if os.geteuid() == 0 else ""
            conf.write_text(
                NGINX_CONF.format(user=user, workers=args.workers, dir=root / "nginx", port=nginx_port)
            )
            server = ManagedProcess(
                "nginx",
                [nginx, "-p", str(root / "nginx"), "-c", str(conf)],
                root / "nginx.log",
                lambda: port_open(nginx_port),
            )
            server.start()
            processes.append(server)
            ngx = f"http://127.0.0.1:{nginx_port}"
            assert fetch(f"{ngx}/version?device={DEVICE}") == version_body
            assert fetch(f"{ngx}/firmware?device={DEVICE}") == firmware

            print(
                f"workers: {args.workers} each, wrk threads: {threads}, {seconds:g} s per run, {rounds} round(s)"
            )
            # Each round measures nginx and OtaFlux back to back, so both see the same background load
            # (the machine is shared); the ratio reported is the median of the per-round ratios.
            best: dict[tuple[str, str], float] = {}
            ratios: dict[str, list[float]] = {"version": [], "firmware": []}
            for _round in range(rounds):
                for case, path, connections in (("version", "/version", 64), ("firmware", "/firmware", 32)):
                    pair = {}
                    for name, base in (("nginx", ngx), ("otaflux", ota)):
                        rps, bps = wrk(f"{base}{path}?device={DEVICE}", connections, seconds, threads)
                        pair[name] = rps if case == "version" else bps / 1e6
                        best[(name, case)] = max(best.get((name, case), 0.0), pair[name])
                    ratios[case].append(pair["otaflux"] / pair["nginx"])
            version_ratio = statistics.median(ratios["version"])
            firmware_ratio = statistics.median(ratios["firmware"])
            print(f"{'':28}{'nginx':>12}{'otaflux':>12}{'ratio':>8}{'goal':>7}   per-round ratios")
            for case, label, goal in (
                ("version", "/version req/s (64 conns)", ">=0.5"),
                ("firmware", "/firmware MB/s (32 x 1.5MiB)", ">=0.8"),
            ):
                ratio = statistics.median(ratios[case])
                rounds_text = " ".join(f"{r:.2f}" for r in ratios[case])
                print(
                    f"{label:28}{best[('nginx', case)]:>12,.0f}{best[('otaflux', case)]:>12,.0f}"
                    f"{ratio:>8.2f}{goal:>7}   {rounds_text}"
                )
            met = version_ratio >= 0.5 and firmware_ratio >= 0.8
            print("goals met" if met else "goals NOT met")
            return 0
        finally:
            for process in reversed(processes):
                process.stop()
            registry.stop()


if __name__ == "__main__":
    sys.exit(main())
