"""Inline SVG charts for the HTML report: no JavaScript, no network, so the report works offline and in
any browser (and renders the same in headless Chromium in the tests)."""

from __future__ import annotations

from datetime import datetime
from html import escape

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 60, 150, 20, 40


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def _fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S")


class _Scale:
    def __init__(self, t0: float, t1: float, v0: float, v1: float, width: int, height: int) -> None:
        if t1 <= t0:
            t1 = t0 + 1
        if v1 <= v0:
            v0, v1 = v0 - 1, v1 + 1
        self.t0, self.t1, self.v0, self.v1 = t0, t1, v0, v1
        self.plot_w = width - LEFT - RIGHT
        self.plot_h = height - TOP - BOTTOM

    def x(self, t: float) -> float:
        return LEFT + (t - self.t0) / (self.t1 - self.t0) * self.plot_w

    def y(self, v: float) -> float:
        return TOP + (1 - (v - self.v0) / (self.v1 - self.v0)) * self.plot_h


def line_chart(
    title: str,
    unit: str,
    series: dict[str, list[tuple[float, float]]],
    css_class: str = "chart",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """One polyline per named series of (unix time, value) points, with axes, ticks and a legend."""
    points = [p for values in series.values() for p in values]
    if not points:
        return (
            f'<svg class="{css_class} empty" role="img" width="{width}" height="60" '
            f'xmlns="http://www.w3.org/2000/svg"><text x="10" y="30">{escape(title)}: no data</text></svg>'
        )
    ts, vs = [p[0] for p in points], [p[1] for p in points]
    pad = (max(vs) - min(vs)) * 0.05 or 0.5
    scale = _Scale(min(ts), max(ts), min(vs) - pad, max(vs) + pad, width, height)
    parts = [
        f'<svg class="{css_class}" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{scale.plot_w}" height="{scale.plot_h}" fill="#fafafa" '
        'stroke="#ccc"/>',
    ]
    for v in _ticks(scale.v0, scale.v1):
        y = scale.y(v)
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + scale.plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{v:.1f}</text>')
    for t in _ticks(scale.t0, scale.t1):
        x = scale.x(t)
        parts.append(
            f'<text x="{x:.1f}" y="{height - BOTTOM + 16}" font-size="11" text-anchor="middle">'
            f"{_fmt_time(t)}</text>"
        )
    parts.append(
        f'<text x="14" y="{TOP + scale.plot_h / 2:.0f}" font-size="11" '
        f'transform="rotate(-90 14 {TOP + scale.plot_h / 2:.0f})" text-anchor="middle">{escape(unit)}</text>'
    )
    for i, (name, values) in enumerate(sorted(series.items())):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{scale.x(t):.1f},{scale.y(v):.1f}" for t, v in sorted(values))
        parts.append(
            f'<polyline class="series" data-series="{escape(name)}" data-points="{len(values)}" '
            f'fill="none" stroke="{color}" stroke-width="1.8" points="{coords}"/>'
        )
        ly = TOP + 14 + i * 16
        lx = width - RIGHT + 12
        parts.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{lx + 15}" y="{ly}" font-size="12">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def lanes_chart(
    title: str,
    t0: float,
    t1: float,
    lanes: list[tuple[str, list[tuple[float, float, str, str]]]],
    markers: list[tuple[str, float, str, str]],
    css_class: str = "timeline",
    width: int = WIDTH + 120,
) -> str:
    """Horizontal lanes over time. A lane is (label, [(start, end, text, color)]); a marker is
    (lane label, time, text, color) drawn as a labelled vertical tick (halts, rollbacks)."""
    lane_h = 22
    height = TOP + BOTTOM + lane_h * max(1, len(lanes))
    left = 150
    plot_w = width - left - 30
    span = (t1 - t0) or 1.0

    def x(t: float) -> float:
        return left + (t - t0) / span * plot_w

    parts = [
        f'<svg class="{css_class}" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    index = {}
    for row, (label, segments) in enumerate(lanes):
        y = TOP + row * lane_h
        index[label] = y
        parts.append(
            f'<text x="{left - 8}" y="{y + 15}" font-size="12" text-anchor="end">{escape(label)}</text>'
        )
        parts.append(f'<rect x="{left}" y="{y + 2}" width="{plot_w}" height="{lane_h - 4}" fill="#f4f4f4"/>')
        for start, end, text, color in segments:
            sx, ex = x(start), x(max(end, start))
            parts.append(
                f'<rect class="segment" data-label="{escape(text)}" x="{sx:.1f}" y="{y + 2}" '
                f'width="{max(ex - sx, 1.5):.1f}" height="{lane_h - 4}" fill="{color}">'
                f"<title>{escape(label)}: {escape(text)}</title></rect>"
            )
            if ex - sx > 7 * len(text):
                parts.append(
                    f'<text x="{sx + 4:.1f}" y="{y + 15}" font-size="11" fill="#fff">{escape(text)}</text>'
                )
    for label, t, text, color in markers:
        y = index.get(label, TOP)
        mx = x(t)
        parts.append(
            f'<g class="marker" data-label="{escape(text)}"><line x1="{mx:.1f}" x2="{mx:.1f}" '
            f'y1="{y}" y2="{y + lane_h}" stroke="{color}" stroke-width="3"/>'
            f"<title>{escape(label)}: {escape(text)}</title></g>"
        )
    for t in _ticks(t0, t1, 6):
        parts.append(
            f'<text x="{x(t):.1f}" y="{height - BOTTOM + 16}" font-size="11" text-anchor="middle">'
            f"{_fmt_time(t)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)
