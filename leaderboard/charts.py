"""Charts: quality against latency with the Pareto frontier, and latency/memory against resolution.

The points and the frontier are computed here in plain Python (unit-tested); Altair only turns them into
Vega-Lite specs, and vl-convert supplies the Vega/Vega-Lite/vega-embed JavaScript that the site ships
as a local file. Both libraries are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
import math
import re
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


def extend_colors(colors: dict[str, str], keys: Sequence[str]) -> dict[str, str]:
    """``colors`` plus the palette's next colours for the new ``keys`` (sorted), so a series that is a variant
    plus task options keeps one colour on every chart while the variants keep theirs."""
    out = dict(colors)
    for k in sorted(set(keys) - set(out)):
        out[k] = PALETTE[len(out) % len(PALETTE)]
    return out


@dataclass(frozen=True)
class ChartChoice:
    """How a tab draws its latency and memory charts: which value is the x axis, which task option splits the
    charts, the latency unit, the ratio labelled between series, and which paper figures go in the separate
    paper-reported table. Data only: the site has no code per task beyond looking this up."""

    x_option: str | None = None  # task option on the x axis instead of settings.resolution
    x_title: str = ""  # x axis title when x_option is set
    split_option: str | None = None  # task option whose values (other than 1) get charts of their own
    split_x_title: str = ""  # x axis title of those charts (video: the frame height)
    latency_divisor: float = 1.0  # latency medians are in ms; 1000 draws seconds
    latency_title: str = "latency, median (ms, batch {batch}, log scale)"
    ratio_option: str | None = None  # baseline / other latency at each x, between series differing by this option
    ratio_base: str = "dense"  # option values starting with this are the baseline of the ratio
    paper_pattern: str = ""  # regex on paper metric names shown as "paper-reported" beside the charts
    mark_oom: bool = False  # out-of-memory cells drawn as crosses at the chart's top


DEFAULT_CHOICE = ChartChoice()
CHART_CHOICES: dict[str, ChartChoice] = {  # keyed by glocal.taskspec.TASKS name (= tab slug)
    "generation": ChartChoice(split_option="frames", split_x_title="video resolution (frame height, px)",
                              latency_divisor=1000.0,
                              latency_title="seconds per denoising step (median, batch {batch}, log scale)",
                              ratio_option="attention", paper_pattern=r"seconds|speedup", mark_oom=True),
    "multiview": ChartChoice(x_option="frames", x_title="frames", latency_divisor=1000.0,
                             latency_title="seconds per forward (median, batch {batch}, log scale)",
                             paper_pattern=r"seconds|memory", mark_oom=True),
}


def chart_choice(task: str) -> ChartChoice:
    return CHART_CHOICES.get(task, DEFAULT_CHOICE)


def cell_options(record: dict) -> dict[str, Any]:
    opts = (record.get("settings") or {}).get("task_options")
    return opts if isinstance(opts, dict) else {}


def distinguishing_options(records: Sequence[dict], choice: ChartChoice = DEFAULT_CHOICE) -> list[str]:
    """The task options that take two values or more among ``records`` (the x and split options excepted):
    they, with the variant and method, tell the series apart."""
    values: dict[str, set[str]] = {}
    for r in records:
        for k, v in cell_options(r).items():
            values.setdefault(k, set()).add(repr(v))
    keys = [k for k, vs in values.items() if len(vs) > 1 or any(k not in cell_options(r) for r in records)]
    return sorted(k for k in keys if k not in (choice.x_option, choice.split_option))


def paper_rows(cards: Sequence[dict], choice: ChartChoice) -> list[dict]:
    """The cards' paper metrics that the choice's pattern names (runtime figures), one row each, to be shown
    apart from measured points and labelled paper-reported."""
    if not choice.paper_pattern:
        return []
    pattern = re.compile(choice.paper_pattern)
    rows = []
    for card in cards:
        model = card.get("display_name") or card.get("family", "")
        for v in card.get("variants") or []:
            for m in v.get("paper_metrics") or []:
                if not isinstance(m, dict) or num(m.get("value")) is None:
                    continue
                if pattern.search(str(m.get("metric", ""))):
                    rows.append({"model": model, "variant": v.get("name", ""), "setting": m.get("dataset", ""),
                                 "metric": m["metric"], "value": m["value"], "note": m.get("note", "")})
    return rows


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
    x_name: str = "resolution"  # what the x axis of a scaling chart is (a task option's name or resolution)

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


def _x_of(record: dict, choice: ChartChoice) -> int | None:
    """The record's x value: its resolution, or the task option the choice puts on the x axis."""
    if choice.x_option is None:
        return record["settings"]["resolution"]
    v = num(cell_options(record).get(choice.x_option))
    return int(v) if v is not None and v > 0 else None


