"""Tabs (one per task) and their table columns: which numbers each cell shows and how they are formatted.

A cell holds the text shown and the value the page sorts by. Measured numbers come only from records with
status ok; an OOM, error or skipped record shows its status in every measured cell; a record with random
weights never shows a quality metric (latency and memory are shown, and the weights column says random).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from glocal.leaderboard.data import (
    dataset_name,
    device_name,
    get,
    hardware_label,
    is_noisy,
    is_random,
    measured,
    method_label,
    noise,
    num,
    options_label,
    quality,
    slugify,
)
from glocal.taskspec import TASKS, TaskSpec

STATUS_LABELS = {"oom": "OOM", "error": "error", "skipped": "skipped"}


# ---------------------------------------------------------------------------------------------------------
# formatting


def fmt_sig(x: float | None, sig: int = 3) -> str:
    """``x`` to ``sig`` significant digits (integer digits are never dropped), thousands separated."""
    if x is None:
        return "—"
    if x == 0:
        return "0"
    decimals = max(0, sig - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def fmt_fixed(x: float | None, decimals: int) -> str:
    """``x`` with a fixed number of decimals (metrics like top-1 % or PSNR dB)."""
    return "—" if x is None else f"{x:,.{decimals}f}"


def fmt_params(n: float | None) -> str:
    """A parameter count in millions, two decimals (28,224,160 -> ``28.22``)."""
    return "—" if n is None else f"{n / 1e6:,.2f}"


def fmt_interval(ci: Any, sig: int = 3) -> str:
    """A confidence interval given as ``[low, high]``, ``{"low", "high"}`` or a half-width number."""
    if isinstance(ci, dict):
        ci = [ci.get("low", ci.get("lo")), ci.get("high", ci.get("hi"))]
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(num(v) is not None for v in ci):
        return f"{fmt_sig(num(ci[0]), sig)}–{fmt_sig(num(ci[1]), sig)}"
    if num(ci) is not None:
        return f"±{fmt_sig(num(ci), sig)}"
    return "—"


# ---------------------------------------------------------------------------------------------------------
# tabs


@dataclass(frozen=True)
class Tab:
    """One task tab: its primary quality metric (for ranking and the Pareto chart) and its table."""

    slug: str
    title: str
    primary: str | None = None  # path inside ``metrics``
    primary_label: str = ""
    higher_is_better: bool = True
    resolution_label: str = "input side (px)"
    pareto_by_resolution: bool = False  # restoration latency depends on the image size: compare like sizes
    core: bool = False  # shown even without records
    description: str = ""
    throughput_unit: str = "img/s"

    @property
    def page(self) -> str:
        return f"task-{self.slug}.html"


def _tab(spec: TaskSpec) -> Tab:
    """A task's tab, read from the task specification (``glocal.taskspec``)."""
    return Tab(spec.name, spec.title, spec.primary_metric, spec.primary_label, spec.higher_is_better,
               resolution_label=spec.resolution_label, pareto_by_resolution=spec.per_megapixel,
               core=spec.name in CORE_TABS, description=spec.description,
               throughput_unit=spec.throughput_unit)


CORE_TABS = ("classification", "dehazing", "super_resolution", "structure")  # shown even without records
TABS: dict[str, Tab] = {name: _tab(spec) for name, spec in TASKS.items()}


def tab_for(slug: str) -> Tab:
    """The tab for a record's tab slug; tasks the site does not know get a generic tab."""
    return TABS.get(slug) or Tab(slug=f"x-{slugify(slug)}", title=slug)


# ---------------------------------------------------------------------------------------------------------
# cells and columns


@dataclass(frozen=True)
class Cell:
    """What a table cell shows (``text``) and sorts by (``sort``; None sorts last either way)."""

    text: str
    sort: float | str | None = None
    href: str | None = None
    cls: str = ""
    title: str = ""


class RowContext(Protocol):
    """What columns need from the site: names and links of models and records, frontier membership."""

    def display_name(self, record: dict) -> str: ...
    def model_href(self, record: dict) -> str: ...
    def record_href(self, record: dict) -> str: ...
    def on_frontier(self, record: dict) -> bool: ...


CellFn = Callable[[dict, RowContext], Cell]


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    value: CellFn
    kind: str = "num"  # "num" sorts numerically, "text" alphabetically
    help: str = ""
    first: str = "asc"  # direction of the first click on the header


