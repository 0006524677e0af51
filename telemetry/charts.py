"""Small inline SVG charts for the admin dashboard: no JavaScript, no CDN, readable at a glance.

Each function returns a :class:`Chart` whose ``svg`` is safe markup (every label is escaped).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from telemetry.selectors import Dashboard

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")
WIDTH, HEIGHT = 640, 190
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 12, 24
PROMPT_COLOUR, COMPLETION_COLOUR = "#2563eb", "#f59e0b"


@dataclass
class Chart:
    key: str
    title: str
    svg: SafeString
    legend: list[tuple[str, str]] = field(default_factory=list)  # (label, colour)


def dashboard_charts(board: Dashboard) -> list[Chart]:
    """Requests, errors and p95 latency per time bucket (one line per program), tokens by model."""
    unit = {60: "minute", 600: "10 minutes", 3600: "hour"}.get(board.period_s, f"{board.period_s} s")
    series = board.series
    return [
        line_chart("requests", f"Requests per {unit}", board.times, {p: s.calls for p, s in series.items()}),
        line_chart("errors", f"Errors per {unit}", board.times, {p: s.errors for p, s in series.items()}),
        line_chart("p95", "p95 latency (ms)", board.times, {p: s.p95_ms for p, s in series.items()}),
        token_bars("tokens", "Tokens by model", board.tokens_by_model),
    ]


def line_chart(
    key: str, title: str, times: Sequence[datetime], series: dict[str, Sequence[float | None]]
) -> Chart:
    top = nice_ceiling(max((v for values in series.values() for v in values if v is not None), default=0))
    parts = [_axes(top), _time_labels(times)]
    legend = []
    for index, (name, values) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        legend.append((name, colour))
        parts.append(_line(name, values, top, colour))
    if not series:
        parts.append(_centered("No requests in this window"))
    return Chart(key, title, _svg(key, title, HEIGHT, parts), legend)


def token_bars(key: str, title: str, rows: Sequence[tuple[str, int, int]]) -> Chart:
    """One horizontal bar per model: prompt then completion tokens."""
    row_height = 26
    height = max(60, TOP + BOTTOM + row_height * len(rows))
    top = max((prompt + completion for _, prompt, completion in rows), default=0) or 1
    label_width, plot = 190, WIDTH - 190 - 90
    parts = []
    for index, (model, prompt, completion) in enumerate(rows):
        y = TOP + index * row_height
        prompt_w, completion_w = plot * prompt / top, plot * completion / top
        parts.append(
            f'<g data-model="{escape(model)}">'
            f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end" class="label">'
            f"{escape(_short(model))}</text>"
            f'<rect x="{label_width}" y="{y + 3}" width="{prompt_w:.1f}" height="16" fill="{PROMPT_COLOUR}">'
            f"<title>prompt: {prompt:,}</title></rect>"
            f'<rect x="{label_width + prompt_w:.1f}" y="{y + 3}" width="{completion_w:.1f}" height="16" '
            f'fill="{COMPLETION_COLOUR}"><title>completion: {completion:,}</title></rect>'
            f'<text x="{label_width + prompt_w + completion_w + 6:.1f}" y="{y + 15}" class="label">'
            f"{_number(prompt + completion)}</text></g>"
        )
    if not rows:
        parts.append(_centered("No LM calls in this window", height))
    legend = [("prompt", PROMPT_COLOUR), ("completion", COMPLETION_COLOUR)]
    return Chart(key, title, _svg(key, title, height, parts), legend)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value`` (1 for empty charts)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def _svg(key: str, title: str, height: int, parts: list[str]) -> SafeString:
    body = "".join(parts)
    return mark_safe(  # noqa: S308 - every interpolated label above is escaped
        f'<svg class="telemetry-chart" data-chart="{key}" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _x(index: int, count: int) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * (index / (count - 1) if count > 1 else 0.5)


def _y(value: float, top: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / top)


def _axes(top: float) -> str:
    lines = []
    for fraction in (0, 0.5, 1):
        y = _y(top * fraction, top)
        lines.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="label">'
            f"{_number(top * fraction)}</text>"
        )
    return "".join(lines)


def _time_labels(times: Sequence[datetime]) -> str:
    if not times:
        return ""
    fmt = "%a %H:%M" if (times[-1] - times[0]).total_seconds() > 86400 else "%H:%M"
    picks = sorted({0, len(times) // 2, len(times) - 1})
    anchors = {0: "start", len(times) - 1: "end"}
    return "".join(
        f'<text x="{_x(i, len(times)):.1f}" y="{HEIGHT - 6}" text-anchor="{anchors.get(i, "middle")}" '
        f'class="label">{times[i]:{fmt}}</text>'
        for i in picks
    )


def _line(name: str, values: Sequence[float | None], top: float, colour: str) -> str:
    """A polyline per run of known values; a dot for a value with no neighbour."""
    runs: list[list[tuple[float, float]]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            runs.append([])
        else:
            runs[-1].append((_x(index, len(values)), _y(value, top)))
    shapes = []
    for run in runs:
        if len(run) == 1:
            (x, y) = run[0]
            shapes.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>')
        elif run:
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            shapes.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
    return f'<g data-series="{escape(name)}"><title>{escape(name)}</title>{"".join(shapes)}</g>'


def _centered(text: str, height: int = HEIGHT) -> str:
    return f'<text x="{WIDTH / 2}" y="{height / 2}" text-anchor="middle" class="empty">{escape(text)}</text>'


def _number(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _short(model: str, limit: int = 28) -> str:
    return model if len(model) <= limit else "…" + model[-(limit - 1) :]
