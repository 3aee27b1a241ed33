"""Build the static leaderboard site from result records and model-card dicts, and preview it locally.

The site is plain files: ``index.html`` (overview), ``task-<tab>.html`` (one per task tab),
``models/<model>.html`` (card, paper-reported values apart from measured ones, provenance and reproduce
command of every record), ``assets/`` (CSS, the table script, the Vega bundle) and ``data/`` (the records
and cards as downloads).
Everything is local: data and chart specs are inlined as JSON, so pages open from ``file://`` and fetch
nothing. Text from records is escaped (Jinja2 autoescape; inlined JSON escapes ``<``, ``>`` and ``&``;
the script writes data with ``textContent`` only). The build writes into a temporary folder beside the
output and renames it into place, so a failed build leaves the previous site untouched.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from glocal.leaderboard import charts as charts_mod
from glocal.leaderboard import views
from glocal.leaderboard.data import (
    RecordError,
    dataset_name,
    dedupe_records,
    device_name,
    get,
    hardware_label,
    human_date,
    is_ok,
    is_random,
    latest_per_cell,
    method_label,
    newest_key,
    num,
    record_anchors,
    slugify,
    tab_of,
    timestamp_key,
    validate_record,
)
from glocal.leaderboard.tables import (
    TABS,
    Cell,
    Column,
    Row,
    Tab,
    build_rows,
    columns_for,
    fmt_params,
    fmt_sig,
    primary_value,
    prune_columns,
    tab_for,
)

MARKER = ".glocal-leaderboard"
PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES = PACKAGE_DIR / "templates"
STATIC = PACKAGE_DIR / "static"


class SiteError(ValueError):
    """The site cannot be built or served as asked (one line)."""


# ---------------------------------------------------------------------------------------------------------
# escaping helpers


def script_json(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>``, ``&`` and the JS line
    separators become ``\\u`` escapes, so no value can close the script element."""
    text = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    for ch, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(ch, esc)
    return text


def safe_url(url: Any) -> str | None:
    """An http(s) URL for an ``href``, or None (no ``javascript:`` or other schemes from data)."""
    if isinstance(url, str) and url.lower().startswith(("https://", "http://")) and not any(c.isspace() for c in url):
        return url
    return None


def arxiv_url(arxiv_id: Any) -> str | None:
    return (
        f"https://arxiv.org/abs/{quote(arxiv_id.strip(), safe='.')}"
        if isinstance(arxiv_id, str) and arxiv_id.strip()
        else None
    )


# ---------------------------------------------------------------------------------------------------------
# the model index: one page per family, from cards and from records


@dataclass
class ModelEntry:
    family: str
    slug: str
    display_name: str
    task: str
    card: dict | None
    records: list[dict] = field(default_factory=list)  # every record, newest first
    latest: list[dict] = field(default_factory=list)  # the newest per cell

    @property
    def page(self) -> str:
        return f"models/{self.slug}.html"


@dataclass
class SiteIndex:
    """Names, pages and anchors shared by every page, and the set of records on a Pareto frontier."""

    models: dict[str, ModelEntry]
    anchors: dict[str, str]
    frontier: set[str] = field(default_factory=set)
    colors: dict[str, str] = field(default_factory=dict)  # one colour per variant in every chart

    def at(self, root: str) -> PageContext:
        return PageContext(self, root)


@dataclass
class PageContext:
    """Links relative to one page (``root`` is ``""`` for top-level pages and ``"../"`` under models/)."""

    index: SiteIndex
    root: str

    def entry(self, record: dict) -> ModelEntry:
        return self.index.models[record["model"]["family"]]

    def display_name(self, record: dict) -> str:
        return self.entry(record).display_name

    def model_href(self, record: dict) -> str:
        return self.root + self.entry(record).page

    def record_href(self, record: dict) -> str:
        return f"{self.model_href(record)}#{self.index.anchors[record['id']]}"

    def on_frontier(self, record: dict) -> bool:
        return record["id"] in self.index.frontier


def _card_dict(card: Any, where: str) -> dict:
    if not isinstance(card, dict) or not isinstance(card.get("family"), str) or not card["family"]:
        raise SiteError(f"{where}: a model card must be a dict with a 'family' string")
    return card


