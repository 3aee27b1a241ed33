"""Charts: quality against latency with the Pareto frontier, and latency/memory against resolution.

The points and the frontier are computed here in plain Python (unit-tested); Altair only turns them into
Vega-Lite specs, and vl-convert supplies the Vega/Vega-Lite/vega-embed JavaScript that the site ships
as a local file. Both libraries are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from glocal.leaderboard.data import dataset_name, device_name, measured, memory_value, newest_key, num
from glocal.leaderboard.tables import Tab, primary_value

CHART_WIDTH = 520
CHART_HEIGHT = 320


def pareto_front(xs: Sequence[float | None], ys: Sequence[float | None]) -> list[bool]:
    """Which points are on the frontier minimising ``x`` (cost) and maximising ``y`` (quality).

    A point is on the frontier when no other point has cost <= and quality >= with one of them strict;
    exact duplicates do not dominate each other, so both stay. Missing or non-finite values are never on it.
    """
    if len(xs) != len(ys):
        raise ValueError(f"pareto_front needs as many x as y values ({len(xs)} != {len(ys)})")
    valid = [i for i, (x, y) in enumerate(zip(xs, ys, strict=False)) if num(x) is not None and num(y) is not None]
    order = sorted(valid, key=lambda i: (xs[i], -ys[i]))
    out = [False] * len(xs)
    best = -math.inf  # best quality among strictly cheaper points
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and xs[order[j]] == xs[order[i]]:
            j += 1
        top = ys[order[i]]  # same cost: the first has the highest quality
        if top > best:
            for k in order[i:j]:
                out[k] = ys[k] == top
            best = top
        i = j
    return out


@dataclass
class ChartGroup:
    """One chart: the records it compares and the points drawn."""

    kind: str  # "quality", "latency" or "memory"
    title: str
    device: str
    precision: str
    x_title: str
    y_title: str
    points: list[dict[str, Any]] = field(default_factory=list)
    chart_id: str = ""

    @property
    def frontier(self) -> list[dict[str, Any]]:
        return [p for p in self.points if p.get("pareto")]


def _group_title(
    device: str,
    precision: str,
    batch: int,
    dataset: str = "",
    resolution: int | None = None,
    resolution_label: str = "",
) -> str:
    parts = [device, precision, f"batch {batch}"]
    if resolution is not None:
        parts.append(f"{resolution_label.split(' (')[0]} {resolution} px".strip())
    if dataset:
        parts.append(dataset)
    return " · ".join(parts)


def quality_groups(records: Sequence[dict], tab: Tab, label: Callable[[dict], str]) -> list[ChartGroup]:
    """Quality-vs-latency charts of a tab, one per (device, precision, batch, dataset[, resolution]),
    with each point's frontier flag; only ok records with real weights, a quality value and a latency."""
    if not tab.primary:
        return []
    groups: dict[tuple, list[tuple[dict, float, float]]] = {}
    for r in records:
        q, lat = primary_value(tab, r), measured(r, "latency.median")
        if q is None or lat is None or lat <= 0:
            continue
        s = r["settings"]
        key = (
            device_name(r),
            s["precision"],
            s["batch_size"],
            dataset_name(r),
            s["resolution"] if tab.pareto_by_resolution else None,
        )
        groups.setdefault(key, []).append((r, lat, q))
    out = []
    for (device, precision, batch, dataset, res), items in sorted(groups.items(), key=_group_sort):
        flags = pareto_front([lat for _, lat, _ in items], [q for _, _, q in items])
        points = [
            {
                "model": label(r),
                "variant": r["model"]["variant"],
                "latency_ms": lat,
                "quality": q,
                "resolution": r["settings"]["resolution"],
                "weights": r["weights"]["id"],
                "record": r["id"],
                "pareto": flag,
            }
            for (r, lat, q), flag in zip(items, flags, strict=False)
        ]
        out.append(
            ChartGroup(
                "quality",
                _group_title(device, precision, batch, dataset, res, tab.resolution_label),
                device,
                precision,
                f"latency, median (ms, batch {batch}, log scale)",
                tab.primary_label,
                points,
            )
        )
    return out


def _group_sort(item: tuple) -> tuple:
    return tuple("" if v is None else str(v) if not isinstance(v, int) else f"{v:09d}" for v in item[0])


def scaling_groups(
    records: Sequence[dict],
    kind: str,
    series: Callable[[dict], str],
    resolution_label: str = "input side (px)",
) -> list[ChartGroup]:
    """Latency (``kind="latency"``) or peak memory (``"memory"``) against resolution, one chart per
    (device, precision, batch) with at least two resolutions, one line per ``series(record)``.
    When several records give the same (series, resolution), the newest is drawn."""
    if kind not in ("latency", "memory"):
        raise ValueError(f"unknown scaling chart {kind!r}; expected latency or memory")
    groups: dict[tuple, dict[tuple[str, int], tuple[dict, float, str]]] = {}
    for r in records:
        if kind == "latency":
            v, which = measured(r, "latency.median"), "latency"
        else:
            v, which = memory_value(r)
        if v is None or v <= 0:
            continue
        s = r["settings"]
        key = (device_name(r), s["precision"], s["batch_size"], which)
        cell = (series(r), s["resolution"])
        prev = groups.setdefault(key, {}).get(cell)
        if prev is None or newest_key(r) > newest_key(prev[0]):
            groups[key][cell] = (r, v, which)
    out = []
    for (device, precision, batch, which), cells in sorted(groups.items(), key=_group_sort):
        if len({res for _, res in cells}) < 2:
            continue
        points = [
            {
                "series": name,
                "resolution": res,
                "value": v,
                "record": r["id"],
                "random": r["weights"]["source"] == "random",
            }
            for (name, res), (r, v, _) in sorted(cells.items())
        ]
        y_title = {
            "latency": f"latency, median (ms, batch {batch}, log scale)",
            "peak_allocated": "GPU peak allocated (MiB, log scale)",
            "cpu_peak_rss": "CPU peak RSS (MiB, log scale)",
        }[which]
        title = _group_title(device, precision, batch)
        out.append(ChartGroup(kind, title, device, precision, f"{resolution_label}, log scale", y_title, points))
    return out


