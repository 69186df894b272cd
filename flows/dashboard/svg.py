"""Server-side SVG charts: line charts with point markers, and stacked bar charts.

Rendered as strings so the dashboard needs no JavaScript library and no network: the
page works offline and in any browser. Every drawn element carries ``data-*`` attributes
(``data-series``, ``data-points``, ``data-ts``) so tests and scripts can check what was
drawn without parsing geometry. Non-finite values are gaps, never zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

PALETTE = ("#2563eb", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d")
SEVERITY_COLOURS = {
    "critical": "#b91c1c",
    "high": "#dc2626",
    "medium": "#ea580c",
    "low": "#ca8a04",
}
WIDTH, HEIGHT = 380, 150
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 52, 10, 22, 20
MAX_POINTS = 400  # per line: more points than pixels only inflates the page

Scale = Callable[[float], float]


@dataclass(frozen=True)
class Line:
    """One drawn series: x in epoch seconds, y in the chart's unit (NaN = gap)."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    dots: bool = False  # draw each point as a circle as well (sparse series)


@dataclass(frozen=True)
class Marker:
    """A point to highlight, e.g. where an anomaly was stored."""

    x: float
    y: float
    label: str
    severity: str = "medium"
    series: str = ""


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    unit: str = ""
    lines: Sequence[Line] = ()
    markers: Sequence[Marker] = ()
    x_range: tuple[float, float] | None = None
    y_floor: float | None = None  # e.g. 0 for rates and percentages
    y_ceiling: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Bars:
    """Stacked bars: one value per (stack, bucket); buckets are labelled on the x axis."""

    key: str
    title: str
    buckets: Sequence[str]
    stacks: dict[str, Sequence[float]] = field(default_factory=dict)
    colours: dict[str, str] = field(default_factory=dict)


def _number(value: float) -> str:
    """Three significant digits, but never an exponent below 100 000 (``1023``, not
    ``1.02e+03``)."""
    if abs(value) >= 1e5:
        return f"{value:.2e}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def fmt_value(value: float, unit: str = "") -> str:
    """A short axis or tooltip label: bytes in binary prefixes, seconds scaled to ms/min."""
    if not math.isfinite(value):
        return "–"
    if unit == "B":
        for prefix in ("", "Ki", "Mi", "Gi"):
            if abs(value) < 1024:
                return f"{_number(value)} {prefix}B"
            value /= 1024
        return f"{_number(value)} TiB"
    if unit == "s" and 0 < abs(value) < 1:
        return f"{_number(value * 1000)} ms"
    if unit == "s" and abs(value) >= 120:
        return f"{_number(value / 60)} min"
    if unit in ("", "%"):
        return _number(value) + unit
    return f"{_number(value)} {unit}"


def fmt_time(epoch_s: float, with_date: bool = False) -> str:
    """UTC clock time; with the date when a chart spans more than a day."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%m-%d %H:%M" if with_date else "%H:%M")


def thin(
    xs: Sequence[float], ys: Sequence[float], limit: int = MAX_POINTS
) -> tuple[list[float], list[float]]:
    """At most ``limit`` evenly spaced points (the last one kept): caps the SVG's size."""
    n = len(xs)
    if n <= limit:
        return list(xs), list(ys)
    step = (n - 1) / (limit - 1)
    idx = sorted({round(i * step) for i in range(limit)})
    return [xs[i] for i in idx], [ys[i] for i in idx]


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _y_range(chart: Chart) -> tuple[float, float] | None:
    """Data range widened to the floor and ceiling; 5 % headroom unless a ceiling caps it."""
    ys = [y for line in chart.lines for y in _finite(line.ys)] + _finite(
        [m.y for m in chart.markers]
    )
    if not ys:
        return None
    lo, hi = min(ys), max(ys)
    if chart.y_floor is not None:
        lo = min(lo, chart.y_floor)
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = (lo, hi + pad) if chart.y_floor == lo else (lo - pad, hi + pad)
    elif chart.y_ceiling is None or hi > chart.y_ceiling:
        hi += (hi - lo) * 0.05
    if chart.y_ceiling is not None:
        hi = max(hi, chart.y_ceiling)
    return lo, hi