def index_models(records: Sequence[dict], cards: Sequence[dict]) -> dict[str, ModelEntry]:
    """Model entries in display order (task, then name): every card, plus families known only from records."""
    by_family: dict[str, dict] = {}
    for i, c in enumerate(cards):
        c = _card_dict(c, f"card {i}")
        by_family.setdefault(c["family"], c)
    families = list(by_family)
    for r in records:
        if r["model"]["family"] not in by_family and r["model"]["family"] not in families:
            families.append(r["model"]["family"])
    entries: list[ModelEntry] = []
    for fam in families:
        card = by_family.get(fam)
        recs = [r for r in records if r["model"]["family"] == fam]
        if card is not None:
            name, task = str(card.get("display_name") or fam), str(card.get("task") or "")
        else:
            name = next((r["model"]["display_name"] for r in recs if r["model"].get("display_name")), fam)
            task = recs[0]["model"]["task"]
        recs.sort(key=newest_key, reverse=True)
        entries.append(ModelEntry(fam, "", name, task, card, recs, latest_per_cell(recs)))
    entries.sort(key=lambda e: (e.task, e.display_name.lower(), e.family))
    taken: set[str] = set()
    for e in entries:
        e.slug = slugify(e.family, taken)
    return {e.family: e for e in entries}


# ---------------------------------------------------------------------------------------------------------
# page data


@dataclass
class TabData:
    tab: Tab
    records: list[dict]  # newest per cell, in a stable order
    columns: list[Column]
    quality_groups: list[charts_mod.ChartGroup]
    scaling_groups: list[charts_mod.ChartGroup]
    overlay_groups: list[charts_mod.ChartGroup] = field(default_factory=list)
    paper_rows: list[dict] = field(default_factory=list)  # paper-reported runtime figures, shown apart

    @property
    def devices(self) -> list[str]:
        return sorted({device_name(r) for r in self.records})

    @property
    def device_options(self) -> list[tuple[str, str]]:
        """(value, label) of the hardware filter: the device name, shown with CPU threads."""
        labels = {device_name(r): hardware_label(r) for r in self.records}
        return [(d, labels[d]) for d in sorted(labels)]

    @property
    def precisions(self) -> list[str]:
        return sorted({r["settings"]["precision"] for r in self.records})

    @property
    def models(self) -> int:
        return len({r["model"]["family"] for r in self.records})


def _row_order(records: Iterable[dict], tab: Tab) -> list[dict]:
    """Default table order: best primary metric first (if the tab has one), then model, variant, settings."""

    def key(r: dict) -> tuple:
        q = primary_value(tab, r)
        s = r["settings"]
        return (
            q is None,
            -(q or 0.0),
            r["model"]["family"].lower(),
            r["model"]["variant"],
            device_name(r),
            s["precision"],
            s["batch_size"],
            s["resolution"],
            method_label(r),  # a method's rows right after its base model's
            r["id"],
        )

    return sorted(records, key=key)


def tab_data(records: Sequence[dict], index: SiteIndex) -> list[TabData]:
    """Every tab to show: the core tabs always, other tasks only when they have records."""
    latest = latest_per_cell(records)
    by_tab: dict[str, list[dict]] = {}
    for r in latest:
        by_tab.setdefault(tab_of(r), []).append(r)
    slugs = [s for s, t in TABS.items() if t.core or s in by_tab] + sorted(s for s in by_tab if s not in TABS)
    out = []
    for slug in slugs:
        tab = tab_for(slug)
        recs = _row_order(by_tab.get(slug, []), tab)
        label = functools.partial(_label, index)
        qgroups = charts_mod.quality_groups(recs, tab, label)
        choice = charts_mod.chart_choice(slug)
        opts = charts_mod.distinguishing_options(recs, choice)
        kw = {"choice": choice, "key": functools.partial(_series_key, opts)}
        series = functools.partial(_series, index, opts=opts)
        sgroups = charts_mod.scaling_groups(recs, "latency", series, tab.resolution_label, **kw) + \
            charts_mod.scaling_groups(recs, "memory", series, tab.resolution_label, **kw)
        ogroups = charts_mod.scaling_groups(recs, "latency", series, tab.resolution_label, overlay=True, **kw)
        families = sorted({r["model"]["family"] for r in recs})
        cards = [index.models[f].card for f in families if f in index.models and index.models[f].card]
        paper = charts_mod.paper_rows(cards, choice)
        for g in qgroups:
            index.frontier.update(p["record"] for p in g.points if p["pareto"])
        out.append(TabData(tab, recs, columns_for(tab, recs), qgroups, sgroups, ogroups, paper))
    return out