def _split_of(record: dict, choice: ChartChoice) -> Any:
    """The value of the choice's split option when it makes a chart of its own (None or 1: the main chart)."""
    v = cell_options(record).get(choice.split_option) if choice.split_option else None
    return None if v in (None, 1) else v


def _scaling_value(record: dict, kind: str, choice: ChartChoice) -> tuple[float | None, str]:
    if kind == "latency":
        v = measured(record, "latency.median")
        return (None if v is None else v / choice.latency_divisor), "latency"
    return memory_value(record)


def scaling_groups(
    records: Sequence[dict],
    kind: str,
    series: Callable[[dict], str],
    resolution_label: str = "input side (px)",
    *,
    overlay: bool = False,
    choice: ChartChoice = DEFAULT_CHOICE,
    key: Callable[[dict], str] | None = None,
) -> list[ChartGroup]:
    """Latency (``kind="latency"``) or peak memory (``"memory"``) against resolution (or the task option that
    ``choice`` puts on the x axis), one chart per (device, precision, batch[, split option value]) with at least
    two x values, one line per ``series(record)``. With ``overlay`` the devices share a chart (one per precision
    and batch, only where two devices or more were measured), one line per series and device. When several
    records give the same cell, the newest is drawn. ``key(record)`` names the colour (default: the variant).
    Out-of-memory cells become ``oom`` points at the chart's top;
    with ``choice.ratio_option`` each non-baseline point carries the baseline's value over its own."""
    if kind not in ("latency", "memory"):
        raise ValueError(f"unknown scaling chart {kind!r}; expected latency or memory")
    groups: dict[tuple, dict[tuple[str, int, str], tuple[dict, float, str]]] = {}
    ooms: list[dict] = []
    for r in records:
        x = _x_of(r, choice)
        if choice.mark_oom and r.get("status") == "oom" and x is not None:
            ooms.append(r)
        v, which = _scaling_value(r, kind, choice)
        if v is None or v <= 0 or x is None:
            continue
        s = r["settings"]
        where = ("" if overlay else device_name(r), s["precision"], s["batch_size"], which, _split_of(r, choice))
        cell = (series(r), x, hardware_label(r))
        prev = groups.setdefault(where, {}).get(cell)
        if prev is None or newest_key(r) > newest_key(prev[0]):
            groups[where][cell] = (r, v, which)
    out = []
    for (device, precision, batch, which, split), cells in sorted(groups.items(), key=_group_sort):
        if len({x for _, x, _ in cells}) < 2 or (overlay and len({hw for _, _, hw in cells}) < 2):
            continue
        points = [_scaling_point(name, x, hw, r, v, kind, key) for (name, x, hw), (r, v, _) in sorted(cells.items())]
        if kind == "latency":
            _label_ratios(points, choice)
        points += _oom_points(ooms, points, (device, precision, batch, split), (series, key), overlay, choice)
        y_title = {
            "latency": choice.latency_title.format(batch=batch),
            "peak_allocated": "GPU peak allocated (MiB, log scale)",
            "cpu_peak_rss": "CPU peak RSS (MiB, log scale)",
        }[which]
        title = _group_title(device or "all hardware", precision, batch)
        if split is not None:
            title += f" · {choice.split_option} {split}"
        x_title = (split is not None and choice.split_x_title) or choice.x_title or resolution_label
        out.append(ChartGroup(kind, title, device, precision, f"{x_title}, log scale", y_title, points,
                              overlay=overlay, x_name=choice.x_option or "resolution"))
    return out


def _scaling_point(name: str, x: int, hw: str, r: dict, v: float, kind: str,
                   key: Callable[[dict], str] | None) -> dict[str, Any]:
    return {
        "series": name,
        "variant": r["model"]["variant"],
        "key": key(r) if key else r["model"]["variant"],
        "hardware": hw,
        "resolution": r["settings"]["resolution"],
        "x": x,
        "value": v,
        "record": r["id"],
        "random": r["weights"]["source"] == "random",
        "noisy": kind == "latency" and is_noisy(r),
        "oom": False,
        "options": dict(cell_options(r)),
    }


def _label_ratios(points: list[dict], choice: ChartChoice) -> None:
    """Set ``ratio`` (baseline value / own value) and ``ratio_text`` on each point whose ``choice.ratio_option``
    is not a baseline value, against the fastest baseline of the same variant, x and hardware."""
    opt = choice.ratio_option
    if not opt:
        return
    base: dict[tuple, float] = {}
    for p in points:
        if str(p["options"].get(opt, "")).startswith(choice.ratio_base):
            k = (p["variant"], p["x"], p["hardware"])
            base[k] = min(base.get(k, math.inf), p["value"])
    for p in points:
        b = base.get((p["variant"], p["x"], p["hardware"]))
        if b is not None and opt in p["options"] and not str(p["options"][opt]).startswith(choice.ratio_base):
            p["ratio"] = b / p["value"]
            p["ratio_text"] = f"{p['ratio']:.2f}x vs {choice.ratio_base}"


