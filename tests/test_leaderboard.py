"""The leaderboard without a browser: Pareto frontier, formatting, record reading and validation, which
numbers may be shown, chart data, the built pages (escaping, links, provenance), atomic builds, the CLI."""

from __future__ import annotations

import html.parser
import itertools
import json
import random
import re
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from leaderboard_samples import (
    A100,
    H100,
    XSS_FAMILY,
    XSS_NAME,
    XSS_NOTE,
    cards_as_json,
    make_record,
    sample_card_dicts,
    sample_cards,
    sample_records,
    scaling_cards,
    scaling_records,
)

from glocal.leaderboard import charts, data, site, tables, views
from glocal.leaderboard.charts import pareto_front
from glocal.leaderboard.data import RecordError
from glocal.leaderboard.site import SiteError, build_site, make_server, safe_url, script_json
from glocal.leaderboard.tables import fmt_fixed, fmt_interval, fmt_params, fmt_sig

# ---------------------------------------------------------------------------------------------------------
# Pareto frontier


def _brute_front(xs, ys):
    """The definition: valid and dominated by no other point (<= cost and >= quality, one strict)."""
    valid = [x is not None and y is not None and x == x and y == y for x, y in zip(xs, ys, strict=False)]
    out = []
    for i in range(len(xs)):
        if not valid[i]:
            out.append(False)
            continue
        dominated = any(
            valid[j] and xs[j] <= xs[i] and ys[j] >= ys[i] and (xs[j] < xs[i] or ys[j] > ys[i])
            for j in range(len(xs))
            if j != i
        )
        out.append(not dominated)
    return out


def test_pareto_front_example():
    xs = [3.1, 4.0, 5.2, 6.5, 50.0]
    ys = [79.9, 81.8, 83.4, 82.7, 50.0]
    assert pareto_front(xs, ys) == [True, True, True, False, False]


def test_pareto_front_ties_and_invalid_values():
    # duplicates both stay; same quality at a higher cost is dominated; same cost lower quality too
    assert pareto_front([1, 1, 2, 1], [5, 5, 5, 4]) == [True, True, False, False]
    assert pareto_front([1, None, float("nan"), 2], [1, 9, 9, float("inf")]) == [True, False, False, False]
    assert pareto_front([], []) == []
    with pytest.raises(ValueError, match="as many x as y"):
        pareto_front([1, 2], [1])


def test_pareto_front_matches_definition_on_random_points():
    rng = random.Random(0)
    for n in (1, 2, 5, 30, 80):
        xs = [rng.randint(1, 12) for _ in range(n)]
        ys = [rng.randint(1, 12) for _ in range(n)]
        if n > 3:
            xs[1], ys[1] = None, 5
        assert pareto_front(xs, ys) == _brute_front(xs, ys), (xs, ys)


# ---------------------------------------------------------------------------------------------------------
# formatting and escaping


def test_number_formatting():
    assert fmt_sig(12.345) == "12.3"
    assert fmt_sig(0.012345) == "0.0123"
    assert fmt_sig(1234.5678) == "1,235"
    assert fmt_sig(-3.14159) == "-3.14"
    assert fmt_sig(0) == "0"
    assert fmt_sig(None) == "—"
    assert fmt_sig(5.2) == "5.20"
    assert fmt_fixed(83.456, 2) == "83.46"
    assert fmt_params(28_224_160) == "28.22"
    assert fmt_interval([0.58, 0.66]) == "0.580–0.660"
    assert fmt_interval({"low": 1, "high": 2}) == "1.00–2.00"
    assert fmt_interval(0.04) == "±0.0400"
    assert fmt_interval("wide") == "—"


def test_script_json_cannot_close_the_script_element():
    obj = {"name": XSS_NAME, "note": "a & b <!-- c -->", "sep": "x\u2028y", "n": 1.5}
    text = script_json(obj)
    assert not any(c in text for c in "<>&\u2028")
    assert json.loads(text) == obj


def test_safe_url_allows_only_http():
    assert safe_url("https://github.com/NVlabs/GCVit") == "https://github.com/NVlabs/GCVit"
    assert safe_url("javascript:alert(1)") is None
    assert safe_url("JaVaScRiPt:alert(1)") is None
    assert safe_url("https://x.org/a b") is None
    assert safe_url(None) is None


# ---------------------------------------------------------------------------------------------------------
# reading and validating records


def test_validate_record_accepts_the_samples_and_names_bad_fields():
    for r in sample_records():
        assert data.validate_record(r) is r
    good = make_record("gcvit", "gcvit_tiny", metrics={"top1": 80.0}, latency=5.0)

    def bad(mutate, message):
        rec = json.loads(json.dumps(good))
        mutate(rec)
        with pytest.raises(RecordError, match=message):
            data.validate_record(rec, "x.json")

    bad(lambda r: r["settings"].pop("device"), r"^x\.json: missing field 'settings\.device'$")
    bad(lambda r: r.update(status="fine"), "x.json: field 'status' is 'fine'; expected one of ok, oom")
    bad(lambda r: r.update(schema_version=2), r"unsupported schema_version 2 \(this site reads 1\)")
    bad(lambda r: r["latency"].update(median="fast"), "field 'latency.median' should be number or null")
    bad(lambda r: r["settings"].update(batch_size=True), "field 'settings.batch_size' should be integer")
    bad(
        lambda r: r["metrics"].update(top1=float("nan")),
        "field 'metrics.top1' is nan; numbers must be finite",
    )
    bad(lambda r: r.pop("environment"), "missing field 'environment'")
    with pytest.raises(RecordError, match="expected a JSON object, got list"):
        data.validate_record([], "y")


