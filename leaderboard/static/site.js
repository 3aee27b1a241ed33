/* glocal leaderboard: sortable and filterable tables, rankings at a chosen setting, columns shown only where
   the view has values, CSV/JSON downloads of exactly the rows shown, the whole view kept in the URL hash,
   lazily drawn Vega charts, record anchors and copy buttons. Data only ever reaches the DOM through
   textContent and attribute reads; nothing is fetched. */
(function () {
  "use strict";

  var ALWAYS_SHOWN = ["model", "rank", "variant"];

  function all(selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  }

  function controls() {
    return all("[data-filter]");
  }

  function control(key) {
    return document.querySelector('[data-filter="' + key + '"]');
  }

  function value(key) {
    var el = control(key);
    if (!el) return "";
    if (el.type === "checkbox") return el.checked ? el.value || "1" : "";
    return el.value;
  }

  /* ---------------------------------------------------------------- view state in the hash */

  function safeDecode(text) {
    try {
      return decodeURIComponent(text);
    } catch (e) {
      return text; /* a malformed escape such as "#%" is taken literally, never thrown */
    }
  }

  function hashParams() {
    var hash = location.hash.replace(/^#/, "");
    if (hash.indexOf("=") < 0) return null; // a record anchor, not a view
    try {
      return new URLSearchParams(hash);
    } catch (e) {
      return null;
    }
  }

  function viewHash() {
    var params = new URLSearchParams();
    controls().forEach(function (el) {
      var k = el.getAttribute("data-filter");
      var v = value(k);
      var first = el.tagName === "SELECT" && el.options.length ? el.options[0].value : "";
      if (v && v !== first) params.set(k, v); // a setting picker's first option is its default
    });
    all("table[data-sortable][data-sorted]").forEach(function (table) {
      params.set("sort-" + table.id, table.getAttribute("data-sorted"));
    });
    var text = params.toString();
    return text ? "#" + text : "";
  }

  function writeHash() {
    var hash = viewHash();
    try {
      history.replaceState(null, "", hash || location.pathname + location.search);
    } catch (e) {
      /* some file:// setups refuse replaceState; the view still applies */
    }
    updateViewLinks();
  }

  function updateViewLinks() {
    var hash = viewHash();
    all("a[data-view-link]").forEach(function (a) {
      a.setAttribute("href", location.pathname.split("/").pop() + hash);
    });
  }

  function restoreView() {
    var params = hashParams();
    if (!params) return;
    controls().forEach(function (el) {
      var k = el.getAttribute("data-filter");
      var v = params.get(k);
      if (!v) return;
      if (el.type === "checkbox") {
        el.checked = v === (el.value || "1");
      } else if (el.tagName === "SELECT") {
        var known = all("option", el).some(function (o) { return o.value === v; });
        if (known) el.value = v;
      } else {
        el.value = v;
      }
    });
  }

  /* ---------------------------------------------------------------- filtering */

  function matches(el, device, precision) {
    return (!device || !el.hasAttribute("data-device") || el.getAttribute("data-device") === device) &&
      (!precision || !el.hasAttribute("data-precision") || el.getAttribute("data-precision") === precision);
  }

  function settingOf(table) {
    var sel = document.querySelector('[data-setting-for="' + table.id + '"]');
    return sel ? sel.value : null;
  }

  function applyFilters() {
    var device = value("device"), precision = value("precision");
    var query = value("q").trim().toLowerCase();
    all("table[data-sortable]").forEach(function (table) {
      var rows = all("tbody tr[data-row]", table);
      var setting = settingOf(table);
      var inView = rows.filter(function (tr) {
        return setting === null || tr.getAttribute("data-setting") === setting;
      });
      var shown = 0;
      rows.forEach(function (tr) {
        var ok = (setting === null || tr.getAttribute("data-setting") === setting) &&
          (!table.hasAttribute("data-filterable") || matches(tr, device, precision)) &&
          (!query || tr.textContent.toLowerCase().indexOf(query) >= 0);
        tr.hidden = !ok;
        if (ok) shown += 1;
      });
      if (table.hasAttribute("data-rank-by")) rank(table);
      hideEmptyColumns(table);
      var empty = table.querySelector("tr[data-empty]");
      if (empty) empty.hidden = shown > 0 || rows.length === 0;
      var counter = document.querySelector('[data-count-for="' + table.id + '"]');
      if (counter) {
        var total = inView.length;
        var unit = total === 1 ? " row" : " rows";
        counter.textContent = shown === total ? total + unit : shown + " of " + total + unit;
      }
    });
    all("[data-hw-select]").forEach(function (sel) {
      all(".hw-matrix").forEach(function (div) { div.hidden = div.getAttribute("data-hw") !== sel.value; });
    });
    all("figure.chart").forEach(function (fig) {
      var ok = matches(fig, device, precision);
      fig.hidden = !ok;
      if (ok) draw(fig);
    });
  }

  function cellHasValue(td) {
    /* the rule of tables.has_value: a text other than a dash, not a placeholder; a run status counts in the
       latency column only */
    var text = td.textContent.trim();
    if (/(^|\s)st(\s|$)/.test(td.className)) return td.getAttribute("data-col") === "latency";
    return text !== "" && text !== "—" && !/(^|\s)(missing|random)(\s|$)/.test(td.className);
  }

  function hideEmptyColumns(table) {
    var headers = all("thead th", table);
    var rows = all("tbody tr[data-row]", table).filter(function (tr) { return !tr.hidden; });
    headers.forEach(function (th, i) {
      var key = th.getAttribute("data-key") || "";
      var keep = ALWAYS_SHOWN.indexOf(key) >= 0 || !th.hasAttribute("data-key") || rows.length === 0 ||
        rows.some(function (tr) { return tr.cells[i] && cellHasValue(tr.cells[i]); });
      th.hidden = !keep;
      all("tbody tr[data-row]", table).forEach(function (tr) { if (tr.cells[i]) tr.cells[i].hidden = !keep; });
    });
  }

  /* ---------------------------------------------------------------- ranking */

  function rank(table) {
    var headers = all("thead th", table);
    var by = headers.findIndex(function (th) { return th.getAttribute("data-key") === table.getAttribute("data-rank-by"); });
    var col = headers.findIndex(function (th) { return th.getAttribute("data-key") === "rank"; });
    if (by < 0 || col < 0) return;
    var desc = table.getAttribute("data-rank-dir") === "desc";
    var withNoisy = value("noisy") !== "";
    var tbody = table.tBodies[0];
    var rows = all("tr[data-row]", tbody);
    var ranked = [], rest = [];
    rows.forEach(function (tr) {
      var td = tr.cells[by];
      var v = td && td.hasAttribute("data-v") ? parseFloat(td.getAttribute("data-v")) : NaN;
      var eligible = !tr.hidden && !isNaN(v) && (withNoisy || !tr.hasAttribute("data-noisy"));
      (eligible ? ranked : rest).push({ tr: tr, v: v });
    });
    ranked.sort(function (a, b) { return desc ? b.v - a.v : a.v - b.v; });
    var last = null, r = 0;
    ranked.forEach(function (k, i) {
      if (last === null || k.v !== last) r = i + 1;
      last = k.v;
      var td = k.tr.cells[col];
      td.textContent = String(r);
      td.setAttribute("data-v", String(r));
      td.removeAttribute("title");
    });
    rest.forEach(function (k) {
      var td = k.tr.cells[col];
      td.textContent = "—";
      td.removeAttribute("data-v");
      if (k.tr.hasAttribute("data-noisy")) td.setAttribute("title", "not ranked: noisy measurement");
    });
    var empty = tbody.querySelector("tr[data-empty]");
    ranked.concat(rest).forEach(function (k) { tbody.insertBefore(k.tr, empty); });
    headers.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
    headers[col].setAttribute("aria-sort", "ascending");
    table.removeAttribute("data-sorted");
  }

  /* ---------------------------------------------------------------- sorting */

  function sortTable(table, th, forced) {
    var headers = all("thead th", table);
    var col = headers.indexOf(th);
    var kind = th.getAttribute("data-kind");
    var current = th.getAttribute("aria-sort");
    var dir = forced || (current === "ascending" ? "desc" : current === "descending" ? "asc" : th.getAttribute("data-first") || "asc");
    var tbody = table.tBodies[0];
    var keyed = all("tr[data-row]", tbody).map(function (tr, i) {
      var td = tr.cells[col];
      var v = td && td.hasAttribute("data-v") ? td.getAttribute("data-v") : null;
      if (v !== null && kind === "num") {
        v = parseFloat(v);
        if (isNaN(v)) v = null;
      }
      return { tr: tr, v: v, i: i };
    });
    keyed.sort(function (a, b) {
      if (a.v === null || b.v === null) {
        return (a.v === null) - (b.v === null) || a.i - b.i; // missing values last, either direction
      }
      var c = kind === "num" ? a.v - b.v : a.v < b.v ? -1 : a.v > b.v ? 1 : 0;
      return (dir === "desc" ? -c : c) || a.i - b.i;
    });
    var empty = tbody.querySelector("tr[data-empty]");
    keyed.forEach(function (k) { tbody.insertBefore(k.tr, empty); });
    headers.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
    if (th.getAttribute("data-key")) table.setAttribute("data-sorted", th.getAttribute("data-key") + ":" + dir);
  }

  /* ---------------------------------------------------------------- downloads of the view */

  function viewData(table) {
    var headers = all("thead th", table);
    var cols = headers.map(function (th, i) { return i; }).filter(function (i) { return !headers[i].hidden; });
    var names = cols.map(function (i) { return headers[i].textContent.trim(); });
    var keys = cols.map(function (i) { return headers[i].getAttribute("data-key") || names[cols.indexOf(i)]; });
    var rows = all("tbody tr[data-row]", table).filter(function (tr) { return !tr.hidden; }).map(function (tr) {
      return cols.map(function (i) { return tr.cells[i] ? tr.cells[i].textContent.trim() : ""; });
    });
    return { names: names, keys: keys, rows: rows };
  }

  function csvField(text) {
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function toCsv(view) {
    return [view.names].concat(view.rows).map(function (r) { return r.map(csvField).join(","); }).join("\r\n") + "\r\n";
  }

  function toJson(view) {
    return JSON.stringify(view.rows.map(function (r) {
      var o = {};
      view.keys.forEach(function (k, i) { o[k] = r[i]; });
      return o;
    }), null, 1) + "\n";
  }

  function download(button) {
    var table = document.getElementById(button.getAttribute("data-table"));
    if (!table) return;
    var kind = button.getAttribute("data-download");
    var view = viewData(table);
    var blob = new Blob([kind === "csv" ? toCsv(view) : toJson(view)],
      { type: kind === "csv" ? "text/csv;charset=utf-8" : "application/json" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = (button.getAttribute("data-name") || table.id).replace(/[^A-Za-z0-9_-]+/g, "-") + "." + kind;
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  /* ---------------------------------------------------------------- charts */

  function failChart(fig, target, message) {
    fig.setAttribute("data-state", "error");
    target.textContent = "This chart could not be drawn: " + message;
    console.error("chart " + fig.id + ": " + message);
  }

  function draw(fig) {
    if (fig.hasAttribute("data-state")) return;
    var target = fig.querySelector(".vega");
    if (typeof window.vegaEmbed !== "function") {
      failChart(fig, target, "the chart library (assets/vega.js) did not load");
      return;
    }
    var spec;
    try {
      spec = JSON.parse(fig.querySelector("script.spec").textContent);
    } catch (e) {
      failChart(fig, target, "bad chart data (" + e.message + ")");
      return;
    }
    fig.setAttribute("data-state", "drawing");
    window.vegaEmbed(target, spec, { renderer: "svg", actions: false }).then(
      function () { fig.setAttribute("data-state", "drawn"); },
      function (err) { failChart(fig, target, String((err && err.message) || err)); }
    );
  }

  /* ---------------------------------------------------------------- records and commands */

  function openRecord() {
    var id = safeDecode(location.hash.replace(/^#/, ""));
    if (!id || id.indexOf("=") >= 0) return;
    var el = document.getElementById(id);
    if (el && el.tagName === "DETAILS") {
      for (var d = el; d; d = d.parentElement) {
        if (d.tagName === "DETAILS") d.open = true;
      }
      el.scrollIntoView();
    }
  }

  function copyCommand(button) {
    var code = button.parentNode.querySelector("code");
    var text = code ? code.textContent : "";
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(code); });
    } else {
      selectText(code);
    }
  }

  function selectText(node) {
    if (!node) return;
    var range = document.createRange();
    range.selectNodeContents(node);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  /* ---------------------------------------------------------------- wiring */

  function init() {
    all("table[data-sortable]").forEach(function (table) {
      all("thead th", table).forEach(function (th) {
        var button = th.querySelector("button");
        if (button) button.addEventListener("click", function () { sortTable(table, th); writeHash(); });
      });
    });
    controls().forEach(function (el) {
      el.addEventListener(el.tagName === "SELECT" || el.type === "checkbox" ? "change" : "input", function () {
        applyFilters();
        writeHash();
      });
    });
    all("a[data-keep-filters]").forEach(function (a) {
      a.addEventListener("click", function () {
        var params = new URLSearchParams();
        ["device", "precision", "q", "noisy"].forEach(function (k) { if (value(k)) params.set(k, value(k)); });
        var hash = params.toString();
        if (hash) a.setAttribute("href", a.getAttribute("href").split("#")[0] + "#" + hash);
      });
    });
    all("form.filters").forEach(function (form) {
      form.addEventListener("submit", function (e) { e.preventDefault(); });
    });
    all("button[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () { copyCommand(b); });
    });
    all("button[data-download]").forEach(function (b) {
      b.addEventListener("click", function () { download(b); });
    });
    window.addEventListener("hashchange", openRecord);
    applyFilters();
    restoreView();
    applyFilters();
    all("table[data-sortable]").forEach(function (table) {
      var s = (hashParams() || new URLSearchParams()).get("sort-" + table.id);
      var parts = s ? s.split(":") : [];
      var th = parts.length ? table.querySelector('thead th[data-key="' + parts[0] + '"]') : null;
      if (th) sortTable(table, th, parts[1] === "desc" ? "desc" : "asc");
    });
    updateViewLinks();
    openRecord();
    document.documentElement.setAttribute("data-ready", "1");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