def _oom_points(ooms: Sequence[dict], points: list[dict], setting: tuple, names: tuple[Callable, Callable | None],
                overlay: bool, choice: ChartChoice) -> list[dict]:
    """Out-of-memory cells of this chart's setting as points above the top of its y range (no measured value; half
    again the highest measured value, so that a cross never hides a measured point at the same x)."""
    device, precision, batch, split = setting
    series, key = names
    top = 1.5 * max(p["value"] for p in points)
    out = []
    for r in ooms:
        s = r["settings"]
        if (s["precision"], s["batch_size"], _split_of(r, choice)) != (precision, batch, split):
            continue
        if not overlay and device_name(r) != device:
            continue
        p = _scaling_point(series(r), _x_of(r, choice), hardware_label(r), r, top, "memory", key)
        p.update(oom=True, label="out of memory")
        out.append(p)
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


def _color(group: ChartGroup, colors: dict[str, str] | None, field: str = "variant") -> Any:
    """Colour by variant (or by ``field``, a series key) with the site-wide colours (only this chart's in the
    legend)."""
    import altair as alt

    domain = sorted({p[field] for p in group.points})
    colors = extend_colors(colors or {}, domain)
    scale = alt.Scale(domain=domain, range=[colors.get(v, PALETTE[0]) for v in domain])
    return alt.Color(f"{field}:N", title="variant" if field == "variant" else "series", scale=scale,
                     legend=alt.Legend(orient="bottom", columns=3 if field == "variant" else 2,
                                       labelLimit=180 if field == "variant" else 300, symbolType="circle"))


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
    """Lines of latency or memory against the x value (resolution or frames) on log-log axes, one line per series
    (and per device on overlay charts, told apart by dashes); noisy latencies are hollow points; out-of-memory
    cells are crosses at the top labelled ``out of memory`` (layer ``oom``); ratios to the baseline are written
    beside their points (layer ``ratios``)."""
    import altair as alt

    base = alt.Chart(alt.Data(values=group.points))
    drawn = base.transform_filter("!datum.oom")
    ticks = sorted({p["x"] for p in group.points})
    x = alt.X("x:Q", title=group.x_title, scale=alt.Scale(type="log", base=2, nice=False, padding=12),
              axis=alt.Axis(values=ticks, format="d"))
    y = alt.Y("value:Q", title=group.y_title, scale=alt.Scale(type="log", nice=False, padding=12))
    tooltip = [
        alt.Tooltip("series:N", title="model"),
        alt.Tooltip("variant:N", title="variant"),
        alt.Tooltip("hardware:N", title="hardware"),
        alt.Tooltip("resolution:Q", title="resolution"),
        alt.Tooltip("x:Q", title=group.x_title.split(",")[0]),
        alt.Tooltip("value:Q", title=group.y_title.split(" (")[0], format=".4~g"),
        alt.Tooltip("random:N", title="random weights"),
        alt.Tooltip("noisy:N", title="noisy (IQR > 10 % of median)"),
    ]
    color = _color(group, colors, "key")
    enc: dict[str, Any] = {"x": x, "y": y, "color": color, "order": alt.Order("x:Q")}
    detail = [alt.Detail("series:N")]
    if group.overlay:
        enc["strokeDash"] = alt.StrokeDash("hardware:N", title="hardware (dash pattern)",
                                           legend=alt.Legend(orient="top", columns=1, labelLimit=320))
        detail.append(alt.Detail("hardware:N"))
    layers = [
        drawn.mark_line(strokeWidth=1.8).encode(**enc, detail=detail).properties(name="lines"),
        drawn.mark_point(filled=False, size=45, strokeWidth=1.6)
        .encode(x=x, y=y, color=color, fill=color, tooltip=tooltip,
                fillOpacity=alt.condition("datum.noisy", alt.value(0.0), alt.value(1.0)))
        .properties(name="dots"),
    ]
    if any(p.get("ratio") for p in group.points):
        layers.append(drawn.transform_filter("datum.ratio").mark_text(align="left", dx=7, dy=-8, fontSize=11)
                      .encode(x=x, y=y, text="ratio_text:N", color=color).properties(name="ratios"))
    if any(p["oom"] for p in group.points):
        oom = base.transform_filter("datum.oom")
        layers.append(oom.mark_point(shape="cross", size=120, filled=True, angle=45)
                      .encode(x=x, y=y, color=color, tooltip=[alt.Tooltip("series:N", title="model"),
                                                              alt.Tooltip("x:Q", title="x"),
                                                              alt.Tooltip("label:N", title="status")])
                      .properties(name="oom"))
        layers.append(oom.mark_text(dy=-12, fontSize=11).encode(x=x, y=y, text="label:N", color=color)
                      .properties(name="oom_label"))
    return _sized(alt.layer(*layers), validate)


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