def test_read_record_files_json_list_jsonl_and_folders(tmp_path):
    recs = sample_records()[:4]
    (tmp_path / "one.json").write_text(json.dumps(recs[0]))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "list.json").write_text(json.dumps(recs[1:3]))
    (tmp_path / "sub" / "more.jsonl").write_text(json.dumps(recs[3]) + "\n\n")
    (tmp_path / "readme.txt").write_text("not a record")
    got = data.read_results_dir(tmp_path)
    assert [r["id"] for r in got] == [recs[0]["id"], recs[1]["id"], recs[2]["id"], recs[3]["id"]]
    assert data.read_results_dir(tmp_path / "absent") == []

    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(recs[0]) + "\n\n{not json}\n")
    with pytest.raises(RecordError, match=r"broken\.jsonl:3: not valid JSON"):
        data.read_record_file(broken)
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([recs[0], {**recs[1], "status": "great"}]))
    with pytest.raises(RecordError, match=r"listed\.json: record 1: field 'status' is 'great'"):
        data.read_record_file(listed)
    nan = tmp_path / "nan.json"
    nan.write_text('{"schema_version": 1, "x": NaN}')
    with pytest.raises(RecordError, match=r"nan\.json: not valid JSON \(non-standard JSON number NaN\)"):
        data.read_record_file(nan)


def test_dedupe_keeps_the_first_record_of_an_id():
    a = make_record("gcvit", "gcvit_tiny", latency=1.0)
    b = {**a, "notes": ["a later copy"]}
    c = make_record("dinat", "dinat_mini", latency=2.0)
    assert data.dedupe_records([a, b, c]) == [a, c]


def test_latest_per_cell_prefers_the_newest_successful_run():
    old_ok = make_record("gcvit", "gcvit_tiny", latency=6.0, timestamp="2026-08-01T00:00:00Z")
    new_ok = make_record("gcvit", "gcvit_tiny", latency=5.0, timestamp="2026-08-02T00:00:00Z")
    newer_oom = make_record("gcvit", "gcvit_tiny", status="oom", error="OOM", timestamp="2026-08-03T00:00:00Z")
    other = make_record("gcvit", "gcvit_tiny", latency=7.0, precision="fp32")
    assert data.latest_per_cell([old_ok, new_ok, newer_oom, other]) == [new_ok, other]
    oom_old = make_record("gcvit", "gcvit_tiny", status="oom", timestamp="2026-08-01T00:00:00+00:00")
    err_new = make_record("gcvit", "gcvit_tiny", status="error", timestamp="2026-08-01T01:00:00+01:00")
    err_newer = make_record("gcvit", "gcvit_tiny", status="error", timestamp="2026-08-01T00:30:00+00:00")
    # 01:00+01:00 is 00:00 UTC: the same instant as oom_old, older than err_newer
    assert data.latest_per_cell([oom_old, err_new, err_newer]) == [err_newer]


def test_quality_never_shown_for_random_weights_or_failed_runs():
    ok = make_record("gcvit", "gcvit_tiny", metrics={"top1": 80.0}, latency=5.0)
    rnd = make_record("gcvit", "gcvit_tiny", metrics={"top1": 0.1}, latency=5.0, weights="random")
    oom = make_record("gcvit", "gcvit_tiny", metrics={"top1": 80.0}, status="oom")
    assert data.quality(ok, "top1") == 80.0
    assert data.quality(rnd, "top1") is None
    assert data.measured(rnd, "latency.median") == 5.0
    assert data.quality(oom, "top1") is None and data.measured(oom, "latency.median") is None
    s = make_record("gcvit", "gcvit_tiny", dataset="dist", metrics={"structure_sensitivity": {"accuracy": 0.6}})
    assert data.tab_of(s) == "structure" and data.tab_of(ok) == "classification"


class _Ctx:
    def display_name(self, r):
        return r["model"].get("display_name") or r["model"]["family"]

    def model_href(self, r):
        return "models/x.html"

    def record_href(self, r):
        return "models/x.html#r-" + r["id"]

    def on_frontier(self, r):
        return False


def test_table_cells_show_status_and_hide_random_quality():
    tab = tables.TABS["classification"]
    cols = tables.columns_for(tab)
    keys = [c.key for c in cols]
    ok = make_record(
        "gcvit",
        "gcvit_tiny",
        metrics={"top1": 83.456},
        latency=5.2,
        memory=800.0,
        gmacs=4.7,
        params=28_224_160,
    )
    rnd = make_record("dinat", "dinat_tiny", metrics={"top1": 0.137}, latency=12.5, weights="random")
    oom = make_record("gcvit", "gcvit_tiny", status="oom", error="CUDA out of memory")
    rows = tables.build_rows([ok, rnd, oom], cols, _Ctx())
    cell = {
        name: dict(zip(keys, row.cells, strict=False)) for name, row in zip(("ok", "rnd", "oom"), rows, strict=False)
    }
    assert cell["ok"]["top1"].text == "83.46" and cell["ok"]["top1"].sort == 83.456
    assert cell["ok"]["latency"].text == "5.20" and cell["ok"]["params"].text == "28.22"
    assert cell["rnd"]["top1"].text == "—" and cell["rnd"]["top1"].sort is None and "random" in cell["rnd"]["top1"].cls
    assert cell["rnd"]["latency"].text == "12.5" and cell["rnd"]["weights"].text == "random weights"
    assert cell["oom"]["latency"].text == "OOM" and cell["oom"]["top1"].text == "OOM"
    assert cell["oom"]["latency"].title == "CUDA out of memory"
    assert rows[2].classes == ["row-oom"] and rows[1].classes == ["row-ok", "row-random"]


def test_stored_sample_cards_equal_the_built_ones():
    # the browser tests read the cards from this file (no torch import); it must not drift from the dataclasses
    assert sample_card_dicts() == cards_as_json(sample_cards())