@dataclass
class Row:
    record: dict
    cells: list[Cell]
    device: str
    precision: str
    classes: list[str] = field(default_factory=list)


def _status_cell(record: dict) -> Cell | None:
    status = record["status"]
    if status == "ok":
        return None
    return Cell(STATUS_LABELS[status], None, cls=f"st st-{status}", title=(record.get("error") or status)[:300])


_MISSING = Cell("—", None, cls="missing", title="not measured")


def noise_title(record: dict) -> str:
    ratio = noise(record)
    return f"noisy: the IQR is {ratio:.0%} of the median (> 10 %); kept out of rankings and Pareto fronts"


def measure_cell(path: str, fmt: Callable[[float], str] = fmt_sig, *, timed: bool = False) -> CellFn:
    """A latency/memory/compute number (shown for random weights too); ``timed`` numbers carry the noise mark."""

    def cell(record: dict, ctx: RowContext) -> Cell:
        bad = _status_cell(record)
        if bad:
            return bad
        v = measured(record, path)
        if v is None:
            return _MISSING
        if timed and is_noisy(record):
            return Cell(fmt(v), v, cls="noisy", title=noise_title(record))
        return Cell(fmt(v), v)

    return cell


def metric_cell(path: str, fmt: Callable[[float], str], *, baseline: str | None = None) -> CellFn:
    """A quality metric from ``metrics``; with ``baseline``, the metric minus the baseline's (a gain)."""

    def cell(record: dict, ctx: RowContext) -> Cell:
        bad = _status_cell(record)
        if bad:
            return bad
        if is_random(record):
            return Cell("—", None, cls="random", title="random weights: quality metrics are not shown")
        v = quality(record, path)
        if v is not None and baseline is not None:
            b = quality(record, baseline)
            v = None if b is None else v - b
        return _MISSING if v is None else Cell(fmt(v), v)

    return cell


def _model(record: dict, ctx: RowContext) -> Cell:
    name = ctx.display_name(record)
    return Cell(name, name.lower(), href=ctx.model_href(record), cls="model")


def _weights(record: dict, ctx: RowContext) -> Cell:
    w = record["weights"]
    if w["source"] == "random":
        return Cell("random weights", "random", cls="w-random", title="random weights: no quality metrics")
    return Cell(w["id"], w["id"].lower(), title=f"{w['source']}; sha256 {w.get('sha256') or 'unknown'}")


def _text(fn: Callable[[dict], Any], empty: Cell | None = None) -> CellFn:
    def cell(record: dict, ctx: RowContext) -> Cell:
        v = fn(record)
        text = "" if v is None else str(v)
        if not text:
            return empty or _MISSING
        return Cell(text, text.lower())

    return cell


def _int(fn: Callable[[dict], Any]) -> CellFn:
    def cell(record: dict, ctx: RowContext) -> Cell:
        v = fn(record)
        return Cell(str(v), float(v)) if isinstance(v, int) else _MISSING

    return cell


def _params(record: dict, ctx: RowContext) -> Cell:
    v = num(get(record, "compute.params"))
    return _MISSING if v is None else Cell(fmt_params(v), v)


def _pareto(record: dict, ctx: RowContext) -> Cell:
    on = ctx.on_frontier(record)
    return Cell(
        "●" if on else "",
        1.0 if on else None,
        cls="pareto" if on else "",
        title="on the quality–latency Pareto frontier of its device, precision, batch and dataset" if on else "",
    )


def _record(record: dict, ctx: RowContext) -> Cell:
    return Cell(
        record["id"][:8],
        record["id"],
        href=ctx.record_href(record),
        cls="record",
        title="provenance and the command that reproduces this row",
    )


def _interval(path: str) -> CellFn:
    def cell(record: dict, ctx: RowContext) -> Cell:
        bad = _status_cell(record)
        if bad:
            return bad
        if is_random(record):
            return Cell("—", None, cls="random", title="random weights: quality metrics are not shown")
        ci = get(record.get("metrics") or {}, path)
        text = fmt_interval(ci)
        return _MISSING if text == "—" else Cell(text, None)

    return cell


_BASE = Cell("base model", None, cls="missing", title="no efficiency method applied")


