"""The HTML report of a local run: measurements per location over time, the rollout timeline with its
waves and halts, the devices and (for the demo) the checks of the story. One self-contained file:
charts are inline SVG, styles inline, no scripts, so it opens offline."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import jinja2
from markupsafe import Markup
from pydantic import BaseModel, Field

from ..local.timeline import TimelineEvent
from ..messages import FIELDS
from .svg import PALETTE, lanes_chart, line_chart

WAVE_COLORS = ["#6baed6", "#3182bd", "#08519c", "#08306b"]
HALT_COLOR = "#d62728"
COMPLETE_COLOR = "#2ca02c"


class DeviceSummary(BaseModel):
    device: str
    location: str = ""
    online: bool = False
    firmware: str | None = None
    desired: str | None = None
    ota_state: str | None = None
    last_seen: datetime | None = None
    readings: int = 0


class Check(BaseModel):
    name: str
    ok: bool
    detail: str = ""


class ReportData(BaseModel):
    title: str = "weatherfleet local run"
    generated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # field -> location -> [(unix seconds, value)]
    measurements: dict[str, dict[str, list[tuple[float, float]]]] = Field(default_factory=dict)
    timeline: list[TimelineEvent] = Field(default_factory=list)
    devices: list[DeviceSummary] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)


def rollout_lanes(
    events: list[TimelineEvent], end: float
) -> tuple[list[tuple[str, list[tuple[float, float, str, str]]]], list[tuple[str, float, str, str]]]:
    """Lanes per release version (a segment per wave, then halted/complete) and halt markers."""
    lanes: dict[str, list[tuple[float, float, str, str]]] = {}
    markers: list[tuple[str, float, str, str]] = []
    open_segment: dict[str, tuple[float, str, str]] = {}
    rollout_kinds = ("wave", "halted", "complete", "paused")
    for event in sorted((e for e in events if e.kind in rollout_kinds), key=lambda e: e.time):
        label = f"{event.release or ''} {event.version or ''}".strip() or "rollout"
        t = event.time.timestamp()
        # a new release closes whatever the previous one had open
        for other, (start, text, color) in list(open_segment.items()):
            if other != label and event.kind == "wave" and (event.wave or 0) == 0:
                lanes.setdefault(other, []).append((start, t, text, color))
                del open_segment[other]
        if label in open_segment:
            start, text, color = open_segment.pop(label)
            lanes.setdefault(label, []).append((start, t, text, color))
        lanes.setdefault(label, [])
        if event.kind == "wave":
            wave = event.wave or 0
            text = f"wave {wave + 1}: {event.percent or 0:g}%"
            open_segment[label] = (t, text, WAVE_COLORS[min(wave, len(WAVE_COLORS) - 1)])
        elif event.kind == "halted":
            open_segment[label] = (t, "halted", HALT_COLOR)
            markers.append((label, t, f"halted: {event.message}", HALT_COLOR))
        elif event.kind == "complete":
            open_segment[label] = (t, "complete", COMPLETE_COLOR)
        elif event.kind == "paused":
            open_segment[label] = (t, "paused", "#999999")
    for label, (start, text, color) in open_segment.items():
        lanes[label].append((start, end, text, color))
    return list(lanes.items()), markers


def device_lanes(
    events: list[TimelineEvent], end: float
) -> tuple[list[tuple[str, list[tuple[float, float, str, str]]]], list[tuple[str, float, str, str]]]:
    """Lanes per device: the firmware it ran over time, with markers where an update failed or rolled back."""
    versions = sorted({e.version for e in events if e.kind == "ota" and e.version})
    color_of = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(versions)}
    lanes: dict[str, list[tuple[float, float, str, str]]] = {}
    current: dict[str, tuple[float, str]] = {}
    markers: list[tuple[str, float, str, str]] = []
    for event in sorted((e for e in events if e.kind == "ota" and e.device), key=lambda e: e.time):
        device, t = event.device, event.time.timestamp()
        lanes.setdefault(device, [])
        if event.state == "running" and event.version:
            if device in current:
                start, version = current[device]
                if version == event.version:
                    continue
                lanes[device].append((start, t, version, color_of[version]))
            current[device] = (t, event.version)
        elif event.state in ("rolled_back", "failed"):
            markers.append((device, t, f"{event.state} {event.version or ''}: {event.message}", HALT_COLOR))
    for device, (start, version) in current.items():
        lanes[device].append((start, end, version, color_of[version]))
    return sorted(lanes.items()), markers


TEMPLATE = jinja2.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { margin-bottom: 0; } .meta { color: #666; margin-top: 4px; }
table { border-collapse: collapse; margin: 8px 0 24px; } td, th { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: left; }
.ok { color: #2ca02c; font-weight: bold; } .fail { color: #d62728; font-weight: bold; }
section { margin-bottom: 28px; } svg { display: block; margin: 6px 0 14px; }
</style></head>
<body>
<h1>{{ title }}</h1>
<p class="meta">generated {{ generated }} · {{ devices|length }} devices · {{ locations|length }} locations</p>
{% if checks %}
<section id="checks"><h2>Story checks</h2>
<table><tr><th>check</th><th>result</th><th>detail</th></tr>
{% for c in checks %}<tr class="check {{ 'ok' if c.ok else 'fail' }}"><td>{{ c.name }}</td><td class="{{ 'ok' if c.ok else 'fail' }}">{{ 'passed' if c.ok else 'FAILED' }}</td><td>{{ c.detail }}</td></tr>
{% endfor %}</table></section>
{% endif %}
<section id="rollout"><h2>Rollout timeline</h2>
<p>One lane per release: each wave as it opened, halts in red, completion in green.</p>
{{ rollout_svg }}
<h3>Firmware per device</h3>
<p>The version each device reported over time; red ticks are failed updates and rollbacks.</p>
{{ devices_svg }}
</section>
<section id="measurements"><h2>Measurements per location</h2>
{% for chart in charts %}<h3>{{ chart.title }}</h3>
{{ chart.svg }}
{% endfor %}</section>
<section id="devices"><h2>Devices</h2>
<table><tr><th>device</th><th>location</th><th>online</th><th>firmware</th><th>desired</th><th>OTA</th><th>last seen</th><th>readings</th></tr>
{% for d in devices %}<tr class="device"><td>{{ d.device }}</td><td>{{ d.location }}</td><td>{{ 'yes' if d.online else 'no' }}</td><td>{{ d.firmware or '' }}</td><td>{{ d.desired or '' }}</td><td>{{ d.ota_state or '' }}</td><td>{{ d.last_seen.strftime('%H:%M:%S') if d.last_seen else '' }}</td><td>{{ d.readings }}</td></tr>
{% endfor %}</table></section>
<section id="events"><h2>Events</h2>
<table><tr><th>time</th><th>kind</th><th>what</th></tr>
{% for e in events %}<tr><td>{{ e.time.strftime('%H:%M:%S') }}</td><td>{{ e.kind }}</td><td>{{ e.message }}</td></tr>
{% endfor %}</table></section>
</body></html>
""",
    autoescape=True,
)