def test_noise_hardware_method_and_date_labels():
    clean = make_record("gcvit", "gcvit_tiny", latency=5.0)
    noisy = make_record("gcvit", "gcvit_tiny", latency=5.0, noise=0.59)
    edge = make_record("gcvit", "gcvit_tiny", latency=5.0, noise=0.10)
    assert data.noise(noisy) == 0.59 and data.is_noisy(noisy) and not data.is_noisy(edge) and not data.is_noisy(clean)
    del noisy["latency"]["iqr_over_median"]  # older records: from the samples (quartiles 4 and 8 around 6)
    noisy["latency"]["samples"] = [2.0, 4.0, 6.0, 8.0] * 5
    assert data.noise(noisy) == pytest.approx(4.0 / 6.0) and data.is_noisy(noisy)
    cpu = make_record("dit", "dit_s", device="CPU: AMD EPYC", threads=2, latency=900.0)
    one = make_record("dit", "dit_s", device="CPU: AMD EPYC", threads=1, latency=900.0)
    assert data.hardware_label(cpu) == "CPU: AMD EPYC · 2 threads" and data.hardware_label(one).endswith("1 thread")
    assert data.hardware_label(clean) == H100
    m = make_record("dit", "dit_s", method={"name": "dimap", "params": {"ratio": 0.35, "a": 1}},
                    task_options={"steps": 4, "attention": "dense"})
    assert data.method_label(m) == "dimap (a=1, ratio=0.35)" and data.method_label(clean) == ""
    assert data.options_label(m) == "attention=dense, steps=4" and data.options_label(clean) == ""
    assert data.human_date("2026-11-24T07:57:43+00:00") == "24 Nov 2026, 07:57 UTC"
    assert data.human_date("2026-08-01T01:00:00+01:00") == "1 Aug 2026, 00:00 UTC"
    assert data.human_date("yesterday") == "yesterday"
    cell = tables.measure_cell("latency.median", timed=True)(make_record("a", "b", latency=5.0, noise=0.59), _Ctx())
    assert cell.cls == "noisy" and "IQR is 59% of the median" in cell.title


def test_rank_records_leaves_noisy_and_missing_unranked():
    recs = [make_record("m", v, latency=lat, noise=n) for v, lat, n in
            (("a", 3.0, 0.0), ("b", 1.0, 0.5), ("c", 2.0, 0.0), ("d", 2.0, 0.0), ("e", None, 0.0))]
    lat = lambda r: data.measured(r, "latency.median")  # noqa: E731
    got = [(rank, r["model"]["variant"]) for rank, r in tables.rank_records(recs, lat, higher_is_better=False)]
    assert got == [(1, "c"), (1, "d"), (3, "a"), (None, "b"), (None, "e")]
    got = [(rank, r["model"]["variant"]) for rank, r in
           tables.rank_records(recs, lat, higher_is_better=False, include_noisy=True)]
    assert got == [(1, "b"), (2, "c"), (2, "d"), (4, "a"), (None, "e")]
    got = [r["model"]["variant"] for _, r in tables.rank_records(recs, lat, higher_is_better=True)]
    assert got[:3] == ["a", "c", "d"]


def test_overview_rankings_from_the_samples():
    latest = data.latest_per_cell(sample_records())
    cls = [r for r in latest if data.tab_of(r) == "classification"]
    cards = {c["family"]: c for c in sample_cards()}
    tab = tables.TABS["classification"]
    card_of = lambda r: cards.get(r["model"]["family"])  # noqa: E731
    eff = views.efficiency_ranking(cls, tab, card_of, _label)
    # the most widely measured setting first: H100 bf16 batch 1 at 224 px
    assert eff.settings[0] == (f"{H100}|bf16|1|224", f"{H100} · bf16 · batch 1 · 224 px")
    first = [row for row in eff.rows if row.setting == eff.settings[0][0]]
    assert [(row.rank, row.record["model"]["variant"]) for row in first] == [
        (1, "gcvit_xxtiny"), (2, "dinat_mini"), (3, "gcvit_tiny"), (4, "xss_tiny"), (None, "dinat_tiny")]
    assert first[-1].noisy and first[-1].cells["latency"][2] == "noisy"
    # paper-reported top-1 beside the measured latency, from the card, labelled as the paper's
    assert first[0].cells["paper"][:2] == ("79.90", 79.9)
    assert dict((k, label) for k, label, _ in eff.columns)["paper"] == "Top-1 (%) (paper)"
    assert first[2].cells["paper"][1] == 83.5
    q = views.quality_ranking(cls, tab, card_of, _label)
    assert [(row.rank, row.record["model"]["variant"]) for row in q.rows] == [
        (1, "gcvit_tiny"), (2, "dinat_tiny"), (3, "dinat_mini"), (4, "gcvit_xxtiny"), (5, "xss_tiny")]
    assert all(row.record["weights"]["source"] != "random" for row in q.rows)
    assert q.rows[0].cells["quality"][1] == 83.4 and q.rows[0].cells["paper"][1] == 83.5
    defaults = views.device_defaults(views.ranking_settings(cls))
    assert defaults[H100] == ("bf16", 1, 224) and defaults[A100] == ("fp32", 1, 224)
    groups = charts.paper_groups(cls, tab, defaults, lambda r: views.paper_value(card_of(r), r["model"]["variant"],
                                                                                 "top1"), _label)
    assert [g.device for g in groups] == [A100, H100]  # one chart per device, at its default setting
    g = groups[1]
    assert "paper-reported" in g.y_title and "measured here" in g.x_title
    assert sorted((p["variant"], p["quality"], p["noisy"]) for p in g.points) == [
        ("dinat_mini", 81.8, False), ("dinat_tiny", 82.7, True), ("gcvit_tiny", 83.5, False),
        ("gcvit_xxtiny", 79.9, False)]


