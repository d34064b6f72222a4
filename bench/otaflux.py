"""OtaFlux benchmark: the same content served by OtaFlux and by nginx (Debian package), same machine,
same run, same number of worker processes, same load generator (wrk).

1. `/version?device=...` with 64 concurrent keep-alive connections: requests per second.
   Goal: OtaFlux >= 0.5x nginx.
2. `/firmware?device=...`, a 1.5 MiB firmware, 32 concurrent connections downloading in a loop:
   aggregate MB/s. Goal: OtaFlux >= 0.8x nginx.

OtaFlux gets its firmware from a real distribution registry (pushed with weatherfleet.oci / oras-py),
so every answer goes through the real resolution path (cache hit, refresh check). nginx serves the same
bytes from files in a temporary directory: it is the ceiling, not a peer doing the same work.

    .venv/bin/python bench/otaflux.py --quick          # ~1 min: one round of 3 s per case, 300 slow readers
    .venv/bin/python bench/otaflux.py                  # ~3 min: 3 rounds of 6 s per case, 2000 slow readers

Both servers write an access log to a file, buffered and written at least once a second (nginx:
`access_log ... buffer=64k flush=1s`; OtaFlux: ACCESS_LOG=<file>, which buffers the same way); with
`--access-log off` neither does. One logging and the other not would not be a fair comparison.

Columns: the best figure of each server over the rounds, the median of the per-round ratios (each round
runs nginx and OtaFlux back to back, so both see the same background load), and every round's ratio.

3. Slow request heads (issue 14): 300 clients trickle request heads a byte a second (reconnecting when
   closed) while a probe asks `/health` and `/version` every 20 ms on its own keep-alive connection:
   p99 latency, against the same with no load. OtaFlux closes a head that is not complete 10 s after its
   first byte, so the tricklers keep reconnecting; nginx keeps them (client_header_timeout 60 s).
4. Slow readers (issue 18, a wave announcement to ESP32s on slow Wi-Fi): thousands of concurrent
   `/firmware` downloads, each read at 32 KB/s by a client with a small receive buffer, from a separate
   process; meanwhile the same probes. Per server: RSS added per slow connection (all its processes),
   `/health` and `/version` p99 for the other clients, and bytes served per CPU second of the server.
   One line starting `slow readers` states the figures of both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import cpu_seconds

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
worker_rlimit_nofile 20000;
events {{ worker_connections 8192; }}
http {{
    log_format access escape=json '{{"time":"$time_iso8601","method":"$request_method","path":"$uri",'
                                  '"status":$status,"bytes":$body_bytes_sent,"ms":$request_time}}';
    {access_log}
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_header_timeout 60s;
    client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location = /version {{ default_type "text/plain; charset=utf-8"; alias {dir}/www/version; }}
        location = /firmware {{ default_type application/octet-stream; alias {dir}/www/firmware; }}
        location = /health {{ default_type "text/plain; charset=utf-8"; return 200 "ok"; }}
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


# -- slow clients (issues 14 and 18) ---------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (OtaFlux's supervisor and workers, nginx's master and workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def tree_usage(pid: int) -> tuple[int, float]:
    """(resident bytes, CPU seconds) summed over a process tree."""
    rss, cpu = 0, 0.0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
            cpu += cpu_seconds(member)
        except OSError:
            pass
    return rss, cpu


async def _open(port: int, rcvbuf: int | None = None, limit: int = 65536):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window follows
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=limit)


async def _slow_reader(port: int, path: str, rate: float, stop: float, counter) -> None:
    chunk = 8192
    while time.monotonic() < stop:
        try:
            reader, writer = await _open(port, rcvbuf=16384, limit=chunk)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            while time.monotonic() < stop:
                data = await reader.read(chunk)
                if not data:
                    break
                counter.value += len(data)
                await asyncio.sleep(len(data) / rate)
            writer.close()
        except OSError:
            await asyncio.sleep(0.5)


async def _trickler(port: int, stop: float, every: float) -> None:
    head = f"GET /version?device={DEVICE} HTTP/1.1\r\nHost: bench\r\nUser-Agent: {'x' * 200}\r\n\r\n".encode()
    while time.monotonic() < stop:
        try:
            reader, writer = await _open(port)
            for index in range(len(head)):
                if time.monotonic() >= stop or reader.at_eof():
                    break
                writer.write(head[index : index + 1])
                try:  # a closed connection (408) shows up as a read that returns
                    if await asyncio.wait_for(reader.read(1024), every):
                        break
                except TimeoutError:
                    pass
            writer.close()
        except OSError:
            await asyncio.sleep(0.2)


def _slow_clients(
    kind: str, port: int, count: int, seconds: float, ramp: float, rate: float, counter, ready
) -> None:
    """A separate process (so the probes' latency is not the load generator's own): `count` clients of
    `kind` (`read` or `trickle`), started evenly over `ramp` seconds, running until `seconds` after that."""
    import uvloop

    async def main() -> None:
        stop = time.monotonic() + ramp + seconds
        tasks = []
        for _ in range(count):
            if kind == "read":
                tasks.append(
                    asyncio.create_task(_slow_reader(port, f"/firmware?device={DEVICE}", rate, stop, counter))
                )
            else:
                tasks.append(asyncio.create_task(_trickler(port, stop, 1.0)))
            await asyncio.sleep(ramp / count)
        ready.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    uvloop.run(main())


async def _probe(port: int, path: str, stop: float, every: float, latencies: list[float]) -> None:
    reader = writer = None
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    while time.monotonic() < stop:
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await _open(port)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, AttributeError):
            latencies.append(time.perf_counter() - started)
            if writer is not None:
                writer.close()
            reader = writer = None
        await asyncio.sleep(max(0.0, every - (time.perf_counter() - started)))
    if writer is not None:
        writer.close()


def probe(port: int, seconds: float, every: float = 0.02) -> dict[str, float]:
    """p99 latency (seconds) of /health and /version, each asked every `every` seconds for `seconds`."""
    found: dict[str, list[float]] = {"health": [], "version": []}

    async def main() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(
            _probe(port, "/health", stop, every, found["health"]),
            _probe(port, f"/version?device={DEVICE}", stop, every, found["version"]),
        )

    asyncio.run(main())
    return {name: _p99(values) for name, values in found.items()}


def _p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def under_slow_clients(
    kind: str, port: int, pid: int, count: int, seconds: float, rate: float = 32_000
) -> dict:
    """Start `count` slow clients against one server, then measure while they run."""
    context = multiprocessing.get_context("fork")
    counter, ready = context.Value("q", 0, lock=False), context.Event()
    ramp = max(1.0, count / 1000)
    rss_before, _ = tree_usage(pid)
    worker = context.Process(
        target=_slow_clients, args=(kind, port, count, seconds + 2.0, ramp, rate, counter, ready), daemon=True
    )
    worker.start()
    try:
        if not ready.wait(ramp + 30):
            raise SystemExit(f"{count} slow clients did not start")
        time.sleep(1.0)  # every client connected and its first reads under way
        rss, cpu = tree_usage(pid)
        bytes_before = counter.value
        latencies = probe(port, seconds)
        rss_after, cpu_after = tree_usage(pid)
        served = counter.value - bytes_before
    finally:
        worker.join(seconds + 30)
        if worker.is_alive():
            worker.terminate()
    return {
        **latencies,
        "rss_per_connection": (max(rss, rss_after) - rss_before) / count,
        "bytes_per_cpu_second": served / max(1e-9, cpu_after - cpu),
        "bytes_per_second": served / seconds,
    }


def _ratio(ours: float, theirs: float) -> str:
    # nginx allocates its connection table at start: its growth can stay below one page per connection
    return f"{ours / theirs:.1f}x" if theirs >= 256 else "nginx's growth below page granularity"


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by OtaFlux and nginx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (3 s each)")
    parser.add_argument(
        "--access-log",
        choices=("on", "off"),
        default="on",
        help="both servers write an access log to a file, buffered and flushed every second (on, as both "
        "ship), or neither does",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for both servers")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds; the median per-round ratio is reported"
    )
    parser.add_argument("--slow-readers", type=int, default=2000, help="concurrent slow downloads (issue 18)")
    parser.add_argument(
        "--tricklers", type=int, default=300, help="clients trickling request heads (issue 14)"
    )
    args = parser.parse_args()
    raise_fd_limit()
    slow_readers = min(args.slow_readers, 300) if args.quick else args.slow_readers
    load_seconds = 4.0 if args.quick else 12.0
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
                    "ACCESS_LOG": str(root / "otaflux-access.log") if args.access_log == "on" else "off",
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
                NGINX_CONF.format(
                    user=user,
                    workers=args.workers,
                    dir=root / "nginx",
                    port=nginx_port,
                    # as OtaFlux's: buffered, written at least once a second
                    access_log=f"access_log {root / 'nginx' / 'access.log'} access buffer=64k flush=1s;"
                    if args.access_log == "on"
                    else "access_log off;",
                )
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
                f"workers: {args.workers} each, wrk threads: {threads}, {seconds:g} s per run, {rounds} round(s), "
                f"access log {'on (both, to a file)' if args.access_log == 'on' else 'off (both)'}"
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

            servers = {
                "otaflux": (ota_port, otaflux.process.pid),
                "nginx": (nginx_port, server.process.pid),
            }
            idle = {name: probe(port, min(load_seconds, 4.0)) for name, (port, _pid) in servers.items()}
            trickle = {
                name: under_slow_clients("trickle", port, pid, args.tricklers, load_seconds)
                for name, (port, pid) in servers.items()
            }
            slow = {
                name: under_slow_clients("read", port, pid, slow_readers, load_seconds)
                for name, (port, pid) in servers.items()
            }
            ms = 1000.0
            print()
            print(f"{'p99 latency, ms':44}{'nginx':>10}{'otaflux':>10}")
            for label, figures in (
                ("/health, no load", idle),
                (f"/health while {args.tricklers} clients trickle heads", trickle),
                (f"/version while {args.tricklers} clients trickle heads", trickle),
                (f"/health with {slow_readers} slow readers", slow),
                (f"/version with {slow_readers} slow readers", slow),
            ):
                key = "version" if label.startswith("/version") else "health"
                print(f"{label:44}{figures['nginx'][key] * ms:>10.2f}{figures['otaflux'][key] * ms:>10.2f}")
            print(
                f"/health p99 while {args.tricklers} slow clients trickle request heads: "
                f"otaflux {trickle['otaflux']['health'] * ms:.2f} ms, nginx {trickle['nginx']['health'] * ms:.2f} ms "
                f"(no load: otaflux {idle['otaflux']['health'] * ms:.2f} ms, nginx {idle['nginx']['health'] * ms:.2f} ms)"
            )
            o, n = slow["otaflux"], slow["nginx"]
            print(
                f"slow readers ({slow_readers} x 32 KB/s, {load_seconds:g} s): "
                f"RSS per slow connection otaflux {o['rss_per_connection'] / 1024:.1f} KiB, "
                f"nginx {n['rss_per_connection'] / 1024:.1f} KiB "
                f"({_ratio(o['rss_per_connection'], n['rss_per_connection'])}, goal <= 2x); "
                f"/health p99 otaflux {o['health'] * ms:.1f} ms, nginx {n['health'] * ms:.1f} ms; "
                f"/version p99 otaflux {o['version'] * ms:.1f} ms (goal < 50), nginx {n['version'] * ms:.1f} ms; "
                f"MB served per CPU second otaflux {o['bytes_per_cpu_second'] / 1e6:.0f}, "
                f"nginx {n['bytes_per_cpu_second'] / 1e6:.0f} "
                f"(MB/s served: otaflux {o['bytes_per_second'] / 1e6:.1f}, nginx {n['bytes_per_second'] / 1e6:.1f})"
            )
            return 0
        finally:
            for process in reversed(processes):
                process.stop()
            registry.stop()


if __name__ == "__main__":
    sys.exit(main())
