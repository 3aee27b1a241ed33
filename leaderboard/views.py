"""The reading views of the site: per-task rankings for the overview, the hardware matrix of a task, and the
summary at the top of a model page. Plain functions over records and card dicts; the pages render them.

A ranking compares like with like: quality by the task's primary metric (real weights only), efficiency by
median latency at one stated setting (device, precision, batch, resolution). Noisy latencies (IQR over 10 %
of the median) are marked and left unranked unless the visitor asks for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from glocal.leaderboard.data import (
    dataset_name,
    device_name,
    get,
    hardware_label,
    is_noisy,
    is_ok,
    measured,
    method_label,
    num,
)
from glocal.leaderboard.tables import Tab, fmt_fixed, fmt_params, fmt_sig, noise_title, primary_value, rank_records

Setting = tuple[str, str, int, int]  # device, precision, batch, resolution


def setting_of(record: dict) -> Setting:
    s = record["settings"]
    return device_name(record), s["precision"], s["batch_size"], s["resolution"]


def setting_text(setting: Setting, label: str | None = None) -> str:
    device, precision, batch, resolution = setting
    return f"{label or device} · {precision} · batch {batch} · {resolution} px"


def setting_id(setting: Setting) -> str:
    return "|".join(str(x) for x in setting)


def _timed(records: Sequence[dict]) -> list[dict]:
    """Ok records of base models (no method, no task options) with a median latency."""
    return [r for r in records if is_ok(r) and measured(r, "latency.median") is not None
            and not method_label(r) and not get(r, "settings.task_options")]


def ranking_settings(records: Sequence[dict]) -> list[Setting]:
    """Every setting with a latency, the most widely measured first (then batch 1, smaller inputs, GPU before
    CPU); the first of each device is that device's default for the paper chart."""
    variants: dict[Setting, set[str]] = {}
    for r in _timed(records):
        variants.setdefault(setting_of(r), set()).add(r["model"]["variant"])

    def key(s: Setting) -> tuple:
        device, precision, batch, resolution = s
        return (-len(variants[s]), batch != 1, resolution, device.lower().startswith("cpu"), device, precision)

    return sorted(variants, key=key)


def device_defaults(settings: Sequence[Setting]) -> dict[str, tuple[str, int, int]]:
    """The first (most widely measured) setting of each device."""
    out: dict[str, tuple[str, int, int]] = {}
    for device, precision, batch, resolution in settings:
        out.setdefault(device, (precision, batch, resolution))
    return out


def paper_value(card: dict | None, variant: str, metric: str | None) -> float | None:
    """The first paper-reported value of ``metric`` for a variant on its model card (the headline number)."""
    if not card or not metric:
        return None
    name = metric.split(".")[-1]
    for v in card.get("variants") or []:
        if isinstance(v, dict) and v.get("name") == variant:
            for m in v.get("paper_metrics") or []:
                if isinstance(m, dict) and m.get("metric") == name and num(m.get("value")) is not None:
                    return num(m.get("value"))
    return None


@dataclass
class RankRow:
    rank: int | None
    record: dict
    cells: dict[str, Any]  # column key -> (text, sort value, css class, title)
    setting: str = ""
    noisy: bool = False
    href: str = ""


@dataclass
class Ranking:
    """One ranked table of the overview."""

    kind: str  # "quality" or "efficiency"
    title: str
    columns: list[tuple[str, str, str]]  # key, label, help
    rows: list[RankRow]
    settings: list[tuple[str, str]] = field(default_factory=list)  # (id, text) of the setting picker
    rank_by: str = ""
    higher_is_better: bool = False


def _cell(text: str, sort: Any = None, cls: str = "", title: str = "") -> tuple[str, Any, str, str]:
    return text, sort, cls, title


def _one_per_variant(records: Sequence[dict]) -> list[dict]:
    """One record per model variant (cells that differ only in weights or dataset time the same network):
    the fastest clean measurement, else the fastest noisy one."""
    best: dict[tuple[str, str], dict] = {}
    for r in records:
        key = (r["model"]["family"], r["model"]["variant"])
        rank = (is_noisy(r), measured(r, "latency.median"))
        if key not in best or rank < (is_noisy(best[key]), measured(best[key], "latency.median")):
            best[key] = r
    return list(best.values())


