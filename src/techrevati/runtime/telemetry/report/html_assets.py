"""The style sheet and script inlined into every HTML report (no network, no library).

Kept apart from :mod:`.html` so the renderer reads as Python. The script draws
each sampled session's timeline as SVG from the JSON data block and makes the
tables sortable; it builds every node with ``createElementNS`` and
``textContent``, never ``innerHTML``, so a string from a span can only ever be
text. The page's Content-Security-Policy admits this script by its hash alone.

Example::

    "<style>" + STYLE + "</style>"
"""

from __future__ import annotations

from typing import Final

STYLE: Final = """
:root{--fg:#1f2933;--muted:#616e7c;--line:#d9e2ec;--bg:#f5f7fa;--card:#fff;
--model:#2f6fde;--tool:#12a37f;--session:#7b8794;--failed:#d64545;--refused:#e8900c;--same:#9aa5b1;
--limit:#d64545;--loop:#8e44ad;--wrap:#e8900c;--handoff:#2f6fde;--guard:#e8900c}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{padding:18px 28px 8px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:18px 0 10px}
section>h2:first-child{margin-top:0}
main{padding:0 28px 28px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:16px 18px;margin:14px 0}
.meta,.note{color:var(--muted);margin:2px 0}
.kpis{display:grid;grid-template-columns:repeat(auto-fill,minmax(130px,1fr));gap:10px;
background:none;border:0;padding:0}
.kpi{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.kpi .label{color:var(--muted);font-size:12px}
.kpi .num{font-size:20px;font-weight:600;font-variant-numeric:tabular-nums}
.kpi.alert .num{color:var(--failed)}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);
white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:320px}
th{font-size:12px;color:var(--muted);font-weight:600;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
td.n,th.n{text-align:right}
.bar{display:inline-block;height:10px;background:var(--model);border-radius:2px;
vertical-align:middle}
.bar.agent{background:var(--tool)}
.badge{display:inline-block;padding:0 6px;border-radius:9px;font-size:12px;
margin-left:4px;color:#fff;background:var(--limit)}
.badge.loop{background:var(--loop)}
.badge.wrap{background:var(--wrap)}
.badge.remote{background:var(--muted)}
details.session{border-bottom:1px solid var(--line)}
details.session>summary,.tree-head{display:grid;
grid-template-columns:minmax(200px,2.2fr) 90px repeat(6,minmax(70px,1fr)) 1.6fr;gap:6px}
details.session>summary{padding:5px 0;cursor:pointer;list-style:none;align-items:center}
details.session>summary::-webkit-details-marker{display:none}
.tree-head{font-size:12px;color:var(--muted);font-weight:600;padding:0 0 4px;
border-bottom:1px solid var(--line)}
.tree-head span.n,summary span.n{text-align:right;font-variant-numeric:tabular-nums}
summary>span:last-child,.tree-head>span:last-child{padding-left:10px}
summary .role{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
summary .role::before{content:"\\25B8 ";color:var(--muted)}
details[open]>summary .role::before{content:"\\25BE "}
.outcome-failed,.outcome-cancelled{color:var(--failed)}
.timeline{padding:4px 0 12px}
.timeline svg{width:100%;height:auto;display:block}
.timeline .more{color:var(--muted);font-size:12px}
svg text{font:11px system-ui,sans-serif;fill:var(--fg)}
svg .axis{stroke:var(--line)}
svg .axis-label{fill:var(--muted);font-size:10px}
svg rect.bar-model{fill:var(--model)}
svg rect.bar-tool{fill:var(--tool)}
svg rect.bar-session{fill:var(--session)}
svg rect.st-failed{fill:var(--failed)}
svg rect.st-refused{fill:#fff;stroke:var(--refused);stroke-width:2;stroke-dasharray:4 2}
svg rect.same{fill:var(--same)}
svg .mk-limit{stroke:var(--limit);fill:var(--limit)}
svg .mk-loop{stroke:var(--loop);fill:var(--loop)}
svg .mk-wrap-up{stroke:var(--wrap);fill:var(--wrap)}
svg .mk-handoff{stroke:var(--handoff);fill:var(--handoff)}
svg .mk-guardrail{stroke:var(--guard);fill:var(--guard)}
.legend span{display:inline-block;margin-right:14px;font-size:12px;color:var(--muted)}
.legend i{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
.empty{color:var(--muted)}
"""

