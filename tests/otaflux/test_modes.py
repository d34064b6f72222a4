"""Deployment shapes: several worker processes on one port, and the OCI layout directory of local mode."""

from __future__ import annotations

import os
from pathlib import Path

from weatherfleet import oci
from weatherfleet.services.process import wait_until


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_workers_share_the_port_and_metrics_add_up(registry, prefix, push_image, otaflux_factory) -> None:
    firmware = os.urandom(20_000)
    push_image(f"{prefix}dev-19", "1.0.0", firmware)
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix, "WORKERS": "2"})
    assert len(_children(server.process.process.pid)) == 2
    for _ in range(40):  # new connection each time: the kernel spreads them over both workers
        assert server.get("/version?device=dev-19")[2].endswith(b"\n20000")
    assert server.get("/firmware?device=dev-19")[2] == firmware
    # Each worker flushes its counters once a second; the supervisor sums the workers' files.
    requests = "otaflux_http_requests_total"
    wait_until(lambda: server.metric(requests, 'route="version"') >= 40, 15, "both workers' counts")
    assert server.metric(requests, 'route="version"') == 40
    assert server.metric(requests, 'route="firmware"') == 1
    assert server.metric("otaflux_registry_fetches_total") in (1, 2)  # at most once per worker


def test_oci_layout_directory_as_the_registry(tmp_path, otaflux_factory) -> None:
    layout = tmp_path / "layout"
    store = oci.connect(f"oci-layout://{layout}")
    (tmp_path / "fw.bin").write_bytes(b"from the layout" * 100)
    pushed = store.push_image("fleet/dev-20", "0.3.0", tmp_path / "fw.bin", version="0.3.0")
    server = otaflux_factory(
        {"REGISTRY_URL": f"oci-layout://{layout}", "REPOSITORY_PREFIX": "fleet/", "REFRESH_INTERVAL": "0.2"}
    )
    assert server.get("/firmware?device=dev-20")[2] == b"from the layout" * 100
    assert f'"manifestDigest":"{pushed.digest}"'.encode() in server.get("/v1/manifest?device=dev-20")[2]
    (tmp_path / "fw2.bin").write_bytes(b"newer")
    store.push_image("fleet/dev-20", "0.4.0", tmp_path / "fw2.bin", version="0.4.0")
    wait_until(lambda: server.get("/version?device=dev-20")[2].startswith(b"0.4.0\n"), 15, "the new tag")