def test_hardware_matrix_and_model_summary():
    latest = data.latest_per_cell(sample_records())
    gen = [r for r in latest if data.tab_of(r) == "generation"]
    (m,) = views.hardware_matrices(gen, _label)
    assert m.setting == ("fp32", 1, 256) and m.reference == "CPU: AMD EPYC"
    assert m.devices == [("CPU: AMD EPYC", "CPU: AMD EPYC · 2 threads"), (H100, H100)]
    rows = {r["variant"]: r["cells"] for r in m.rows}
    assert rows["dit_s"][1]["speedup"] == "×45.0" and rows["dit_s"][1]["speedup_sort"] == 45.0
    assert rows["dit_b"][0]["noisy"] and rows["dit_b"][1]["speedup"] == f"×{1600 / 35:.1f}"
    assert rows["dit_b"][1]["speedup_noisy"] and not rows["dit_s"][1]["speedup_noisy"]  # from a noisy CPU latency
    summary = views.model_summary([r for r in latest if r["model"]["family"] == "gcvit"],
                                  {c["family"]: c for c in sample_cards()}["gcvit"], {"classification": "top1"})
    assert [d for d, _ in summary["devices"]] == [A100, H100]
    tiny = next(r for r in summary["rows"] if r["variant"] == "gcvit_tiny")
    assert tiny["params"] == "28.22" and "top1 83.5 (ImageNet-1K)" in tiny["paper"]
    assert "top1 83.40 (imagenet)" in tiny["measured"]
    assert tiny["devices"][1]["latency"]["text"] == "5.00" and not tiny["devices"][1]["latency"]["noisy"]


def test_noisy_points_never_make_the_frontier():
    fast_noisy = make_record("gcvit", "gcvit_fast", metrics={"top1": 90.0}, latency=1.0, noise=0.3)
    slow = make_record("gcvit", "gcvit_slow", metrics={"top1": 80.0}, latency=5.0)
    (g,) = charts.quality_groups([fast_noisy, slow], tables.TABS["classification"], _label)
    flags = {p["variant"]: (p["pareto"], p["noisy"]) for p in g.points}
    assert flags == {"gcvit_fast": (False, True), "gcvit_slow": (True, False)}


# ---------------------------------------------------------------------------------------------------------
# chart data


def _label(r):
    return r["model"]["family"]


def test_quality_groups_and_their_frontiers():
    latest = data.latest_per_cell(sample_records())
    groups = charts.quality_groups(latest, tables.TABS["classification"], _label)
    by_title = {g.title: g for g in groups}
    assert sorted(by_title) == [f"{A100} · fp32 · batch 1 · imagenet", f"{H100} · bf16 · batch 1 · imagenet"]
    h100 = by_title[f"{H100} · bf16 · batch 1 · imagenet"]
    assert sorted(p["variant"] for p in h100.points) == [
        "dinat_mini",
        "dinat_tiny",
        "gcvit_tiny",
        "gcvit_xxtiny",
        "xss_tiny",
    ]
    assert sorted(p["variant"] for p in h100.frontier) == ["dinat_mini", "gcvit_tiny", "gcvit_xxtiny"]
    # the superseded 80.0 run is not drawn; the random-weights run is in no quality chart
    assert {p["quality"] for p in h100.points if p["variant"] == "gcvit_tiny"} == {83.4}
    a100 = by_title[f"{A100} · fp32 · batch 1 · imagenet"]
    assert sorted(p["variant"] for p in a100.points) == ["dinat_mini", "gcvit_tiny"]
    # restoration compares like output sizes
    deh = [r for r in latest if data.tab_of(r) == "dehazing"]
    groups = charts.quality_groups(deh, tables.TABS["dehazing"], _label)
    assert [g.title for g in groups] == [f"{H100} · fp16 · batch 1 · output side 512 px · sots-indoor"]
    assert [p["pareto"] for p in groups[0].points] == [True]


def test_scaling_groups_need_two_resolutions_and_skip_failures():
    latest = data.latest_per_cell(sample_records())
    cls = [r for r in latest if data.tab_of(r) == "classification"]
    lat = charts.scaling_groups(cls, "latency", lambda r: r["model"]["variant"])
    assert [g.title for g in lat] == [f"{H100} · bf16 · batch 1"]  # A100 has one resolution only
    pts = {(p["series"], p["resolution"]): p["value"] for p in lat[0].points}
    assert pts[("gcvit_tiny", 384)] == 12.0 and pts[("dinat_mini", 512)] == 18.0
    assert ("gcvit_tiny", 2048) not in pts  # the OOM cell has no latency
    # two gcvit_tiny records at 224 (the ImageNet run and the sweep) share a timestamp: the larger id wins
    both = sorted(
        (
            r
            for r in cls
            if r["model"]["variant"] == "gcvit_tiny"
            and r["settings"]["resolution"] == 224
            and r["settings"]["precision"] == "bf16"
        ),
        key=lambda r: r["id"],
    )
    assert len(both) == 2 and pts[("gcvit_tiny", 224)] == both[-1]["latency"]["median"]
    mem = charts.scaling_groups(cls, "memory", lambda r: r["model"]["variant"])
    assert mem[0].y_title.startswith("GPU peak allocated") and len(mem[0].points) == len(lat[0].points)
    with pytest.raises(ValueError, match="unknown scaling chart 'flops'"):
        charts.scaling_groups(cls, "flops", _label)


def test_chart_specs_are_valid_vega_lite():
    pytest.importorskip("altair")
    latest = data.latest_per_cell(sample_records())
    q = charts.quality_groups(latest, tables.TABS["classification"], _label)[1]
    spec = charts.quality_spec(q, validate=True)
    assert [layer["name"] for layer in spec["layer"]] == ["frontier", "points", "pareto"]
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/v")
    values = spec["data"]["values"] if "values" in spec.get("data", {}) else next(iter(spec["datasets"].values()))
    assert len(values) == 5 and sum(v["pareto"] for v in values) == 3
    s = charts.scaling_groups(latest, "latency", _label)[0]
    colors = charts.variant_colors(["a_variant_not_drawn"] + [r["model"]["variant"] for r in latest])
    sspec = charts.scaling_spec(s, colors, validate=True)
    lines, dots = sspec["layer"]
    assert lines["encoding"]["x"]["scale"]["type"] == "log" and lines["encoding"]["y"]["scale"]["type"] == "log"
    scale = lines["encoding"]["color"]["scale"]
    assert scale["range"] == [colors[v] for v in scale["domain"]] and "a_variant_not_drawn" not in scale["domain"]
    assert dots["encoding"]["color"]["scale"] == scale  # the points take the lines' colours
    assert sspec["width"] == "container" and sspec["autosize"]["type"] == "fit-x"  # fits a phone