# ---------------------------------------------------------------------------------------------------------
# Vega-Lite specs (Altair) and the JavaScript bundle (vl-convert)


def quality_spec(group: ChartGroup, *, validate: bool = False) -> dict:
    """Scatter of quality against log latency, coloured by model, with the frontier as a step line and
    its points ringed (layer names ``points``, ``frontier``, ``pareto`` become SVG classes ``*_marks``)."""
    import altair as alt

    base = alt.Chart(alt.Data(values=group.points))
    x = alt.X("latency_ms:Q", title=group.x_title, scale=alt.Scale(type="log", nice=False, padding=12))
    y = alt.Y("quality:Q", title=group.y_title, scale=alt.Scale(zero=False, nice=True, padding=12))
    tooltip = [
        alt.Tooltip("model:N", title="model"),
        alt.Tooltip("variant:N", title="variant"),
        alt.Tooltip("quality:Q", title=group.y_title, format=".4~g"),
        alt.Tooltip("latency_ms:Q", title="latency (ms)", format=".4~g"),
        alt.Tooltip("resolution:Q", title="resolution"),
        alt.Tooltip("weights:N", title="weights"),
        alt.Tooltip("pareto:N", title="on frontier"),
    ]
    points = (
        base.mark_point(filled=True, size=70, opacity=0.85)
        .encode(x=x, y=y, color=alt.Color("model:N", title="model"), tooltip=tooltip)
        .properties(name="points")
    )
    on_front = base.transform_filter("datum.pareto")
    line = (
        on_front.mark_line(interpolate="step-after", color="#333", strokeDash=[5, 3], strokeWidth=1.2)
        .encode(x=x, y=y, order=alt.Order("latency_ms:Q"))
        .properties(name="frontier")
    )
    rings = (
        on_front.mark_point(size=220, color="#333", strokeWidth=1.5, filled=False)
        .encode(x=x, y=y, tooltip=tooltip)
        .properties(name="pareto")
    )
    chart = alt.layer(line, points, rings).properties(width=CHART_WIDTH, height=CHART_HEIGHT)
    return chart.to_dict(validate=validate)


def scaling_spec(group: ChartGroup, *, validate: bool = False) -> dict:
    """Lines of latency or memory against resolution on log-log axes, one line per series."""
    import altair as alt

    base = alt.Chart(alt.Data(values=group.points))
    ticks = sorted({p["resolution"] for p in group.points})
    x = alt.X(
        "resolution:Q",
        title=group.x_title,
        scale=alt.Scale(type="log", base=2, nice=False, padding=12),
        axis=alt.Axis(values=ticks, format="d"),
    )
    y = alt.Y("value:Q", title=group.y_title, scale=alt.Scale(type="log", nice=False, padding=12))
    tooltip = [
        alt.Tooltip("series:N", title="model"),
        alt.Tooltip("resolution:Q", title="resolution"),
        alt.Tooltip("value:Q", title=group.y_title.split(" (")[0], format=".4~g"),
        alt.Tooltip("random:N", title="random weights"),
    ]
    lines = (
        base.mark_line(point=alt.OverlayMarkDef(filled=True, size=50))
        .encode(
            x=x,
            y=y,
            color=alt.Color("series:N", title="model"),
            order=alt.Order("resolution:Q"),
            tooltip=tooltip,
        )
        .properties(name="lines")
    )
    return lines.properties(width=CHART_WIDTH, height=CHART_HEIGHT).to_dict(validate=validate)


def spec_for(group: ChartGroup, *, validate: bool = False) -> dict:
    return quality_spec(group, validate=validate) if group.kind == "quality" else scaling_spec(group, validate=validate)


def _vega_lite_version() -> str | None:
    """The Vega-Lite release Altair writes specs for, if vl-convert ships it (``"6.4"``)."""
    import altair as alt
    import vl_convert as vlc

    want = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return want if want in vlc.get_vegalite_versions() else None


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed in one classic script (no imports, no network), wrapped in a
    function so its top-level names stay private; it sets ``window.vegaEmbed``."""
    import vl_convert as vlc

    js = vlc.javascript_bundle(vl_version=_vega_lite_version())
    return (
        "/* Vega, Vega-Lite, vega-embed (BSD-3-Clause) and dependencies, bundled by vl-convert-python. */\n"
        "(function () {\n" + js + "\n})();\n"
    )
