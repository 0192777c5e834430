"""``DIR/index.html``: one page that lists a run's inputs beside their overlays.

The page is a single file that needs no network and no server: the run's data is embedded as JSON and a
small script shows it a page of inputs at a time, filtered and sorted in the browser. Overlays are linked by
their file names, relative to the page, so the folder can be copied anywhere; thumbnails load lazily.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from ..errors import PeaklocError
from .table import temporary_beside

#: Rows kept per input on the page; the table has them all.
ROWS_PER_INPUT = 100
PAGE_NAME = "index.html"


def _number(value):
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class Page:
    """The inputs of a run as the page lists them, added as their outcomes arrive."""

    folder: str
    inputs: list[dict] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    has_snr: bool = False

    def add(self, path: str, rows: list[dict], overlays: list[str], errors: list[str], warnings: list[str]) -> None:
        """One input: its table rows (dicts of the table's columns), overlay file names and messages."""
        kept = []
        for row in rows[:ROWS_PER_INPUT]:
            method = str(row.get("method", ""))
            if method and method not in self.methods:
                self.methods.append(method)
            snr = _number(row.get("snr"))
            self.has_snr |= snr is not None
            kept.append(
                [
                    str(row.get("index") or ""),
                    row.get("peak"),
                    method,
                    _number(row.get("x")),
                    _number(row.get("y")),
                    _number(row.get("z")),
                    _number(row.get("value")),
                    snr,
                ]
            )
        self.inputs.append({"p": path, "o": overlays, "e": errors, "w": warnings, "r": kept, "n": len(rows)})

    def html(self) -> str:
        """The page: the template with the run's data embedded."""
        data = {"inputs": self.inputs, "methods": self.methods, "snr": self.has_snr, "rowsPerInput": ROWS_PER_INPUT}
        # "<" escaped: no path or message can close the script element.
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
        return _TEMPLATE.replace("/*DATA*/", text)

    def write(self, protected: frozenset[str] | set[str] = frozenset()) -> str:
        """Write ``folder/index.html`` (whole or not at all); never over an input or a non-regular file."""
        path = os.path.join(self.folder, PAGE_NAME)
        if os.path.realpath(path) in protected:
            raise PeaklocError(f"{path} would overwrite an input; choose another --overlay folder")
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
            raise PeaklocError(f"{path} exists and is not a regular file; peakloc does not write over it")
        try:
            os.makedirs(self.folder, exist_ok=True)
            handle, temporary = temporary_beside(path)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    out.write(self.html())
                os.chmod(temporary, 0o644)
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as exc:
            raise PeaklocError(f"cannot write {path}: {exc.strerror or exc}") from None
        return path


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>peakloc run</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
#controls { display: flex; flex-wrap: wrap; gap: .6em 1.2em; align-items: end; margin: .6em 0; position: sticky;
  top: 0; background: #fafafa; padding: .4em 0; border-bottom: 1px solid #ddd; }
#controls label { display: flex; flex-direction: column; font-size: .85em; color: #555; }
#controls input, #controls select, #controls button { font: inherit; padding: .15em .3em; }
table.inputs { border-collapse: collapse; width: 100%; }
table.inputs > tbody > tr > td { border-top: 1px solid #ddd; padding: .4em; vertical-align: top; }
td.thumb { width: 168px; }
td.thumb img { width: 160px; height: auto; background: #333; display: block; }
.path { font-family: ui-monospace, monospace; word-break: break-all; }
.error { color: #b00020; }
.warning { color: #8a5a00; }
.more a, .others a { margin-right: .5em; }
table.rows { border-collapse: collapse; margin-top: .3em; font-size: .9em; }
table.rows th, table.rows td { padding: .05em .5em; text-align: right; border-bottom: 1px solid #eee; }
table.rows th:nth-child(-n+3), table.rows td:nth-child(-n+3) { text-align: left; }
#pager { margin: .8em 0; display: flex; gap: 1em; align-items: center; }
</style>
</head>
<body>
<h1>peakloc run</h1>
<div id="summary"></div>
<div id="controls">
  <label>path contains <input id="filter-path" type="search" placeholder="e.g. frame_01"></label>
  <label>method <select id="filter-method"><option value="">all</option></select></label>
  <label>value at least <input id="filter-value" type="number" step="any"></label>
  <label>snr at least <input id="filter-snr" type="number" step="any"></label>
  <label>status <select id="filter-status">
    <option value="">all</option><option value="failed">failed</option>
    <option value="warnings">with warnings</option><option value="ok">done</option></select></label>
  <label>sort by <select id="sort">
    <option value="order">input order</option><option value="path">path</option>
    <option value="value">value (highest first)</option><option value="snr">snr (highest first)</option>
    </select></label>
  <div><span id="count"></span> of <span id="total"></span> inputs</div>
</div>
<div id="pager-top"></div>
<table class="inputs"><tbody id="list"></tbody></table>
<div id="pager"></div>
<script id="peakloc-data" type="application/json">/*DATA*/</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("peakloc-data").textContent);
const PER_PAGE = 100;
const COLUMNS = ["index", "peak", "method", "x", "y", "z", "value", "snr"];
const $ = (id) => document.getElementById(id);
let page = 0, shown = [];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  return v.toPrecision(6).replace(/\.?0+($|e)/, "$1");
}
function href(name) { return encodeURIComponent(name); }

function setup() {
  const methods = $("filter-method");
  for (const m of DATA.methods) methods.append(el("option", {value: m}, m));
  if (!DATA.snr) {
    $("filter-snr").disabled = true;
    $("filter-snr").title = "run with --extra for snr";
    $("sort").querySelector('option[value="snr"]').disabled = true;
  }
  const failed = DATA.inputs.filter((i) => i.e.length).length;
  const warned = DATA.inputs.filter((i) => i.w.length).length;
  $("summary").textContent = `${DATA.inputs.length} inputs, ${failed} failed, ${warned} with warnings.`;
  $("total").textContent = DATA.inputs.length;
  const again = () => { page = 0; update(); };
  for (const id of ["filter-path", "filter-value", "filter-snr"]) $(id).addEventListener("input", again);
  for (const id of ["filter-method", "filter-status", "sort"]) $(id).addEventListener("change", again);
  update();
}

function matchingRows(input, method, minValue, minSnr) {
  return input.r.filter((r) =>
    (!method || r[2] === method) &&
    (minValue === null || (r[6] !== null && r[6] >= minValue)) &&
    (minSnr === null || (r[7] !== null && r[7] >= minSnr)));
}
function numberOf(id) {
  const text = $(id).value.trim();
  return text === "" || isNaN(Number(text)) ? null : Number(text);
}

function update() {
  const needle = $("filter-path").value.trim().toLowerCase();
  const method = $("filter-method").value, status = $("filter-status").value, sort = $("sort").value;
  const minValue = numberOf("filter-value"), minSnr = DATA.snr ? numberOf("filter-snr") : null;
  const rowFilter = method || minValue !== null || minSnr !== null;
  shown = [];
  DATA.inputs.forEach((input, order) => {
    if (needle && !input.p.toLowerCase().includes(needle)) return;
    if (status === "failed" && !input.e.length) return;
    if (status === "warnings" && !input.w.length) return;
    if (status === "ok" && input.e.length) return;
    const rows = rowFilter ? matchingRows(input, method, minValue, minSnr) : input.r;
    if (rowFilter && !rows.length) return;
    const best = (k) => rows.reduce((m, r) => (r[k] !== null && r[k] > m ? r[k] : m), -Infinity);
    shown.push({input, order, rows, value: best(6), snr: best(7)});
  });
  const byPath = (a, b) => (a.input.p < b.input.p ? -1 : a.input.p > b.input.p ? 1 : a.order - b.order);
  if (sort === "path") shown.sort(byPath);
  else if (sort === "value" || sort === "snr") shown.sort((a, b) => b[sort] - a[sort] || a.order - b.order);
  $("count").textContent = shown.length;
  render();
  if (window.peaklocShown === undefined) window.peaklocShown = performance.now();  // first rows on screen
}

function pager() {
  const pages = Math.max(1, Math.ceil(shown.length / PER_PAGE));
  const prev = el("button", {type: "button", class: "prev"}, "previous");
  const next = el("button", {type: "button", class: "next"}, "next");
  prev.disabled = page === 0; next.disabled = page >= pages - 1;
  prev.onclick = () => { page--; render(); }; next.onclick = () => { page++; render(); };
  const first = page * PER_PAGE + 1, last = Math.min(shown.length, (page + 1) * PER_PAGE);
  const where = ` inputs ${shown.length ? first : 0}-${last} (page ${page + 1} of ${pages}) `;
  return el("div", {class: "pager"}, prev, where, next);
}

function render() {
  const list = $("list");
  list.replaceChildren();
  for (const item of shown.slice(page * PER_PAGE, (page + 1) * PER_PAGE)) list.append(entry(item));
  $("pager").replaceChildren(pager());
  $("pager-top").replaceChildren(pager());
}

function entry({input, rows}) {
  const sheet = input.o.find((o) => o.endsWith("_sheet.png"));
  const thumbName = sheet || input.o[0];
  const image = () => el("img", {src: href(thumbName), loading: "lazy", alt: "overlay of " + input.p});
  const thumb = thumbName ? el("a", {href: href(thumbName), class: "thumbnail"}, image()) : "no overlay";
  const about = el("td", {class: "about"}, el("div", {class: "path"}, input.p));
  for (const e of input.e) about.append(el("div", {class: "error"}, "error: " + e));
  for (const w of input.w) about.append(el("div", {class: "warning"}, "warning: " + w));
  const others = input.o.filter((o) => o !== thumbName);
  if (others.length) {
    const links = el("div", {class: "others"}, "overlays: ");
    for (const o of others.slice(0, 24)) links.append(el("a", {href: href(o)}, o));
    if (others.length > 24) links.append(`and ${others.length - 24} more`);
    about.append(links);
  }
  if (rows.length) {
    const columns = DATA.snr ? COLUMNS : COLUMNS.slice(0, 7);
    const head = el("tr", {}, ...columns.map((c) => el("th", {}, c)));
    const body = rows.map((r) => el("tr", {}, ...columns.map((c, k) => el("td", {}, fmt(r[k])))));
    about.append(el("table", {class: "rows"}, el("thead", {}, head), el("tbody", {}, ...body)));
  }
  if (input.n > input.r.length) {
    about.append(el("div", {class: "more"}, `${input.n - input.r.length} more rows in the table`));
  }
  return el("tr", {class: "input"}, el("td", {class: "thumb"}, thumb), about);
}

setup();
</script>
</body>
</html>
"""
