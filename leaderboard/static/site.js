/* glocal leaderboard: sortable and filterable tables, filters kept in the URL hash, lazily drawn Vega
   charts, record anchors and copy buttons. Data only ever reaches the DOM through textContent and
   attribute reads; nothing is fetched. */
(function () {
  "use strict";

  var FILTER_KEYS = ["device", "precision", "q"];

  function all(selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  }

  function control(key) {
    return document.querySelector('[data-filter="' + key + '"]');
  }

  function value(key) {
    var el = control(key);
    return el ? el.value : "";
  }

  /* ---------------------------------------------------------------- filter state in the hash */

  function hashState() {
    var hash = location.hash.replace(/^#/, "");
    if (hash.indexOf("=") < 0) return null; // a record anchor, not filters
    var params = new URLSearchParams(hash);
    var state = {};
    FILTER_KEYS.forEach(function (k) {
      if (params.get(k)) state[k] = params.get(k);
    });
    return state;
  }

  function filterHash() {
    var params = new URLSearchParams();
    FILTER_KEYS.forEach(function (k) {
      if (value(k)) params.set(k, value(k));
    });
    var text = params.toString();
    return text ? "#" + text : "";
  }

  function writeHash() {
    var hash = filterHash();
    try {
      history.replaceState(null, "", hash || location.pathname + location.search);
    } catch (e) {
      /* some file:// setups refuse replaceState; the filters still apply */
    }
  }

  function restoreFilters() {
    var state = hashState() || {};
    FILTER_KEYS.forEach(function (k) {
      var el = control(k);
      if (!el || !state[k]) return;
      if (el.tagName === "SELECT") {
        var known = all("option", el).some(function (o) { return o.value === state[k]; });
        if (known) el.value = state[k];
      } else {
        el.value = state[k];
      }
    });
  }

  /* ---------------------------------------------------------------- filtering */

  function matches(el, device, precision) {
    return (!device || !el.hasAttribute("data-device") || el.getAttribute("data-device") === device) &&
      (!precision || !el.hasAttribute("data-precision") || el.getAttribute("data-precision") === precision);
  }

  function applyFilters() {
    var device = value("device"), precision = value("precision");
    var query = value("q").trim().toLowerCase();
    all("table[data-sortable]").forEach(function (table) {
      var rows = all("tbody tr[data-row]", table);
      var shown = 0;
      rows.forEach(function (tr) {
        var ok = (!table.hasAttribute("data-filterable") || matches(tr, device, precision)) &&
          (!query || tr.textContent.toLowerCase().indexOf(query) >= 0);
        tr.hidden = !ok;
        if (ok) shown += 1;
      });
      var empty = table.querySelector("tr[data-empty]");
      if (empty) empty.hidden = shown > 0 || rows.length === 0;
      var counter = document.querySelector('[data-count-for="' + table.id + '"]');
      if (counter) {
        var unit = rows.length === 1 ? " row" : " rows";
        counter.textContent = shown === rows.length ? rows.length + unit : shown + " of " + rows.length + unit;
      }
    });
    all("figure.chart").forEach(function (fig) {
      var ok = matches(fig, device, precision);
      fig.hidden = !ok;
      if (ok) draw(fig);
    });
  }

  /* ---------------------------------------------------------------- sorting */

  function sortTable(table, th) {
    var headers = all("thead th", table);
    var col = headers.indexOf(th);
    var kind = th.getAttribute("data-kind");
    var current = th.getAttribute("aria-sort");
    var dir = current === "ascending" ? "desc" : current === "descending" ? "asc" : th.getAttribute("data-first") || "asc";
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
    var id = decodeURIComponent(location.hash.replace(/^#/, ""));
    if (!id || id.indexOf("=") >= 0) return;
    var el = document.getElementById(id);
    if (el && el.tagName === "DETAILS") {
      el.open = true;
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
        if (button) button.addEventListener("click", function () { sortTable(table, th); });
      });
    });
    FILTER_KEYS.forEach(function (k) {
      var el = control(k);
      if (!el) return;
      el.addEventListener(el.tagName === "SELECT" ? "change" : "input", function () {
        applyFilters();
        writeHash();
      });
    });
    all("a[data-keep-filters]").forEach(function (a) {
      a.addEventListener("click", function () {
        var hash = filterHash();
        if (hash) a.setAttribute("href", a.getAttribute("href").split("#")[0] + hash);
      });
    });
    all("form.filters").forEach(function (form) {
      form.addEventListener("submit", function (e) { e.preventDefault(); });
    });
    all("button[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () { copyCommand(b); });
    });
    window.addEventListener("hashchange", openRecord);
    restoreFilters();
    applyFilters();
    openRecord();
    document.documentElement.setAttribute("data-ready", "1");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