SCRIPT: Final = """
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var source = document.getElementById("trr-data");
  var data = JSON.parse(source.textContent);

  function svg(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (key) { node.setAttribute(key, String(attrs[key])); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function titled(node, text) {
    node.appendChild(svg("title", {}, text));
    return node;
  }
  function ms(value) {
    return value < 1000 ? value.toFixed(1) + " ms" : (value / 1000).toFixed(2) + " s";
  }
  function short(text, size) {
    return text.length <= size ? text : text.slice(0, size - 1) + "\\u2026";
  }

  var KINDS = {model: "model", tool: "tool", session: "session"};
  var TITLES = {model: "model call", tool: "tool", session: "child session"};
  var LEFT = 230, RIGHT = 990, ROW = 18, TOP = 30;
  function draw(box, session) {
    var span = Math.max(session.duration_ms, 0.001);
    var rows = session.items.length;
    var height = TOP + Math.max(rows, 1) * ROW + 10;
    var root = svg("svg", {viewBox: "0 0 1000 " + height, role: "img",
      "aria-label": "timeline of " + session.role});
    var x = function (offset) {
      return LEFT + (RIGHT - LEFT) * Math.min(Math.max(offset / span, 0), 1);
    };
    for (var tick = 0; tick <= 4; tick++) {
      var at = LEFT + (RIGHT - LEFT) * tick / 4;
      root.appendChild(svg("line", {x1: at, x2: at, y1: TOP - 6, y2: height - 6,
        "class": "axis"}));
      root.appendChild(svg("text", {x: at, y: TOP - 10,
        "text-anchor": tick === 4 ? "end" : "middle", "class": "axis-label"},
        ms(span * tick / 4)));
    }
    session.items.forEach(function (item, index) {
      var y = TOP + index * ROW;
      var start = x(item.at_ms), end = x(item.at_ms + item.ms);
      var label = (KINDS[item.kind] || item.kind) + " " + item.name;
      root.appendChild(titled(svg("text", {x: 4, y: y + 12}, short(label, 36)), label));
      var classes = "bar bar-" + item.kind + " st-" + item.status + (item.same ? " same" : "");
      var bar = svg("rect", {x: start, y: y + 3, width: Math.max(end - start, 2), height: ROW - 6,
        rx: 2, "class": classes, "data-status": item.status, "data-kind": item.kind});
      var title = TITLES[item.kind] + " " + item.name + " \u00b7 " + item.tip;
      root.appendChild(titled(bar, title));
    });
    session.markers.forEach(function (marker) {
      var at = x(marker.at_ms);
      var group = svg("g", {"class": "marker mk-" + marker.kind.replace(/[^a-z-]/g, "-")});
      group.appendChild(svg("line", {x1: at, x2: at, y1: TOP - 4, y2: height - 6,
        "stroke-width": 2}));
      group.appendChild(svg("path", {d: "M" + (at - 5) + " " + (TOP - 14) + " h10 l-5 8 z"}));
      root.appendChild(titled(group, marker.label));
    });
    box.appendChild(root);
    if (session.more > 0) {
      var more = document.createElement("p");
      more.className = "more";
      more.textContent = session.items.length + " of " + (session.items.length + session.more) +
        " calls drawn (the first in start order)";
      box.appendChild(more);
    }
    if (session.items.length === 0) {
      var none = document.createElement("p");
      none.className = "empty";
      none.textContent = "no model or tool calls in this session";
      box.appendChild(none);
    }
  }

  data.sessions.forEach(function (session, index) {
    var box = document.getElementById("timeline-" + index);
    if (box) { draw(box, session); }
  });

  function cellValue(row, column) {
    var cell = row.cells[column];
    var raw = cell ? (cell.getAttribute("data-v") || cell.textContent) : "";
    var number = Number(raw);
    return raw !== "" && !isNaN(number) ? number : raw.toLowerCase();
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.addEventListener("click", function () {
        var down = header.getAttribute("aria-sort") !== "descending";
        Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
          other.removeAttribute("aria-sort");
        });
        header.setAttribute("aria-sort", down ? "descending" : "ascending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var left = cellValue(a, column), right = cellValue(b, column);
          var order = left < right ? -1 : left > right ? 1 : 0;
          return down ? -order : order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  document.body.setAttribute("data-rendered", String(data.sessions.length));
}());
"""

__all__ = ["SCRIPT", "STYLE"]