def _x_range(chart: Chart) -> tuple[float, float] | None:
    if chart.x_range is not None:
        lo, hi = chart.x_range
    else:
        xs = [x for line in chart.lines for x in _finite(line.xs)] + _finite(
            [m.x for m in chart.markers]
        )
        if not xs:
            return None
        lo, hi = min(xs), max(xs)
    if hi - lo < 1e-9:
        return lo - 30.0, hi + 30.0
    return lo, hi


def _attrs(**values: object) -> str:
    """Escaped attributes; ``data_points`` becomes ``data-points``, ``class_`` ``class``."""
    return " ".join(
        f'{k.rstrip("_").replace("_", "-")}="{escape(str(v), quote=True)}"'
        for k, v in values.items()
    )


def _frame(key: str, title: str, body: str, **data: object) -> str:
    head = _attrs(
        class_="chart",
        viewBox=f"0 0 {WIDTH} {HEIGHT}",
        width=WIDTH,
        height=HEIGHT,
        role="img",
        aria_label=title,
        data_chart=key,
        **data,
    )
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' {head}><title>{escape(title)}</title>"
        f"<text class='chart-title' x='{PAD_LEFT}' y='14'>{escape(title)}</text>{body}</svg>"
    )


def _empty(chart_key: str, title: str, message: str) -> str:
    body = (
        f"<text class='empty' x='{WIDTH / 2}' y='{HEIGHT / 2}' text-anchor='middle'>"
        f"{escape(message)}</text>"
    )
    return _frame(chart_key, title, body, data_empty="true", data_points=0)


def line_chart(chart: Chart) -> str:
    """A line chart with y labels (min, max), x labels (start, end) and markers on top."""
    xr, yr = _x_range(chart), _y_range(chart)
    if xr is None or yr is None:
        return _empty(chart.key, chart.title, chart.note or "no data yet")
    (x0, x1), (y0, y1) = xr, yr
    pw, ph = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def px(x: float) -> float:
        return PAD_LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return PAD_TOP + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [
        f"<rect class='plot' x='{PAD_LEFT}' y='{PAD_TOP}' width='{pw}' height='{ph}'/>",
        _axis_labels(chart.unit, (x0, x1), (y0, y1), px, py),
    ]
    total = 0
    for i, line in enumerate(chart.lines):
        xs, ys = thin(line.xs, line.ys)
        d, n = _path(xs, ys, px, py)
        total += n
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f"<path class='line' {_attrs(data_series=line.name, data_points=n)} d='{d}' "
            f"stroke='{colour}'><title>{escape(line.name)}</title></path>"
        )
        if line.dots:
            parts.extend(
                f"<circle class='dot' {_attrs(data_series=line.name)} cx='{px(x):.1f}' "
                f"cy='{py(y):.1f}' r='2.5' fill='{colour}'/>"
                for x, y in zip(xs, ys, strict=True)
                if math.isfinite(x) and y is not None and math.isfinite(y)
            )
    parts.extend(_marker(m, px, py) for m in chart.markers if _inside(m, (x0, x1)))
    if chart.note:
        parts.append(
            f"<text class='note' x='{WIDTH - PAD_RIGHT}' y='14' text-anchor='end'>"
            f"{escape(chart.note)}</text>"
        )
    markers = sum(_inside(m, (x0, x1)) for m in chart.markers)
    return _frame(chart.key, chart.title, "".join(parts), data_points=total, data_markers=markers)


def _inside(m: Marker, xr: tuple[float, float]) -> bool:
    return math.isfinite(m.x) and math.isfinite(m.y) and xr[0] <= m.x <= xr[1]


def _path(xs: list[float], ys: list[float], px: Scale, py: Scale) -> tuple[str, int]:
    """SVG path data; a NaN starts a new segment (a gap), so missing data stays visible."""
    out: list[str] = []
    pen_down = False
    n = 0
    for x, y in zip(xs, ys, strict=True):
        if y is None or not (math.isfinite(x) and math.isfinite(y)):
            pen_down = False
            continue
        out.append(f"{'L' if pen_down else 'M'}{px(x):.1f} {py(y):.1f}")
        pen_down = True
        n += 1
    return " ".join(out), n


