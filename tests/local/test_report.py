"""The HTML report: inline SVG charts per field and location, the rollout timeline with waves and halts,
rendered by headless Chromium (the screenshot is kept in test-artifacts/)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from weatherfleet.demo.report import Check, DeviceSummary, ReportData, render_report, write_report
from weatherfleet.local.timeline import Timeline, TimelineEvent

from .chromium import render

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def story_events() -> list[TimelineEvent]:
    r1 = {"release": "firmware-1-1-0", "version": "1.1.0", "fleet": "weatherfleet/garden"}
    r2 = {"release": "firmware-1-2-0", "version": "1.2.0", "fleet": "weatherfleet/garden"}
    return [
        TimelineEvent(time=at(0), kind="ota", state="running", device="dev-01", version="1.0.0", message=""),
        TimelineEvent(time=at(10), kind="wave", wave=0, percent=20, message="wave 1", **r1),
        TimelineEvent(time=at(20), kind="ota", state="running", device="dev-01", version="1.1.0", message=""),
        TimelineEvent(time=at(40), kind="wave", wave=1, percent=50, message="wave 2", **r1),
        TimelineEvent(time=at(70), kind="wave", wave=2, percent=100, message="wave 3", **r1),
        TimelineEvent(time=at(100), kind="complete", message="20 devices updated", **r1),
        TimelineEvent(time=at(120), kind="wave", wave=0, percent=20, message="wave 1", **r2),
        TimelineEvent(
            time=at(140), kind="ota", state="rolled_back", device="dev-01", version="1.2.0", message="boot"
        ),
        TimelineEvent(time=at(150), kind="halted", wave=0, message="failure threshold reached: dev-01", **r2),
    ]


def report_data() -> ReportData:
    measurements = {
        field: {
            loc: [(at(i * 5).timestamp(), base + j + math.sin(i / 4 + j)) for i in range(36)]
            for j, loc in enumerate(("balcony", "greenhouse", "roof"))
        }
        for field, base in (("temperature", 20.0), ("humidity", 45.0), ("co2", 600.0))
    }
    return ReportData(
        title="test report",
        measurements=measurements,
        timeline=story_events(),
        devices=[DeviceSummary(device="dev-01", location="roof", online=True, firmware="1.1.0", readings=36)],
        checks=[Check(name="all devices publish", ok=True), Check(name="1.2.0 halted", ok=False, detail="x")],
    )


def test_rollout_lanes_have_a_segment_per_wave_and_a_halt_marker():
    html = render_report(report_data())
    labels = re.findall(r'class="segment" data-label="([^"]+)"', html)
    assert labels[:5] == ["wave 1: 20%", "wave 2: 50%", "wave 3: 100%", "complete", "wave 1: 20%"]
    assert "halted" in labels
    assert 'class="marker" data-label="halted: failure threshold reached: dev-01"' in html
    # dev-01's firmware lane: 1.0.0 then 1.1.0, and a rollback tick for 1.2.0
    assert re.findall(r'data-label="(1\.\d\.0)"', html) == ["1.0.0", "1.1.0"]
    assert "rolled_back 1.2.0: boot" in html


def test_no_script_and_no_external_resource():
    html = render_report(report_data())
    assert "<script" not in html
    assert not re.search(r'(src|href)="https?:', html)


def test_report_renders_in_headless_chromium_with_its_charts(tmp_path, artifacts_dir):
    page = write_report(tmp_path / "report.html", report_data())
    dom = render(page, artifacts_dir / "local-report-unit.png", tmp_path / "profile")
    charts = re.findall(r'<svg class="chart"[^>]*aria-label="([^"]+)"', dom)
    assert charts == ["temperature (degC)", "humidity (percent)", "co2 (ppm)"]
    assert len(re.findall(r'<polyline class="series"', dom)) == 9  # 3 fields x 3 locations
    assert 'data-points="36"' in dom
    assert '<svg class="timeline rollout"' in dom and '<svg class="timeline firmware"' in dom
    assert dom.count('class="check ok"') == 1 and dom.count('class="check fail"') == 1


def test_timeline_file_survives_a_torn_line(tmp_path):
    timeline = Timeline(tmp_path / "timeline.jsonl")
    for event in story_events()[:3]:
        timeline.append(event)
    with timeline.path.open("a") as out:
        out.write('{"kind": "wave", "mess')  # a crash mid-write
    assert [e.kind for e in timeline.events()] == ["ota", "wave", "ota"]