def render_report(data: ReportData) -> str:
    times = [t for per_loc in data.measurements.values() for pts in per_loc.values() for t, _ in pts]
    times += [e.time.timestamp() for e in data.timeline]
    end = max(times, default=data.generated_at.timestamp())
    start = min(times, default=end - 1)
    charts = []
    for field in [f for f in FIELDS if f in data.measurements] + sorted(set(data.measurements) - set(FIELDS)):
        unit = FIELDS.get(field, ("",))[0]
        title = f"{field} ({unit})" if unit else field
        charts.append({"title": title, "svg": Markup(line_chart(title, unit, data.measurements[field]))})
    lanes, markers = rollout_lanes(data.timeline, end)
    dev_lanes, dev_markers = device_lanes(data.timeline, end)
    notable = [e for e in data.timeline if e.kind != "ota" or e.state in ("rolled_back", "failed")]
    return TEMPLATE.render(
        title=data.title,
        generated=data.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        checks=data.checks,
        devices=data.devices,
        locations=sorted({d.location for d in data.devices}),
        charts=charts,
        rollout_svg=Markup(
            lanes_chart("rollout timeline", start, end, lanes, markers, css_class="timeline rollout")
            if lanes
            else '<p class="empty">no rollout yet</p>'
        ),
        devices_svg=Markup(
            lanes_chart(
                "firmware per device", start, end, dev_lanes, dev_markers, css_class="timeline firmware"
            )
            if dev_lanes
            else '<p class="empty">no firmware reports yet</p>'
        ),
        events=sorted(notable, key=lambda e: e.time),
    )


def write_report(path: Path, data: ReportData) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data))
    return path