def efficiency_ranking(records: Sequence[dict], tab: Tab, card_of: Callable[[dict], dict | None],
                       label: Callable[[dict], str]) -> Ranking | None:
    """Latency ranking of base-model variants, one block of rows per setting (the page shows one setting at
    a time; the first is the default). Paper-reported quality sits beside it, labelled as such."""
    settings = ranking_settings(records)
    if not settings:
        return None
    labels = {device_name(r): hardware_label(r) for r in records}
    timed = _timed(records)
    unit = tab.throughput_unit
    columns = [
        ("rank", "Rank", "1 = fastest median latency at this setting; noisy measurements are not ranked"),
        ("variant", "Variant", "links to the model's page"),
        ("latency", "Latency (ms)", "median latency, measured here; ≈ marks a noisy measurement"),
        ("throughput", f"Throughput ({unit})", "measured here"),
        ("gpu_alloc", "GPU peak alloc. (MiB)", "measured here"),
        ("cpu_rss", "CPU peak RSS (MiB)", "measured here"),
        ("params", "Params (M)", ""),
        ("gmacs", "Compute (GMACs)", "measured here, batch 1"),
    ]
    if tab.primary:
        columns.insert(3, ("paper", f"{tab.primary_label} (paper)", "paper-reported (model card), not measured"))
    columns.append(("model", "Model", ""))
    rows: list[RankRow] = []
    for s in settings:
        group = _one_per_variant([r for r in timed if setting_of(r) == s])
        for rank, r in rank_records(group, lambda r: measured(r, "latency.median"), higher_is_better=False):
            rows.append(RankRow(rank, r, _efficiency_cells(r, rank, tab, card_of(r), label), setting_id(s),
                                is_noisy(r)))
    present = {k for row in rows for k, c in row.cells.items() if c[1] is not None}
    columns = [c for c in columns if c[0] in ("rank", "model", "variant") or c[0] in present]
    return Ranking("efficiency", f"Fastest at a fixed setting: {tab.title}", columns, rows,
                   [(setting_id(s), setting_text(s, labels[s[0]])) for s in settings], "latency", False)


def _efficiency_cells(r: dict, rank: int | None, tab: Tab, card: dict | None,
                      label: Callable[[dict], str]) -> dict[str, Any]:
    noisy = is_noisy(r)
    lat = measured(r, "latency.median")
    thr = measured(r, "latency.throughput")
    alloc, rss = measured(r, "memory.peak_allocated"), measured(r, "memory.cpu_peak_rss")
    params, gmacs = num(get(r, "compute.params")), measured(r, "compute.gmacs")
    paper = paper_value(card, r["model"]["variant"], tab.primary)
    return {
        "rank": _cell(str(rank) if rank else "—", rank, "rank",
                      "not ranked: noisy measurement" if noisy and rank is None else ""),
        "model": _cell(label(r), label(r).lower()),
        "variant": _cell(r["model"]["variant"], r["model"]["variant"], "model"),
        "latency": _cell(fmt_sig(lat), lat, "noisy" if noisy else "", noise_title(r) if noisy else ""),
        "throughput": _cell(fmt_sig(thr), thr, "noisy" if noisy else "", noise_title(r) if noisy else ""),
        "gpu_alloc": _cell(fmt_sig(alloc), alloc),
        "cpu_rss": _cell(fmt_sig(rss), rss),
        "params": _cell(fmt_params(params), params),
        "gmacs": _cell(fmt_sig(gmacs), gmacs),
        "paper": _cell(fmt_sig(paper, 4) if paper is not None else "—", paper, "paper",
                       "paper-reported (model card), not measured here"),
    }


