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

from glocal.leaderboard.data import (
    dataset_name,
    device_name,
    hardware_label,
    is_noisy,
    measured,
    memory_value,
    newest_key,
    num,
)
from glocal.leaderboard.tables import Tab, primary_value

CHART_WIDTH = 520
CHART_HEIGHT = 320
# Saturated colours that stay visible as hollow rings: one colour per variant name across every chart of the site
PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79",
    "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#000000",
)


def variant_colors(variants: Sequence[str]) -> dict[str, str]:
    """A colour per variant name, assigned in sorted order (the palette repeats past 20 variants)."""
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(sorted(set(variants)))}


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
    overlay: bool = False  # several devices in one chart (dashes tell them apart)

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
        clean = [not is_noisy(r) for r, _, _ in items]  # noisy latencies never make the frontier
        flags = pareto_front([lat if ok else None for (_, lat, _), ok in zip(items, clean, strict=True)],
                             [q for _, _, q in items])
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
                "noisy": is_noisy(r),
            }
            for (r, lat, q), flag in zip(items, flags, strict=False)
        ]
        out.append(
            ChartGroup(
                "quality",
                _group_title(device, precision, batch, dataset, res, tab.resolution_label),
                device,
                precision,
                f"latency, median (ms, batch {batch}, log scale), measured here",
                f"{tab.primary_label}, measured here",
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
    *,
    overlay: bool = False,
) -> list[ChartGroup]:
    """Latency (``kind="latency"``) or peak memory (``"memory"``) against resolution, one chart per
    (device, precision, batch) with at least two resolutions, one line per ``series(record)``.
    With ``overlay`` the devices share a chart (one per precision and batch, only where two devices or more
    were measured), one line per series and device. When several records give the same cell, the newest
    is drawn."""
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
        key = ("" if overlay else device_name(r), s["precision"], s["batch_size"], which)
        cell = (series(r), s["resolution"], hardware_label(r))
        prev = groups.setdefault(key, {}).get(cell)
        if prev is None or newest_key(r) > newest_key(prev[0]):
            groups[key][cell] = (r, v, which)
    out = []
    for (device, precision, batch, which), cells in sorted(groups.items(), key=_group_sort):
        if len({res for _, res, _ in cells}) < 2 or (overlay and len({hw for _, _, hw in cells}) < 2):
            continue
        points = [
            {
                "series": name,
                "variant": r["model"]["variant"],
                "hardware": hw,
                "resolution": res,
                "value": v,
                "record": r["id"],
                "random": r["weights"]["source"] == "random",
                "noisy": kind == "latency" and is_noisy(r),
            }
            for (name, res, hw), (r, v, _) in sorted(cells.items())
        ]
        y_title = {
            "latency": f"latency, median (ms, batch {batch}, log scale)",
            "peak_allocated": "GPU peak allocated (MiB, log scale)",
            "cpu_peak_rss": "CPU peak RSS (MiB, log scale)",
        }[which]
        title = _group_title(device or "all hardware", precision, batch)
        out.append(ChartGroup(kind, title, device, precision, f"{resolution_label}, log scale", y_title, points,
                              overlay=overlay))
    return out


def paper_groups(records: Sequence[dict], tab: Tab, settings: dict[str, tuple], paper: Callable[[dict], Any],
                 label: Callable[[dict], str]) -> list[ChartGroup]:
    """Paper-reported quality (``paper(record)``, from the model card) against latency measured here, one
    chart per device at that device's ranking setting (``settings[device] = (precision, batch, resolution)``).
    The two numbers come from different sources and both axes say which; noisy latencies are drawn hollow."""
    out = []
    for device, (precision, batch, resolution) in sorted(settings.items()):
        points = []
        for r in records:
            s = r["settings"]
            if (device_name(r), s["precision"], s["batch_size"], s["resolution"]) != (device, precision, batch,
                                                                                       resolution):
                continue
            lat, q = measured(r, "latency.median"), num(paper(r))
            if lat is None or lat <= 0 or q is None:
                continue
            points.append({"model": label(r), "variant": r["model"]["variant"], "latency_ms": lat, "quality": q,
                           "resolution": resolution, "weights": r["weights"]["id"], "record": r["id"],
                           "pareto": False, "noisy": is_noisy(r)})
        best: dict[str, dict] = {}  # one point per variant: its fastest clean latency, else its fastest noisy one
        for p in sorted(points, key=lambda p: (p["noisy"], p["latency_ms"])):
            best.setdefault(p["variant"], p)
        points = sorted(best.values(), key=lambda p: p["variant"])
        if len(points) < 2:
            continue
        hw = hardware_label(next(r for r in records if device_name(r) == device))
        title = f"{hw} · {precision} · batch {batch} · {resolution} px"
        out.append(ChartGroup("paper", title, device, precision,
                              "latency, median (ms, log scale), measured here",
                              f"{tab.primary_label}, paper-reported (model card)", points))
    return out


# ---------------------------------------------------------------------------------------------------------
# Vega-Lite specs (Altair) and the JavaScript bundle (vl-convert)


def _color(group: ChartGroup, colors: dict[str, str] | None) -> Any:
    """Colour by variant with the site-wide variant colours (only this chart's variants in the legend)."""
    import altair as alt

    domain = sorted({p["variant"] for p in group.points})
    colors = colors or variant_colors(domain)
    scale = alt.Scale(domain=domain, range=[colors.get(v, PALETTE[0]) for v in domain])
    return alt.Color("variant:N", title="variant", scale=scale,
                     legend=alt.Legend(orient="bottom", columns=3, labelLimit=180, symbolType="circle"))


def _sized(chart: Any, validate: bool) -> dict:
    """The spec at the container's width (so charts fit a phone), fixed height."""
    spec = chart.properties(width="container", height=CHART_HEIGHT).to_dict(validate=validate)
    spec["autosize"] = {"type": "fit-x", "contains": "padding"}
    return spec


def quality_spec(group: ChartGroup, colors: dict[str, str] | None = None, *, validate: bool = False) -> dict:
    """Scatter of quality against log latency, coloured by variant; noisy latencies are hollow; on quality
    charts the frontier is a step line with its points ringed (layer names ``points``, ``frontier``,
    ``pareto`` become SVG classes ``*_marks``)."""
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
        alt.Tooltip("noisy:N", title="noisy (IQR > 10 % of median)"),
    ]
    if group.kind == "quality":
        tooltip.append(alt.Tooltip("pareto:N", title="on frontier"))
    color = _color(group, colors)
    points = (
        base.mark_point(filled=False, size=70, strokeWidth=1.8)
        .encode(x=x, y=y, color=color, fill=color,
                fillOpacity=alt.condition("datum.noisy", alt.value(0.0), alt.value(0.85)), tooltip=tooltip)
        .properties(name="points")
    )
    if group.kind != "quality":
        return _sized(points, validate)
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
    return _sized(alt.layer(line, points, rings), validate)