# ---------------------------------------------------------------------------------------------------------
# the built site


class _Page(html.parser.HTMLParser):
    """Elements, attributes, text and inline JSON of one page."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.json_blocks: list[str] = []
        self._in_json = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        self._in_json = tag == "script" and a.get("type") == "application/json"

    def handle_endtag(self, tag):
        self._in_json = False

    def handle_data(self, d):
        (self.json_blocks if self._in_json else self.text).append(d)


def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("altair")
    out = tmp_path_factory.mktemp("lb") / "site"
    summary = build_site(sample_records(), sample_cards(), out)
    return out, summary


def test_build_writes_every_page(built):
    out, summary = built
    assert summary.records == 27 and summary.cells == 26 and summary.models == 7
    # generation has no per-task code in the site: its tab comes from the task specification
    assert summary.tabs == ["classification", "dehazing", "super_resolution", "structure", "generation"]
    pages = sorted(str(p.relative_to(out)) for p in out.rglob("*.html"))
    assert pages == [
        "index.html",
        "models/dea-net.html",
        "models/dinat.html",
        "models/dit.html",
        "models/gcvit.html",
        "models/rgt.html",
        "models/swin-unused.html",
        "models/xss-img-src-x-onerror-alert-1.html",
        "task-classification.html",
        "task-dehazing.html",
        "task-generation.html",
        "task-structure.html",
        "task-super_resolution.html",
    ]
    assert (out / site.MARKER).is_file() and (out / "assets" / "vega.js").stat().st_size > 100_000
    assert len(json.loads((out / "data" / "records.json").read_text())) == 27


def test_markup_in_names_and_notes_is_text(built):
    out, _ = built
    for page in out.rglob("*.html"):
        parsed = _parse(page)
        assert not [t for t, _ in parsed.tags if t in ("img", "u")], page
        assert not [k for _, a in parsed.tags for k in a if k.startswith("on")], page  # no inline handlers
        assert all(
            a.get("src", "").startswith(("../assets/", "assets/"))
            for t, a in parsed.tags
            if t == "script" and "src" in a
        ), page
        for block in parsed.json_blocks:
            assert "<" not in block and ">" not in block
            json.loads(block)
    model = out / "models" / "xss-img-src-x-onerror-alert-1.html"
    text = "".join(_parse(model).text)
    assert XSS_NAME in text and XSS_NOTE in text and XSS_FAMILY in text
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in model.read_text()


def test_every_local_link_and_anchor_resolves(built):
    out, _ = built
    ids = {p: {a["id"] for _, a in _parse(p).tags if "id" in a} for p in out.rglob("*.html")}
    checked = 0
    for page in out.rglob("*.html"):
        for _, attrs in _parse(page).tags:
            for key in ("href", "src"):
                link = attrs.get(key)
                if not link or link.startswith(("https://", "http://", "data:")):
                    continue
                assert not link.startswith(("javascript:", "//")), (page, link)
                path, _, anchor = link.partition("#")
                target = (page.parent / path).resolve() if path else page
                assert target.is_file(), (page, link)
                if anchor and target.suffix == ".html":
                    assert anchor in ids[target], (page, link)
                checked += 1
    assert checked > 100


def test_random_weights_never_show_quality(built, tmp_path):
    out, _ = built
    page = (out / "task-classification.html").read_text()
    assert "random weights" in page
    rnd = make_record("dinat", "dinat_tiny", metrics={"top1": 0.137}, latency=12.5, weights="random")
    with pytest.raises(RecordError, match=r"^record 0 \(.*\): a random-weights record cannot carry quality"):
        build_site([rnd], [], tmp_path / "site", charts=False)
    assert not (tmp_path / "site").exists()


def test_task_tables_rows_and_states(built):
    out, _ = built
    parsed = _parse(out / "task-classification.html")
    rows = [a for t, a in parsed.tags if t == "tr" and "data-row" in a]
    latest = [r for r in data.latest_per_cell(sample_records()) if data.tab_of(r) == "classification"]
    assert len(rows) == len(latest) == 15
    assert sorted(a["data-device"] for a in rows) == sorted(r["environment"]["device_name"] for r in latest)
    assert sum("row-oom" in a.get("class", "") for a in rows) == 1
    text = "".join(parsed.text)
    assert "OOM" in text and "83.40" in text and "80.00" not in text  # superseded run not in the table
    sr = "".join(_parse(out / "task-super_resolution.html").text)
    assert "error" in sr and "32.80" in sr and "+4.40" in sr  # PSNR gain over bicubic
    st = "".join(_parse(out / "task-structure.html").text)
    assert "0.620" in st and "0.580–0.660" in st and "0.350" in st


def _headers(path: Path, table: str = "results") -> list[str]:
    raw = path.read_text()
    part = raw[raw.index(f'id="{table}"') : raw.index("</thead>", raw.index(f'id="{table}"'))]
    return [h.split("<")[0] for h in part.split('<button type="button">')[1:]]


def test_columns_only_where_values_exist_memory_split_and_methods(built):
    out, _ = built
    cls = _headers(out / "task-classification.html")
    assert "Method" not in cls and "Options" not in cls and "CPU peak RSS (MiB)" not in cls
    assert {"Top-1 (%)", "GPU peak alloc. (MiB)", "GPU reserved (MiB)", "Throughput (img/s)", "Res. (px)"} <= set(cls)
    gen_page = out / "task-generation.html"
    gen = _headers(gen_page)
    assert {"Method", "Options", "GPU peak alloc. (MiB)", "CPU peak RSS (MiB)", "tokens", "attention gmacs",
            "Throughput (steps/s)"} <= set(gen)
    assert "Dataset" not in gen and "Pareto" not in gen and "CLIP score" not in gen
    text = "".join(_parse(gen_page).text)
    assert "CPU: AMD EPYC · 2 threads" in text and "dimap (ratio=0.35)" in text and "steps=4" in text
    # the method's row right after its base model's row
    raw = gen_page.read_text()
    body = raw[raw.index('id="results"'):raw.index("</table>", raw.index('id="results"'))]
    rows = body.split("<tr data-row")[1:]
    assert len(rows) == 6
    dimap = next(i for i, r in enumerate(rows) if "dimap (ratio=0.35)" in r)
    assert "base model" in rows[dimap - 1] and "steps=4" in rows[dimap - 1] and "steps=4" in rows[dimap]
    assert "Hardware comparison" in text and "×45.0" in text


def test_pages_show_no_null_and_readable_dates(built):
    out, _ = built
    for page in out.rglob("*.html"):
        text = "".join(_parse(page).text)
        assert "null" not in text.split(), page
        shown = re.sub(r"\(\d{4}-\d\d-\d\dT[^)]*\)", "", text)  # the raw time only beside the readable one
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", shown), page
    gcvit = "".join(_parse(out / "models" / "gcvit.html").text)
    assert "20 Aug 2026, 10:00 UTC" in gcvit and "— (not set)" in gcvit


def test_model_page_keeps_paper_values_apart_and_shows_provenance(built):
    out, _ = built
    page = out / "models" / "gcvit.html"
    raw = page.read_text()
    parsed = _parse(page)
    hrefs = [a.get("href") for t, a in parsed.tags if t == "a"]
    assert "https://arxiv.org/abs/2206.09959" in hrefs and "https://github.com/NVlabs/GCVit" in hrefs
    paper = raw[raw.index('id="paper-metrics"') : raw.index("</table>", raw.index('id="paper-metrics"'))]
    assert "83.5" in paper and "83.40" not in paper and "Value (paper)" in paper
    measured = raw[raw.index('id="measured-h"') : raw.index('id="prov-h"')]
    assert "83.40" in measured and "83.5<" not in measured
    text = "".join(parsed.text)
    rec = next(
        r for r in sample_records() if r["model"]["variant"] == "gcvit_tiny" and r["settings"]["resolution"] == 384
    )
    for needle in (
        rec["command"],
        rec["id"],
        rec["environment"]["git_commit"],
        "ab" * 32,
        "superseded by a newer run",
        "4.70 @ 224 px",
        "28.22",
    ):
        assert needle in text, needle
    dinat = _parse(out / "models" / "dinat.html")
    assert not [a for t, a in dinat.tags if t == "a" and "javascript" in a.get("href", "")]
    assert "javascript:alert(1)" in "".join(dinat.text)  # shown as text only


def test_empty_tabs_and_unknown_tasks(tmp_path):
    out = build_site([], sample_cards(), tmp_path / "empty", charts=False)
    assert out.tabs == ["classification", "dehazing", "super_resolution", "structure"]
    assert "No results for this task yet" in (tmp_path / "empty" / "task-dehazing.html").read_text()
    gen = make_record(
        "sd",
        "sd_small",
        task="generation",
        dataset="coco",
        metrics={"fid": 12.34, "clip": 0.3},
        latency=900.0,
    )
    summary = build_site([gen], [], tmp_path / "gen", charts=False)
    assert summary.tabs[-1] == "generation"
    text = "".join(_parse(tmp_path / "gen" / "task-generation.html").text)
    assert "fid" in text and "12.3" in text and "clip" in text


def test_build_is_deterministic(tmp_path):
    recs, cards = sample_records(), sample_cards()
    a = build_site(recs, cards, tmp_path / "a", charts=False).out
    b = build_site(list(reversed(recs)), cards, tmp_path / "b", charts=False).out
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    differing = [f for f in files_a if (a / f).read_bytes() != (b / f).read_bytes()]
    assert differing == [Path("data/records.json")]  # records.json keeps the input order
    again = build_site(recs, cards, tmp_path / "a", charts=False).out
    assert all((again / f).read_bytes() == (tmp_path / "a" / f).read_bytes() for f in files_a)


def test_failed_build_leaves_the_previous_site(tmp_path, monkeypatch):
    out = tmp_path / "site"
    build_site(sample_records()[:3], [], out, charts=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(records, cards, tmp, **kw):
        (tmp / "index.html").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(site, "render_site", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_site(sample_records(), [], out, charts=False)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temporary folder left behind
    with pytest.raises(RecordError, match=r"record 1 \(x\): missing field 'timestamp'"):
        build_site([sample_records()[0], {"schema_version": 1, "id": "x", "status": "ok"}], [], out)


def test_build_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(
        SiteError, match=r"refusing to replace .*docs: it is not empty and holds no \.glocal-leaderboard"
    ):
        build_site([], [], tmp_path / "docs", charts=False)
    assert (tmp_path / "docs" / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(SiteError, match="is a file, not a folder"):
        build_site([], [], tmp_path / "file", charts=False)


def test_make_server_serves_the_site_on_loopback(tmp_path):
    out = build_site(sample_records()[:2], [], tmp_path / "s", charts=False).out
    server = make_server(out, 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as resp:
            assert resp.status == 200 and b"glocal leaderboard" in resp.read()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/missing.html", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(SiteError, match="no site in .* run `bench leaderboard build"):
        make_server(tmp_path, 0)


# ---------------------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def cli(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from glocal.benchmarks.cli import leaderboard as cli_leaderboard

    published = tmp_path / "published"
    published.mkdir()
    monkeypatch.setattr(cli_leaderboard, "published_results_dir", lambda: published)
    monkeypatch.setattr(cli_leaderboard, "model_cards", sample_cards)
    return cli_leaderboard, CliRunner(), published


def test_cli_build_from_published_and_exports(cli, tmp_path):
    mod, runner, published = cli
    recs = sample_records()
    (published / "a.json").write_text(json.dumps(recs[:5]))
    export = tmp_path / "export.jsonl"
    export.write_text("\n".join(json.dumps(r) for r in recs[3:]))  # overlaps: ids 3 and 4 appear twice
    out = tmp_path / "out"
    res = runner.invoke(mod.leaderboard_app, ["build", "--out", str(out), "--results", str(export), "--no-charts"])
    assert res.exit_code == 0, res.output
    assert f"built {out}: 13 pages, 26 cells from 27 records, 7 models, 0 charts" in res.stdout
    assert [r["id"] for r in json.loads((out / "data" / "records.json").read_text())] == [r["id"] for r in recs]
    only = ["build", "--out", str(tmp_path / "only"), "--no-published", "--no-charts"]
    res = runner.invoke(mod.leaderboard_app, only)
    assert res.exit_code == 0 and "0 cells from 0 records" in res.stdout


def test_cli_malformed_file_is_one_error_line(cli, tmp_path):
    mod, runner, published = cli
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**sample_records()[0], "settings": {"device": "cuda"}}))
    out = tmp_path / "out"
    res = runner.invoke(mod.leaderboard_app, ["build", "--out", str(out), "--results", str(bad), "--no-charts"])
    assert res.exit_code == 2
    assert res.stderr == f"error: {bad}: missing field 'settings.precision'\n"
    assert not out.exists()
    res = runner.invoke(mod.leaderboard_app, ["build", "--out", str(out), "--results", str(tmp_path / "nope.db")])
    assert res.exit_code == 2 and res.stderr == f"error: {tmp_path / 'nope.db'}: no such file or folder\n"
    (tmp_path / "x.csv").write_text("a,b\n")
    res = runner.invoke(mod.leaderboard_app, ["build", "--out", str(out), "--results", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "expected a .json or .jsonl export" in res.stderr


def test_cli_reads_result_stores(cli, tmp_path):
    from glocal.benchmarks.results import ResultStore

    mod, runner, _ = cli
    # the harness's store refuses quality metrics with random weights, so the random run goes in without
    recs = [{**r, "metrics": {}} if r["weights"]["source"] == "random" else r for r in sample_records()]
    ResultStore(tmp_path / "results.sqlite").append(recs[:10])
    ResultStore(tmp_path / "more.store").append(recs[10:])  # found by its SQLite header
    assert [r["id"] for r in mod.read_results(tmp_path / "results.sqlite")] == [r["id"] for r in recs[:10]]
    out = tmp_path / "out"
    args = ["build", "--out", str(out), "--no-charts", "--results", str(tmp_path / "results.sqlite")]
    res = runner.invoke(mod.leaderboard_app, [*args, "--results", str(tmp_path / "more.store")])
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in json.loads((out / "data" / "records.json").read_text())] == [r["id"] for r in recs]


def test_cli_serve_without_a_site(cli, tmp_path):
    mod, runner, _ = cli
    res = runner.invoke(mod.leaderboard_app, ["serve", "--dir", str(tmp_path), "--port", "0"])
    assert res.exit_code == 2 and res.stderr.startswith(f"error: no site in {tmp_path}")


def test_cards_from_the_registry_build(tmp_path):
    from glocal.benchmarks.cli.leaderboard import model_cards

    cards = model_cards()
    assert all(isinstance(c, dict) and c["family"] and c["variants"] for c in cards)
    summary = build_site(sample_records()[:2], cards, tmp_path / "s", charts=False)
    assert summary.models == len({c["family"] for c in cards} | {"gcvit", "dinat"})


def test_published_results_dir_is_inside_the_package():
    import glocal.leaderboard
    from glocal.benchmarks.cli.leaderboard import published_results_dir

    assert published_results_dir() == Path(glocal.leaderboard.__file__).resolve().parent / "results"
    # every published record is valid (read_results_dir raises on the first bad one) and ids are unique
    published = data.read_results_dir(published_results_dir())
    assert len({r["id"] for r in published}) == len(published)


def test_leaderboard_does_not_import_the_harness_or_the_zoo():
    import subprocess

    code = (
        "import sys, glocal.leaderboard, glocal.leaderboard.site; "
        "print(sorted(m for m in sys.modules if m.startswith(('glocal.benchmarks', 'glocal.zoo', 'torch', "
        "'altair', 'vl_convert', 'jinja2'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_core_tabs_have_a_primary_metric():
    """Every core tab ranks by a quality metric (its Pareto chart needs one); titles are unique."""
    titles = [t.title for t in tables.TABS.values()]
    assert len(titles) == len(set(titles))
    assert all(t.primary for t in tables.TABS.values() if t.core)
    assert list(itertools.islice(tables.TABS, 4)) == [
        "classification",
        "dehazing",
        "super_resolution",
        "structure",
    ]


# ---------------------------------------------------------------------------------------------------------
# generation and multi-view charts: the chart choice per task, series split by task options, OOM, paper figures


def _scaling_tabs() -> dict:
    recs, cards = scaling_records(), scaling_cards()
    index = site.SiteIndex(site.index_models(recs, cards), data.record_anchors(recs))
    return {t.tab.slug: t for t in site.tab_data(recs, index)}


def test_scaling_records_are_valid():
    from glocal.record import validate_record

    recs = scaling_records()
    for r in recs:
        validate_record(r)
    assert {data.tab_of(r) for r in recs} == {"generation", "multiview"}


def test_generation_series_split_by_attention_mode_with_dense_ratio():
    tab = _scaling_tabs()["generation"]
    lat = [g for g in tab.scaling_groups if g.kind == "latency"]
    assert [g.title for g in lat] == [f"{H100} · bf16 · batch 1", f"{H100} · bf16 · batch 1 · frames 81"]
    image, video = lat
    pts = {(p["series"], p["x"]): p for p in image.points}
    dense = "Scale-DiT · scaledit_flux1_dev · attention=dense-sdpa"
    sdit = "Scale-DiT · scaledit_flux1_dev · attention=scaledit"
    assert {s for s, _ in pts} == {dense, sdit}  # one line per attention mode, not one per variant
    assert pts[(sdit, 4096)]["value"] == 7.5 and pts[(dense, 4096)]["value"] == 19.5  # seconds per step (ms / 1000)
    assert pts[(sdit, 4096)]["ratio"] == pytest.approx(19.5 / 7.5)
    assert pts[(sdit, 4096)]["ratio_text"] == "2.60x vs dense"
    assert "ratio" not in pts[(dense, 4096)]
    assert image.y_title.startswith("seconds per denoising step") and image.x_title == "image side (px), log scale"
    # the video rows are their own chart keyed by resolution, frames in the title
    assert sorted({p["x"] for p in video.points}) == [480, 720, 1080]
    assert video.x_title.startswith("video resolution")
    assert {p["key"] for p in video.points} == {"ultragen_1080p · attention=ultragen",
                                                "ultragen_1080p · attention=dense-sdpa"}
    ratio = {p["x"]: p["ratio"] for p in video.points if "ratio" in p}
    assert ratio == pytest.approx({480: 4 / 3, 720: 12 / 7, 1080: 42 / 15})
    # memory charts carry no speed-up ratio
    assert not any("ratio" in p for g in tab.scaling_groups if g.kind == "memory" for p in g.points)


def test_classification_series_keep_the_variant_name():
    recs = [r for r in data.latest_per_cell(sample_records()) if data.tab_of(r) == "classification"]
    assert charts.distinguishing_options(recs) == []
    index = site.SiteIndex(site.index_models(recs, sample_cards()), data.record_anchors(recs))
    cls = next(t for t in site.tab_data(recs, index) if t.tab.slug == "classification")
    assert {p["key"] for g in cls.scaling_groups for p in g.points} <= {r["model"]["variant"] for r in recs}
    assert not any(p["oom"] for g in cls.scaling_groups for p in g.points) and cls.paper_rows == []


def test_multiview_x_axis_is_frames_and_oom_is_marked():
    tab = _scaling_tabs()["multiview"]
    lat = next(g for g in tab.scaling_groups if g.kind == "latency")
    assert lat.x_name == "frames" and lat.x_title == "frames, log scale"
    assert sorted({p["x"] for p in lat.points}) == [10, 50, 100, 200, 1000]
    assert {p["resolution"] for p in lat.points} == {518}
    oom = [p for p in lat.points if p["oom"]]
    assert [(p["variant"], p["x"], p["label"]) for p in oom] == [("vggt_1b", 1000, "out of memory")]
    assert oom[0]["value"] == 1.5 * max(p["value"] for p in lat.points if not p["oom"])  # drawn above the top
    flash = {p["x"]: p["value"] for p in lat.points if p["variant"] == "flashvggt"}
    assert flash[1000] == 36.0
    spec = charts.scaling_spec(lat, validate=True)
    layers = {layer["name"]: layer for layer in spec["layer"]}
    assert layers["oom"]["mark"]["shape"] == "cross" and layers["oom_label"]["encoding"]["text"]["field"] == "label"
    assert {"filter": "datum.oom"} in layers["oom"]["transform"]
    assert {"filter": "!datum.oom"} in layers["lines"]["transform"]  # an OOM cell is never on a line
    assert layers["lines"]["encoding"]["x"]["field"] == "x"
    assert layers["lines"]["encoding"]["x"]["scale"]["type"] == "log"
    assert layers["lines"]["encoding"]["y"]["scale"]["type"] == "log"


def test_generation_spec_is_log_log_with_ratio_labels_and_series_colours():
    tab = _scaling_tabs()["generation"]
    image = tab.scaling_groups[0]
    colors = charts.extend_colors(charts.variant_colors(["scaledit_flux1_dev"]), [p["key"] for p in image.points])
    spec = charts.scaling_spec(image, colors, validate=True)
    layers = {layer["name"]: layer for layer in spec["layer"]}
    assert layers["lines"]["encoding"]["x"]["scale"]["type"] == "log"
    assert layers["lines"]["encoding"]["y"]["scale"]["type"] == "log"
    assert layers["ratios"]["encoding"]["text"]["field"] == "ratio_text"
    scale = layers["lines"]["encoding"]["color"]["scale"]
    assert scale["domain"] == ["scaledit_flux1_dev · attention=dense-sdpa", "scaledit_flux1_dev · attention=scaledit"]
    assert scale["range"] == [colors[k] for k in scale["domain"]] and len(set(scale["range"])) == 2
    assert "oom" not in layers


def test_paper_figures_are_a_separate_labelled_table(tmp_path):
    pytest.importorskip("altair")
    tabs = _scaling_tabs()
    gen = {(p["variant"], p["metric"]): p["value"] for p in tabs["generation"].paper_rows}
    assert gen == {("scaledit_flux1_dev", "seconds_per_step"): 7.81,
                   ("scaledit_flux1_dev", "seconds_per_step_dense"): 17.89,
                   ("ultragen_1080p", "speedup_vs_wan"): 2.69}  # runtime figures only: no FID
    mv = {(p["variant"], p["metric"]): p["value"] for p in tabs["multiview"].paper_rows}
    assert mv[("vggt_1b", "seconds_10_frames")] == 0.14 and mv[("flashvggt", "seconds_1000_frames")] == 35.3
    assert ("vggt_1b", "auc30") not in mv
    # never merged with the measured points
    measured = {p["value"] for t in tabs.values() for g in t.scaling_groups for p in g.points}
    assert not measured & {7.81, 17.89, 2.69, 0.14, 8.75, 35.3, 377.6}
    out = tmp_path / "site"
    build_site(scaling_records(), scaling_cards(), out)
    page = (out / "task-generation.html").read_text()
    section = page[page.index('<section class="paper-reported"'):]
    section = section[:section.index("</section>")]
    assert "paper-reported" in section and ">7.81<" in section and ">2.69<" in section
    specs = page[:page.index('<section class="paper-reported"')]
    assert "7.81" not in specs and "2.69" not in specs
    mv_page = (out / "task-multiview.html").read_text()
    assert "Scaling with frames" in mv_page and ">377.6<" in mv_page and ">0.14<" in mv_page