def _label(index: SiteIndex, record: dict) -> str:
    return index.models[record["model"]["family"]].display_name


def _option_suffix(opts: Sequence[str], record: dict) -> str:
    """`` · attention=dense-sdpa`` for the task options ``opts`` that tell a tab's series apart."""
    values = charts_mod.cell_options(record)
    return "".join(f" · {k}={values[k]}" for k in opts if k in values)


def _series(index: SiteIndex, record: dict, opts: Sequence[str] = ()) -> str:
    method = method_label(record)
    return (f"{_label(index, record)} · {record['model']['variant']}" + (f" · {method}" if method else "")
            + _option_suffix(opts, record))


def _series_key(opts: Sequence[str], record: dict) -> str:
    """The colour key of a series: the variant, plus its method and distinguishing task options if any."""
    method = method_label(record)
    return record["model"]["variant"] + (f" · {method}" if method else "") + _option_suffix(opts, record)


# ---------------------------------------------------------------------------------------------------------
# provenance


PROVENANCE_SECTIONS = (
    ("Record", ("id", "run_id", "timestamp", "status", "error", "schema_version")),
    ("Model", ("model",)),
    ("Weights", ("weights",)),
    ("Task and dataset", ("task", "dataset")),
    ("Settings", ("settings",)),
    ("Quality metrics (measured)", ("metrics",)),
    ("Latency", ("latency",)),
    ("Memory", ("memory",)),
    ("Compute", ("compute",)),
    ("Reduced-precision check", ("precision_check", "compile_time_s")),
    ("Environment", ("environment",)),
)


def _value_text(value: Any) -> str:
    if value is None:
        return "— (not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        if len(value) > 12 and all(num(v) is not None for v in value):
            vals = [float(v) for v in value]
            return f"{len(vals)} values, min {fmt_sig(min(vals), 4)}, max {fmt_sig(max(vals), 4)}"
        return (
            ", ".join(_value_text(v) for v in value)
            if all(not isinstance(v, (dict, list)) for v in value)
            else json.dumps(value, sort_keys=True, default=str)
        )
    return str(value)


def _flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        if not value:
            return [(prefix, "{}")]
        out: list[tuple[str, str]] = []
        for k in value:
            out += _flatten(f"{prefix}.{k}" if prefix else str(k), value[k])
        return out
    return [(prefix, _value_text(value))]