def scaling_spec(group: ChartGroup, colors: dict[str, str] | None = None, *, validate: bool = False) -> dict:
    """Lines of latency or memory against resolution on log-log axes, one line per series (and per device
    on overlay charts, told apart by dashes); noisy latencies are hollow points."""
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
        alt.Tooltip("variant:N", title="variant"),
        alt.Tooltip("hardware:N", title="hardware"),
        alt.Tooltip("resolution:Q", title="resolution"),
        alt.Tooltip("value:Q", title=group.y_title.split(" (")[0], format=".4~g"),
        alt.Tooltip("random:N", title="random weights"),
        alt.Tooltip("noisy:N", title="noisy (IQR > 10 % of median)"),
    ]
    color = _color(group, colors)
    enc: dict[str, Any] = {"x": x, "y": y, "color": color, "order": alt.Order("resolution:Q")}
    detail = [alt.Detail("series:N")]
    if group.overlay:
        enc["strokeDash"] = alt.StrokeDash("hardware:N", title="hardware (dash pattern)",
                                           legend=alt.Legend(orient="top", columns=1, labelLimit=320))
        detail.append(alt.Detail("hardware:N"))
    lines = base.mark_line(strokeWidth=1.8).encode(**enc, detail=detail).properties(name="lines")
    dots = (
        base.mark_point(filled=False, size=45, strokeWidth=1.6)
        .encode(x=x, y=y, color=color, fill=color, tooltip=tooltip,
                fillOpacity=alt.condition("datum.noisy", alt.value(0.0), alt.value(1.0)))
        .properties(name="dots")
    )
    return _sized(alt.layer(lines, dots), validate)


def spec_for(group: ChartGroup, colors: dict[str, str] | None = None, *, validate: bool = False) -> dict:
    if group.kind in ("quality", "paper"):
        return quality_spec(group, colors, validate=validate)
    return scaling_spec(group, colors, validate=validate)


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