def _lead_columns(tab: Tab) -> list[Column]:
    return [
        Column("model", "Model", _model, "text", "model family (links to its card, provenance and commands)"),
        Column("variant", "Variant", _text(lambda r: r["model"]["variant"]), "text"),
        Column("method", "Method", _text(method_label, _BASE), "text", "efficiency method applied, and its parameters"),
        Column("options", "Options", _text(options_label), "text", "task options of the run"),
        Column("dataset", "Dataset", _text(dataset_name), "text", "what was scored"),
        Column("device", "Hardware", _text(hardware_label), "text", "device, with the threads used on CPUs"),
        Column("precision", "Precision", _text(lambda r: r["settings"]["precision"]), "text"),
        Column("batch", "Batch", _int(lambda r: r["settings"]["batch_size"])),
        Column("resolution", "Res. (px)", _int(lambda r: r["settings"]["resolution"]), help=tab.resolution_label),
    ]


def _latency_columns(tab: Tab, *, per_mp: bool = False) -> list[Column]:
    cols = [
        Column("latency", "Latency (ms)", measure_cell("latency.median", timed=True),
               help="median latency of one forward at the batch shown, ms; ≈ marks a noisy measurement"),
        Column("p90", "p90 (ms)", measure_cell("latency.p90", timed=True), help="90th percentile latency, ms"),
    ]
    if per_mp:
        cols.append(Column("ms_per_mp", "Latency (ms/MP)", measure_cell("latency.ms_per_megapixel", timed=True),
                           help="median latency per output megapixel"))
    else:
        cols.append(Column("throughput", f"Throughput ({tab.throughput_unit})",
                           measure_cell("latency.throughput", timed=True),
                           help=f"{tab.throughput_unit} at the batch shown", first="desc"))
    cols += [
        Column("gpu_alloc", "GPU peak alloc. (MiB)", measure_cell("memory.peak_allocated"),
               help="peak memory allocated by tensors on the GPU, MiB"),
        Column("gpu_reserved", "GPU reserved (MiB)", measure_cell("memory.peak_reserved"),
               help="peak memory reserved by the caching allocator on the GPU, MiB"),
        Column("cpu_rss", "CPU peak RSS (MiB)", measure_cell("memory.cpu_peak_rss"),
               help="peak resident memory of the whole process on the CPU, MiB"),
        Column("gmacs", "Compute (GMACs)", measure_cell("compute.gmacs"),
               help="multiply-adds at batch 1 at this resolution (FLOPs / 2), billions"),
        Column("params", "Params (M)", _params, help="parameter count, millions"),
    ]
    return cols


def _workload_columns(records: Sequence[dict]) -> list[Column]:
    """One column per numeric workload descriptor found in the records (tokens, attention GMACs...)."""
    keys = sorted({k for r in records for k, v in (r.get("workload") or {}).items() if num(v) is not None})[:6]
    return [Column(f"w-{k}", k.replace("_", " "), measure_cell(f"workload.{k}"), help=f"workload.{k} of the run")
            for k in keys]


def _tail_columns(tab: Tab) -> list[Column]:
    cols = (
        [Column("pareto", "Pareto", _pareto, help="on the quality–latency frontier", first="desc")]
        if tab.primary
        else []
    )
    return cols + [
        Column("weights", "Weights", _weights, "text", "weights id; random weights never show quality"),
        Column("record", "Record", _record, "text", "record id: provenance and reproduce command"),
    ]