def quality_ranking(records: Sequence[dict], tab: Tab, card_of: Callable[[dict], dict | None],
                    label: Callable[[dict], str]) -> Ranking | None:
    """Ranking by the task's primary metric, measured here with real weights: the newest record per variant,
    weights and dataset; the paper's number beside it."""
    if not tab.primary:
        return None
    best: dict[tuple, dict] = {}
    for r in records:
        if primary_value(tab, r) is None or method_label(r):
            continue
        key = (r["model"]["family"], r["model"]["variant"], r["weights"]["id"], dataset_name(r))
        if key not in best or r["timestamp"] > best[key]["timestamp"]:
            best[key] = r
    if not best:
        return None
    columns = [
        ("rank", "Rank", f"1 = best {tab.primary_label}, measured here with real weights"),
        ("variant", "Variant", "links to the model's page"),
        ("quality", f"{tab.primary_label} (measured)", "measured here with the weights shown"),
        ("paper", f"{tab.primary_label} (paper)", "paper-reported, from the model card; not measured"),
        ("dataset", "Dataset", ""),
        ("weights", "Weights", ""),
        ("model", "Model", ""),
    ]
    rows = []
    ranked = rank_records(list(best.values()), lambda r: primary_value(tab, r), higher_is_better=tab.higher_is_better,
                          include_noisy=True)
    for rank, r in ranked:
        q = primary_value(tab, r)
        paper = paper_value(card_of(r), r["model"]["variant"], tab.primary)
        rows.append(RankRow(rank, r, {
            "rank": _cell(str(rank) if rank else "—", rank, "rank"),
            "model": _cell(label(r), label(r).lower()),
            "variant": _cell(r["model"]["variant"], r["model"]["variant"], "model"),
            "dataset": _cell(dataset_name(r) or "—", dataset_name(r) or None),
            "quality": _cell(fmt_sig(q, 4), q),
            "paper": _cell(fmt_sig(paper, 4) if paper is not None else "—", paper, "paper",
                           "paper-reported (model card), not measured here"),
            "weights": _cell(r["weights"]["id"], r["weights"]["id"]),
        }))
    return Ranking("quality", f"Best {tab.primary_label}: {tab.title}", columns, rows, [], "quality",
                   tab.higher_is_better)


# ---------------------------------------------------------------------------------------------------------
# hardware comparison


@dataclass
class HardwareMatrix:
    """Latency of each variant on each device at one (precision, batch, resolution), with speed-ups over the
    slowest device (``reference``)."""

    setting: tuple[str, int, int]
    devices: list[tuple[str, str]]  # (device name, label)
    reference: str
    rows: list[dict] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "|".join(str(x) for x in self.setting)

    @property
    def text(self) -> str:
        precision, batch, resolution = self.setting
        return f"{precision} · batch {batch} · {resolution} px"


def hardware_matrices(records: Sequence[dict], label: Callable[[dict], str]) -> list[HardwareMatrix]:
    """One matrix per (precision, batch, resolution) measured on two devices or more, the most complete first."""
    cells: dict[tuple, dict[tuple[str, str], dict]] = {}
    labels: dict[str, str] = {}
    for r in _timed(records):
        device, precision, batch, resolution = setting_of(r)
        labels[device] = hardware_label(r)
        cells.setdefault((precision, batch, resolution), {})[(label(r), r["model"]["variant"]), device] = r
    out = []
    for setting, by in cells.items():
        devices = sorted({d for _, d in by})
        if len(devices) < 2:
            continue
        variants = sorted({v for v, _ in by})
        total = {d: sum(measured(r, "latency.median") for (_, dd), r in by.items() if dd == d) for d in devices}
        reference = max(devices, key=lambda d: (total[d] / max(1, sum(dd == d for _, dd in by)), d))
        m = HardwareMatrix(setting, [(d, labels[d]) for d in devices], reference)
        for name, variant in variants:
            ref = by.get(((name, variant), reference))
            ref_lat = measured(ref, "latency.median") if ref else None
            row = {"model": name, "variant": variant, "cells": []}
            for d in devices:
                r = by.get(((name, variant), d))
                lat = measured(r, "latency.median") if r else None
                noisy = bool(r) and is_noisy(r)
                speedup = ref_lat / lat if lat and ref_lat and d != reference else None
                row["cells"].append({
                    "latency": fmt_sig(lat), "sort": lat, "noisy": noisy, "title": noise_title(r) if noisy else "",
                    "speedup": f"×{fmt_sig(speedup)}" if speedup else "", "speedup_sort": speedup,
                    "speedup_noisy": bool(speedup) and (noisy or is_noisy(ref)),
                })
            m.rows.append(row)
        out.append(m)
    out.sort(key=lambda m: (-len(m.rows), m.setting[1] != 1, m.setting[2], m.setting[0]))
    return out


