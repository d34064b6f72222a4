"""The live table shows what a person watching `weatherfleet up` needs, download progress included."""

from __future__ import annotations

from rich.console import Console

from weatherfleet.local.table import DeviceRow, device_table


def rendered(rows: list[DeviceRow]) -> str:
    console = Console(record=True, width=200)
    console.print(device_table(rows))
    return console.export_text()


def test_an_update_under_way_shows_its_download_percent():
    text = rendered(
        [
            DeviceRow(device="dev-01", location="roof", ota_state="downloading", ota_progress=50),
            DeviceRow(device="dev-02", location="cellar", ota_state="idle", ota_progress=100),
        ]
    )
    assert "downloading 50%" in text
    assert "idle 100%" not in text  # progress belongs to a download, not to a finished state
