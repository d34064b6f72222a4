"""The live view of `weatherfleet up`: one row per device and one per fleet rollout (rich)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel
from rich.console import Group
from rich.table import Table

from ..models.fleet import RolloutStatus


class DeviceRow(BaseModel):
    device: str
    location: str
    online: bool | None = None
    last_seen: datetime | None = None
    reading: dict[str, float] = {}
    reported: str | None = None
    desired: str | None = None
    ota_state: str | None = None
    ota_progress: int | None = None  # download percent of the update under way (status.firmware.progress)


class RolloutRow(BaseModel):
    fleet: str
    waves: int
    status: RolloutStatus


SHORT = {"temperature": "T", "humidity": "RH", "pressure": "p", "co2": "CO2", "pm25": "PM2.5", "pm10": "PM10"}


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


def _reading(values: dict[str, float]) -> str:
    return " ".join(f"{SHORT.get(k, k)}={v:.1f}" for k, v in values.items())


def device_table(rows: list[DeviceRow], now: datetime | None = None) -> Table:
    now = now or datetime.now(UTC)
    table = Table(title="devices", expand=False)
    for column in ("device", "location", "online", "last reading", "firmware", "desired", "OTA"):
        table.add_column(column)
    for row in rows:
        online = {True: "[green]yes[/]", False: "[red]no[/]", None: "[dim]?[/]"}[row.online]
        firmware = row.reported or "?"
        if row.desired and row.reported != row.desired:
            firmware = f"[yellow]{firmware}[/]"
        ota = row.ota_state or ""
        if ota in ("failed", "rolled_back"):
            ota = f"[red]{ota}[/]"
        elif ota == "downloading" and row.ota_progress is not None:
            ota = f"{ota} {row.ota_progress}%"
        table.add_row(
            row.device,
            row.location,
            online,
            f"{_reading(row.reading)} ({_ago(row.last_seen, now)})"
            if row.reading
            else _ago(row.last_seen, now),
            firmware,
            row.desired or "",
            ota,
        )
    return table


def rollout_table(rows: list[RolloutRow]) -> Table:
    table = Table(title="rollouts", expand=False)
    for column in ("fleet", "release", "phase", "wave", "updated", "failed", "pending", "reason"):
        table.add_column(column)
    for row in rows:
        s = row.status
        phase = {"Halted": "[red]Halted[/]", "Complete": "[green]Complete[/]"}.get(s.phase, s.phase)
        wave = f"{s.wave + 1}/{row.waves} ({s.percent:g}%)" if s.release else ""
        table.add_row(
            row.fleet,
            f"{s.release or ''} {s.version or ''}".strip(),
            phase,
            wave,
            str(s.updated),
            str(s.failed),
            str(s.pending),
            s.reason,
        )
    return table


def live_view(devices: list[DeviceRow], rollouts: list[RolloutRow]) -> Group:
    return Group(device_table(devices), rollout_table(rollouts))