# ---------------------------------------------------------------------------------------------------------
# model page summary


def model_summary(records: Sequence[dict], card: dict | None, primary: dict[str, str]) -> dict:
    """The top of a model page: per variant the card's params and paper metrics, the measured GMACs and, per
    hardware, the best latency at batch 1 and the best throughput (marked where that measurement is noisy).
    ``primary`` maps a task to its primary metric name, to pair paper and measured."""
    card = card or {}
    variants = [v.get("name") for v in card.get("variants") or [] if isinstance(v, dict)]
    variants += sorted({r["model"]["variant"] for r in records} - set(variants))
    ok = [r for r in records if is_ok(r) and measured(r, "latency.median") is not None and not method_label(r)]
    devices = sorted({device_name(r) for r in ok})
    labels = {device_name(r): hardware_label(r) for r in ok}
    rows = []
    for name in variants:
        mine = [r for r in ok if r["model"]["variant"] == name]
        vcard = next((v for v in card.get("variants") or [] if isinstance(v, dict) and v.get("name") == name), {})
        params = num(vcard.get("params")) or next((num(get(r, "compute.params")) for r in mine
                                                   if num(get(r, "compute.params"))), None)
        gm = sorted((r["settings"]["resolution"], measured(r, "compute.gmacs")) for r in mine
                     if measured(r, "compute.gmacs") is not None)
        paper = [m for m in vcard.get("paper_metrics") or [] if isinstance(m, dict)]
        measured_q = _measured_quality(mine, primary)
        per_device = []
        for d in devices:
            on = [r for r in mine if device_name(r) == d]
            per_device.append({"latency": _best(on, "latency.median", low=True, batch1=True),
                               "throughput": _best(on, "latency.throughput", low=False, batch1=False)})
        rows.append({
            "variant": name,
            "params": fmt_params(params),
            "gmacs": f"{fmt_sig(gm[0][1])} @ {gm[0][0]} px" if gm else "—",
            "paper": [f"{m.get('metric')} {m.get('value')} ({m.get('dataset')})" for m in paper],
            "measured": measured_q,
            "devices": per_device,
        })
    return {"devices": [(d, labels[d]) for d in devices], "rows": rows}


def _measured_quality(records: Sequence[dict], primary: dict[str, str]) -> list[str]:
    out = []
    for r in records:
        metric = primary.get(r["task"])
        q = num(get(r.get("metrics") or {}, metric)) if metric and r["weights"]["source"] != "random" else None
        if q is not None:
            out.append(f"{metric.split('.')[-1]} {fmt_fixed(q, 2)} ({dataset_name(r) or 'no dataset'})")
    return sorted(set(out))


def _best(records: Sequence[dict], path: str, *, low: bool, batch1: bool) -> dict | None:
    """The best value of ``path`` with its setting, marked when that measurement is noisy."""
    pool = [r for r in records if measured(r, path) is not None and (not batch1 or r["settings"]["batch_size"] == 1)]
    if not pool:
        return None
    r = (min if low else max)(pool, key=lambda r: measured(r, path))
    s = r["settings"]
    return {"text": fmt_sig(measured(r, path)), "at": f"{s['precision']} · batch {s['batch_size']} · "
            f"{s['resolution']} px", "noisy": is_noisy(r), "title": noise_title(r) if is_noisy(r) else ""}