def columns_for(tab: Tab, records: Sequence[dict] = ()) -> list[Column]:
    """The table columns of a tab; generic tabs get one column per numeric metric found in ``records``."""
    lead = _lead_columns(tab)
    if tab.slug == "classification":
        mid = [
            Column("top1", "Top-1 (%)", metric_cell("top1", lambda v: fmt_fixed(v, 2)), first="desc"),
            Column("top5", "Top-5 (%)", metric_cell("top5", lambda v: fmt_fixed(v, 2)), first="desc"),
        ]
        return lead + mid + _latency_columns(tab) + _workload_columns(records) + _tail_columns(tab)
    if tab.slug in ("dehazing", "super_resolution"):
        base = "hazy input" if tab.slug == "dehazing" else "bicubic"
        mid = [
            Column("psnr", "PSNR (dB)", metric_cell("psnr", lambda v: fmt_fixed(v, 2)), first="desc"),
            Column("ssim", "SSIM", metric_cell("ssim", lambda v: fmt_fixed(v, 4)), first="desc"),
            Column(
                "psnr_gain",
                "ΔPSNR (dB)",
                metric_cell("psnr", lambda v: f"{v:+.2f}", baseline="baseline.psnr"),
                help=f"PSNR gain over the {base} baseline on the same images",
                first="desc",
            ),
        ]
        return lead + mid + _latency_columns(tab, per_mp=True) + _workload_columns(records) + _tail_columns(tab)
    if tab.slug == "structure":
        s = "structure_sensitivity"
        mid = [
            Column(
                "accuracy",
                "Accuracy",
                metric_cell(f"{s}.accuracy", fmt_sig),
                first="desc",
                help="odd-one-out accuracy (chance 1/3)",
            ),
            Column("ci95", "95% CI", _interval(f"{s}.ci95"), "text"),
            Column("trials", "Trials", metric_cell(f"{s}.n_trials", lambda v: f"{v:,.0f}")),
            Column(
                "pixel_hist",
                "Pixel-hist. baseline",
                metric_cell(f"{s}.baselines.pixel_histogram.accuracy", fmt_sig),
                help="accuracy of a pixel-histogram observer on the same trials (local-only control)",
            ),
            Column(
                "local_patches",
                "Local-patch baseline",
                metric_cell(f"{s}.baselines.local_patches.accuracy", fmt_sig),
                help="accuracy of a local-patch observer on the same trials (local-only control)",
            ),
        ]
        lat = [c for c in _latency_columns(tab) if c.key in ("latency", "params")]
        return lead + mid + lat + _tail_columns(tab)
    keys = sorted({k for r in records for k, v in (r.get("metrics") or {}).items() if num(v) is not None})[:8]
    mid = [Column(f"m-{k}", k, metric_cell(k, fmt_sig)) for k in keys]
    return lead + mid + _latency_columns(tab) + _workload_columns(records) + _tail_columns(tab)


def build_rows(records: Sequence[dict], columns: Sequence[Column], ctx: RowContext) -> list[Row]:
    """Table rows in the given record order."""
    rows = []
    for r in records:
        classes = [f"row-{r['status']}"] + (["row-random"] if is_random(r) else []) + (
            ["row-noisy"] if is_noisy(r) else [])
        rows.append(Row(r, [c.value(r, ctx) for c in columns], device_name(r), r["settings"]["precision"], classes))
    return rows


def has_value(cell: Cell) -> bool:
    """Whether a cell shows a value rather than a dash, a placeholder or a run status (a failed run's status
    keeps only the latency column); the page script applies the same rule to the rows left after filtering."""
    return cell.text not in ("", "—") and not {"missing", "random", "st"} & set(cell.cls.split())


def _keeps(column: Column, cell: Cell) -> bool:
    return has_value(cell) or (column.key == "latency" and cell.cls.startswith("st "))


def prune_columns(columns: Sequence[Column], rows: Sequence[Row]) -> tuple[list[Column], list[Row]]:
    """Only the columns with a value in at least one row (the model column always stays)."""
    keep = [i for i, c in enumerate(columns) if c.key == "model" or any(_keeps(c, r.cells[i]) for r in rows)]
    cols = [columns[i] for i in keep]
    return cols, [Row(r.record, [r.cells[i] for i in keep], r.device, r.precision, r.classes) for r in rows]


def primary_value(tab: Tab, record: dict) -> float | None:
    """The tab's primary quality metric of a record (None for random weights or failed runs)."""
    return quality(record, tab.primary) if tab.primary else None


def rank_records(records: Sequence[dict], value: Callable[[dict], float | None], *, higher_is_better: bool,
                 include_noisy: bool = False) -> list[tuple[int | None, dict]]:
    """Records in rank order with their rank (1 = best); records without a value, and noisy ones unless
    ``include_noisy``, come last without a rank. Equal values share a rank."""
    ranked, rest = [], []
    for r in records:
        v = value(r)
        (ranked if v is not None and (include_noisy or not is_noisy(r)) else rest).append((v, r))
    ranked.sort(key=lambda vr: -vr[0] if higher_is_better else vr[0])
    out: list[tuple[int | None, dict]] = []
    for i, (v, r) in enumerate(ranked):
        same = i > 0 and ranked[i - 1][0] == v
        out.append((out[-1][0] if same else i + 1, r))
    return out + [(None, r) for _, r in rest]