def _marker(m: Marker, px: Scale, py: Scale) -> str:
    colour = SEVERITY_COLOURS.get(m.severity, SEVERITY_COLOURS["medium"])
    data = _attrs(data_series=m.series, data_ts=round(m.x), data_severity=m.severity)
    return (
        f"<circle class='anomaly' {data} cx='{px(m.x):.1f}' cy='{py(m.y):.1f}' r='4' "
        f"fill='none' stroke='{colour}'><title>{escape(m.label)}</title></circle>"
    )


def _axis_labels(
    unit: str, xr: tuple[float, float], yr: tuple[float, float], px: Scale, py: Scale
) -> str:
    (x0, x1), (y0, y1) = xr, yr
    bottom = HEIGHT - 5
    dated = x1 - x0 > 86400
    return (
        f"<text class='axis' x='{PAD_LEFT - 4}' y='{py(y1) + 4:.1f}' text-anchor='end'>"
        f"{escape(fmt_value(y1, unit))}</text>"
        f"<text class='axis' x='{PAD_LEFT - 4}' y='{py(y0):.1f}' text-anchor='end'>"
        f"{escape(fmt_value(y0, unit))}</text>"
        f"<text class='axis' x='{px(x0):.1f}' y='{bottom}'>{fmt_time(x0, dated)}</text>"
        f"<text class='axis' x='{px(x1):.1f}' y='{bottom}' text-anchor='end'>"
        f"{fmt_time(x1, dated)} UTC</text>"
    )


def bar_chart(bars: Bars) -> str:
    """Stacked bars with the bucket labels thinned to a readable few."""
    n = len(bars.buckets)
    totals = [
        sum(v for v in (bars.stacks[s][i] for s in bars.stacks) if math.isfinite(v))
        for i in range(n)
    ]
    if not n or max(totals, default=0) <= 0:
        return _empty(bars.key, bars.title, "no data yet")
    top = max(totals)
    colours = {
        name: bars.colours.get(name, PALETTE[j % len(PALETTE)])
        for j, name in enumerate(bars.stacks)
    }
    pw, ph = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = pw / n
    parts = [
        f"<rect class='plot' x='{PAD_LEFT}' y='{PAD_TOP}' width='{pw}' height='{ph}'/>",
        f"<text class='axis' x='{PAD_LEFT - 4}' y='{PAD_TOP + 4}' text-anchor='end'>"
        f"{fmt_value(top)}</text>",
        f"<text class='axis' x='{PAD_LEFT - 4}' y='{PAD_TOP + ph}' text-anchor='end'>0</text>",
    ]
    label_every = max(1, math.ceil(n / 6))
    for i, bucket in enumerate(bars.buckets):
        x = PAD_LEFT + i * slot + slot * 0.1
        base = float(PAD_TOP + ph)
        for name, values in bars.stacks.items():
            v = values[i]
            if not math.isfinite(v) or v <= 0:
                continue
            h = v / top * ph
            base -= h
            parts.append(
                f"<rect class='bar' {_attrs(data_series=name, data_bucket=bucket, data_value=v)} "
                f"x='{x:.1f}' y='{base:.1f}' width='{slot * 0.8:.1f}' height='{h:.1f}' "
                f"fill='{colours[name]}'><title>{escape(f'{bucket} {name}: {v:g}')}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(f"<text class='axis' x='{x:.1f}' y='{HEIGHT - 5}'>{escape(bucket)}</text>")
    legend = "".join(f"<tspan fill='{c}'>■ {escape(name)} </tspan>" for name, c in colours.items())
    parts.append(
        f"<text class='legend' x='{WIDTH - PAD_RIGHT}' y='14' text-anchor='end'>{legend}</text>"
    )
    return _frame(bars.key, bars.title, "".join(parts), data_points=n)