def provenance(record: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    """The record as labelled sections of (field, value) rows; quality metrics of random weights are
    replaced by a note, and fields the schema does not name go under "Other"."""
    used: set[str] = {"notes", "command"}
    out = []
    for title, keys in PROVENANCE_SECTIONS:
        rows: list[tuple[str, str]] = []
        for k in keys:
            used.add(k)
            if k not in record:
                continue
            if k == "metrics" and is_random(record):
                rows.append(("metrics", "not shown: random weights"))
                continue
            if k == "timestamp":
                rows.append(("timestamp", f"{human_date(record[k])} ({record[k]})"))
                continue
            rows += _flatten(k, record[k])
        if rows:
            out.append((title, rows))
    other = [row for k in record if k not in used for row in _flatten(k, record[k])]
    if other:
        out.append(("Other", other))
    return out


# ---------------------------------------------------------------------------------------------------------
# model pages


def _variant_rows(entry: ModelEntry) -> list[dict]:
    """Card variants with their measured GMACs (newest ok record at the default resolution, else any)."""
    out = []
    variants = (entry.card or {}).get("variants") or []
    for v in variants:
        if not isinstance(v, dict):
            continue
        pre = v.get("preprocessing") or {}
        size = pre.get("input_size") or []
        res = (v.get("resolutions") or [None])[0] or (size[-1] if size else None)
        ok = [
            r
            for r in entry.records
            if r["model"]["variant"] == v.get("name") and is_ok(r) and num(get(r, "compute.gmacs")) is not None
        ]
        at_res = [r for r in ok if r["settings"]["resolution"] == res] or ok
        gmacs = None
        if at_res:
            r = at_res[0]
            gmacs = f"{fmt_sig(num(get(r, 'compute.gmacs')))} @ {r['settings']['resolution']} px"
        weights = [
            {
                "text": str(w.get("description") or w.get("filename") or "weights"),
                "href": safe_url(w.get("url")),
            }
            for w in (v.get("weights") or [])
            if isinstance(w, dict)
        ]
        out.append(
            {
                "name": str(v.get("name", "")),
                "params": fmt_params(num(v.get("params"))) if num(v.get("params")) is not None else "—",
                "params_sort": num(v.get("params")),
                "gmacs": gmacs or "—",
                "input": "×".join(str(s) for s in size) if size else "—",
                "interpolation": str(pre.get("interpolation") or "—"),
                "crop": f"{pre['crop_pct']:g} {pre.get('crop_mode', '')}".strip() if num(pre.get("crop_pct")) else "—",
                "scale": f"×{v['scale']}" if v.get("scale") else "—",
                "resolutions": ", ".join(str(x) for x in v.get("resolutions") or []) or "—",
                "weights": weights,
                "notes": str(v.get("notes") or ""),
                "paper": [
                    {
                        "dataset": str(m.get("dataset", "")),
                        "metric": str(m.get("metric", "")),
                        "value": m.get("value"),
                        "note": str(m.get("note") or ""),
                    }
                    for m in (v.get("paper_metrics") or [])
                    if isinstance(m, dict)
                ],
            }
        )
    return out


def _paper_text(value: Any) -> str:
    """A paper-reported value as written in the card (``82.0`` stays ``82.0``)."""
    return str(value)


# ---------------------------------------------------------------------------------------------------------
# rendering


def _environment() -> Any:
    try:
        import jinja2
        import markupsafe
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise SiteError("building the leaderboard needs jinja2 (pip install 'glocal[leaderboard]')") from e
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["script_json"] = lambda obj: markupsafe.Markup(script_json(obj))
    env.filters["paper_text"] = _paper_text
    env.filters["human_date"] = human_date
    return env


@dataclass
class BuildSummary:
    """What a build wrote."""

    out: Path
    records: int
    cells: int
    models: int
    tabs: list[str]
    charts: int
    pages: int


def _chart_figures(groups: Sequence[charts_mod.ChartGroup], prefix: str, draw: bool,
                   colors: dict[str, str] | None = None) -> list[dict]:
    """Figure data for the templates, with each group's Vega-Lite spec (none when charts are off)."""
    if not draw:
        return []
    figs = []
    for i, g in enumerate(groups, 1):
        g.chart_id = f"{prefix}-{i}"
        kind = {
            "quality": "Quality against latency",
            "paper": "Paper-reported quality against latency measured here",
            "latency": "Latency against resolution, hardware overlaid" if g.overlay else "Latency against resolution",
            "memory": "Peak memory against resolution",
        }[g.kind]
        if g.kind in ("latency", "memory"):
            kind = kind.replace("resolution", g.x_name)
        figs.append(
            {
                "id": g.chart_id,
                "kind": g.kind,
                "device": g.device,
                "precision": g.precision,
                "caption": f"{kind} — {g.title}",
                "points": len(g.points),
                "frontier": len(g.frontier),
                "spec": charts_mod.spec_for(g, colors),
            }
        )
    return figs


def _overview_rows(index: SiteIndex, tabs: Sequence[TabData]) -> list[Row]:
    """One row per model family: card facts, the paper's headline number, how much was measured."""
    ctx = index.at("")
    tab_titles = {t.tab.slug: t.tab.title for t in tabs}
    rows = []
    for e in index.models.values():
        card = e.card or {}
        default = card.get("default_variant")
        variants = [v for v in card.get("variants") or [] if isinstance(v, dict)]
        dv = next((v for v in variants if v.get("name") == default), variants[0] if variants else {})
        params = num(dv.get("params")) if dv else None
        paper = next(iter(dv.get("paper_metrics") or []), None) if dv else None
        paper_text = (
            f"{paper.get('metric')} {_paper_text(paper.get('value'))} ({paper.get('dataset')})"
            if isinstance(paper, dict)
            else "—"
        )
        devices = sorted({hardware_label(r) for r in e.records})
        title = str(card.get("paper_title") or "")
        task_title = tab_titles.get(e.task, e.task.replace("_", "-"))
        cells = [
            Cell(e.display_name, e.display_name.lower(), href=ctx.root + e.page, cls="model"),
            Cell(task_title, task_title.lower()),
            Cell(
                title or "—",
                title.lower() or None,
                href=arxiv_url(card.get("arxiv_id")),
                title=f"arXiv {card.get('arxiv_id')}" if card.get("arxiv_id") else "",
            ),
            Cell(str(card.get("license") or "—"), str(card.get("license") or "").lower() or None),
            Cell(str(len(variants)) if variants else "—", float(len(variants)) if variants else None),
            Cell(fmt_params(params), params, title=f"params of {default}" if default else ""),
            Cell(paper_text, None, cls="paper", title="paper-reported, not measured by glocal"),
            Cell(str(len(e.latest)), float(len(e.latest)), title=f"{len(e.records)} records in all"),
            Cell(", ".join(devices) or "—", ", ".join(devices).lower() or None),
        ]
        rows.append(Row({"id": e.family}, cells, "", "", []))
    return rows


OVERVIEW_COLUMNS = [
    Column("model", "Model", lambda r, c: Cell(""), "text"),
    Column("task", "Task", lambda r, c: Cell(""), "text"),
    Column("paper", "Paper", lambda r, c: Cell(""), "text", "paper title, linked to arXiv"),
    Column("license", "License", lambda r, c: Cell(""), "text"),
    Column("variants", "Variants", lambda r, c: Cell("")),
    Column("params", "Params (M)", lambda r, c: Cell(""), help="default variant, from the model card"),
    Column(
        "paper_metric",
        "Paper-reported",
        lambda r, c: Cell(""),
        "text",
        "headline number from the paper (default variant); not measured here",
    ),
    Column(
        "cells",
        "Measured cells",
        lambda r, c: Cell(""),
        help="newest record per measurement cell",
        first="desc",
    ),
    Column("hardware", "Hardware", lambda r, c: Cell(""), "text"),
]


def _model_table(tab: Tab, recs: list[dict], ctx: PageContext) -> tuple[list[Column], list[Row]]:
    cols = [c for c in columns_for(tab, recs) if c.key != "model"]
    return cols, build_rows(_row_order(recs, tab), cols, ctx)


def _weights_packages(variants: Sequence[dict]) -> list[dict]:
    """Distinct weight sources over the card's variants (by description), each with its variants and their
    download links."""
    seen: dict[str, list[dict]] = {}
    for v in variants:
        for w in v["weights"]:
            seen.setdefault(w["text"], []).append({"name": v["name"], "href": w["href"]})
    return [{"text": t, "variants": names} for t, names in seen.items()]


def _paper_of(card_of: Any, metric: str | None, record: dict) -> float | None:
    return views.paper_value(card_of(record), record["model"]["variant"], metric)


def _overview_rankings(index: SiteIndex, tabs: Sequence[TabData], draw: bool) -> tuple[dict, dict]:
    """Per tab with records: its rankings (quality where measured with real weights, then efficiency at a
    stated setting) and the paper-reported-quality-against-measured-latency charts."""
    label = functools.partial(_label, index)

    def card_of(r: dict) -> dict | None:
        return index.models[r["model"]["family"]].card

    rankings: dict[str, list[views.Ranking]] = {}
    figs: dict[str, list[dict]] = {}
    for t in tabs:
        if not t.records:
            continue
        found = [views.quality_ranking(t.records, t.tab, card_of, label),
                 views.efficiency_ranking(t.records, t.tab, card_of, label)]
        rankings[t.tab.slug] = [r for r in found if r is not None]
        for ranking in rankings[t.tab.slug]:
            for row in ranking.rows:
                row.href = index.at("").model_href(row.record)
        defaults = views.device_defaults(views.ranking_settings(t.records))
        paper = functools.partial(_paper_of, card_of, t.tab.primary)
        groups = charts_mod.paper_groups(t.records, t.tab, defaults, paper, label) if t.tab.primary else []
        figs[t.tab.slug] = _chart_figures(groups, f"overview-{t.tab.slug}", draw, index.colors)
    return rankings, figs


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@dataclass
class _Writer:
    """Renders templates into the output folder and counts pages and charts as they are written."""

    env: Any
    common: dict[str, Any]
    out: Path
    charts: bool
    colors: dict[str, str]
    pages: int = 0
    n_charts: int = 0

    def page(self, template: str, path: str, root: str, **kw: Any) -> None:
        html = self.env.get_template(template).render(**self.common, root=root, page_path=path, **kw)
        _write(self.out / path, html)
        self.pages += 1

    def figures(self, groups: Any, prefix: str) -> list:
        figs = _chart_figures(groups, prefix, self.charts, self.colors)
        self.n_charts += len(figs)
        return figs


def render_site(
    records: Sequence[dict], cards: Sequence[dict], out: Path, *, title: str, charts: bool = True
) -> BuildSummary:
    """Write every page of the site into the (new, empty) folder ``out``: task tabs, model pages, the overview,
    assets and the data files."""
    index = SiteIndex(index_models(records, cards), record_anchors(records))
    index.colors = charts_mod.variant_colors(
        [r["model"]["variant"] for r in records]
        + [v.get("name") for c in cards for v in (c.get("variants") or []) if isinstance(v, dict) and v.get("name")]
    )
    tabs = tab_data(records, index)
    index.colors = charts_mod.extend_colors(  # series that are a variant plus options: one colour site-wide
        index.colors, [p["key"] for t in tabs for g in t.scaling_groups + t.overlay_groups for p in g.points])
    nav = [{"title": t.tab.title, "href": t.tab.page, "slug": t.tab.slug, "cells": len(t.records)} for t in tabs]
    updated = max((r["timestamp"] for r in records), key=lambda t: timestamp_key({"timestamp": t}), default="")
    common = {"site_title": title, "nav": nav, "updated": human_date(updated) if updated else ""}
    w = _Writer(_environment(), common, out, charts, index.colors)
    latest = latest_per_cell(records)
    _render_tabs(w, index, tabs)
    for e in index.models.values():
        _render_model(w, index, e)
    _render_overview(w, index, tabs, records, latest)
    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    for name in ("site.css", "site.js"):
        shutil.copyfile(STATIC / name, assets / name)
    if charts and w.n_charts:
        _write(assets / "vega.js", charts_mod.vega_bundle())
    _write(out / "data" / "records.json", json.dumps(list(records), indent=1, sort_keys=True, default=str))
    _write(out / "data" / "cards.json", json.dumps(list(cards), indent=1, sort_keys=True, default=str))
    return BuildSummary(out, len(records), len(latest), len(index.models), [t.tab.slug for t in tabs], w.n_charts,
                        w.pages)


def _render_tabs(w: _Writer, index: SiteIndex, tabs: Sequence[Any]) -> None:
    """One page per task tab: its table, hardware matrices and charts."""
    label = functools.partial(_label, index)
    for t in tabs:
        ctx = index.at("")
        qfigs = w.figures(t.quality_groups, f"{t.tab.slug}-q")
        sfigs = w.figures(t.scaling_groups, f"{t.tab.slug}-s")
        ofigs = w.figures(t.overlay_groups, f"{t.tab.slug}-o")
        columns, rows = prune_columns(t.columns, build_rows(t.records, t.columns, ctx))
        w.page("task.html", t.tab.page, "", tab=t, active=t.tab.slug, columns=columns, rows=rows,
               matrices=views.hardware_matrices(t.records, label), quality_figs=qfigs, scaling_figs=sfigs,
               overlay_figs=ofigs, choice=charts_mod.chart_choice(t.tab.slug),
               x_name=charts_mod.chart_choice(t.tab.slug).x_option,
               has_charts=w.charts and bool(qfigs or sfigs or ofigs), charts_enabled=w.charts)


def _render_model(w: _Writer, index: SiteIndex, e: Any) -> None:
    """A model's page: summary first, its measured tables and charts, then every record's provenance."""
    ctx = index.at("../")
    by_tab: dict[str, list[dict]] = {}
    for r in e.latest:
        by_tab.setdefault(tab_of(r), []).append(r)
    sections = []
    for slug, recs in by_tab.items():
        tab = tab_for(slug)
        cols, rows = prune_columns(*_model_table(tab, recs, ctx))
        sections.append({"tab": tab, "columns": cols, "rows": rows, "id": f"measured-{tab.slug}"})
    groups = charts_mod.scaling_groups(
        e.records, "latency", lambda r: r["model"]["variant"]
    ) + charts_mod.scaling_groups(e.records, "memory", lambda r: r["model"]["variant"])
    figs = w.figures(groups, "model-s")
    latest_ids = {r["id"] for r in e.latest}
    prov = [
        {
            "record": r,
            "anchor": index.anchors[r["id"]],
            "sections": provenance(r),
            "dataset": dataset_name(r),
            "superseded": r["id"] not in latest_ids,
            "tab": tab_for(tab_of(r)).title,
            "hardware": hardware_label(r),
        }
        for r in e.records
    ]
    variants = _variant_rows(e)
    card = e.card or {}
    w.page(
        "model.html", e.page, "../", entry=e, active="", card=card, variants=variants,
        paper_rows=[(v["name"], m) for v in variants for m in v["paper"]],
        arxiv=arxiv_url(card.get("arxiv_id")), repo=safe_url(card.get("official_repo")), sections=sections,
        figs=figs, has_charts=w.charts and bool(figs), charts_enabled=w.charts, provenance=prov,
        summary=views.model_summary(e.latest, e.card, {n: t.primary for n, t in TABS.items() if t.primary}),
        weights_packages=_weights_packages(variants),
        device_options=sorted({(device_name(r), hardware_label(r)) for r in e.latest}),
        precisions=sorted({r["settings"]["precision"] for r in e.latest}),
    )


def _render_overview(w: _Writer, index: SiteIndex, tabs: Sequence[Any], records: Sequence[dict],
                     latest: Sequence[dict]) -> None:
    """The overview: per task a ranking and the paper-vs-measured charts, then the model list."""
    rankings, paper_figs = _overview_rankings(index, tabs, w.charts)
    w.n_charts += sum(len(f) for f in paper_figs.values())
    w.page(
        "index.html", "index.html", "", active="overview", tabs=tabs, rankings=rankings, paper_figs=paper_figs,
        has_charts=w.charts and any(paper_figs.values()), columns=OVERVIEW_COLUMNS,
        rows=_overview_rows(index, tabs), n_records=len(records), n_cells=len(latest), n_models=len(index.models),
        devices=sorted({device_name(r) for r in records}),
    )


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SiteError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SiteError(
            f"refusing to replace {out}: it is not empty and holds no {MARKER} marker (not a site this tool built)"
        )


def build_site(
    records: Iterable[dict],
    cards: Iterable[dict],
    out: str | Path,
    *,
    title: str = "glocal leaderboard",
    charts: bool = True,
) -> BuildSummary:
    """Build the site into ``out`` atomically: write a temporary folder next to it, then swap it in.

    ``records`` are v1 result records (validated here; repeated ids keep the first), ``cards`` are
    ``ModelCard.to_dict()`` dicts. An existing ``out`` is replaced only if it is empty or a site built
    by this function; on any error nothing at ``out`` changes. ``charts=False`` skips the Vega charts
    (then Altair and vl-convert are not needed).
    """
    records = [
        validate_record(r, f"record {i} ({r.get('id', '?') if isinstance(r, dict) else '?'})")
        for i, r in enumerate(records)
    ]
    records = dedupe_records(records)
    cards = list(cards)
    out = Path(out).expanduser().resolve()
    _check_out(out)
    if charts:
        try:
            import altair  # noqa: F401
            import vl_convert  # noqa: F401
        except ImportError as e:
            raise SiteError(
                f"charts need altair and vl-convert-python ({e.name} is missing): "
                "pip install 'glocal[leaderboard]', or build with charts=False"
            ) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        summary = render_site(records, cards, tmp, title=title, charts=charts)
        (tmp / MARKER).write_text(json.dumps({"records": summary.records, "pages": summary.pages}) + "\n")
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.out = out
    return summary


# ---------------------------------------------------------------------------------------------------------
# local preview


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def make_server(
    directory: str | Path, port: int = 0, *, host: str = "127.0.0.1", quiet: bool = False
) -> http.server.ThreadingHTTPServer:
    """An HTTP server for a built site on ``host:port`` (port 0 picks a free one); call
    ``serve_forever()`` on it (in a thread for tests) and ``shutdown()`` to stop."""
    directory = Path(directory)
    if not (directory / "index.html").is_file():
        raise SiteError(f"no site in {directory} (no index.html): run `bench leaderboard build --out {directory}`")
    handler = _QuietHandler if quiet else http.server.SimpleHTTPRequestHandler
    return http.server.ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(directory)))


__all__ = [
    "BuildSummary",
    "RecordError",
    "SiteError",
    "build_site",
    "make_server",
    "provenance",
    "render_site",
    "safe_url",
    "script_json",
]
