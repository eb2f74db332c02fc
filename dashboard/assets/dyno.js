// dyno dashboard: draws every `.chart[data-chart]` with uPlot and makes `table.sortable`
// headers click-to-sort. No dependencies beyond the vendored uPlot (uPlot.iife.min.js, loaded
// before this file). The chart spec (JSON in data-chart):
//
//   {"kind": "line" | "spark" | "scatter" | "cdf",
//    "title": str?, "x_label": str?, "y_label": str?, "x_time": bool?, "x_log": bool?,
//    "x": [number]?,                       shared x (line, spark)
//    "series": [{"label": str, "y": [number|null], "x": [number]? (own x: scatter, cdf),
//                "points_only": bool?}],
//    "band": {"lower": [..], "upper": [..]}?   bounds around series 0 (line)
//    "markers": [{"x": number, "label": str}]?  vertical lines
//    "links": [str|null]?                  per point of series 0: click navigates
//    "tooltips": [str]?}                   per point of series 0: hover text
//
// Line and spark charts use the shared x directly. Scatter and cdf charts, whose series each
// have their own x, are merged onto one x axis: every point of every series gets its own
// index in the merged (sorted) x array, the other series are null there, and lines span the
// gaps, so duplicate x values and unsorted input are both fine.
(function () {
  "use strict";

  var COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

  function num(v) {
    return typeof v === "number" && isFinite(v) ? v : null;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    var a = Math.abs(v);
    if (a !== 0 && (a < 0.001 || a >= 1e6)) return v.toExponential(3);
    return String(Math.round(v * 1000) / 1000);
  }

  function fmtX(spec, v) {
    if (spec.x_time) {
      return new Date(v * 1000).toISOString().replace("T", " ").slice(0, 16);
    }
    return fmt(v);
  }

  // Builds uPlot data plus, per merged index, where each point came from:
  // owner[s][i] = original index of series s's point at merged index i (or -1).
  function buildData(spec) {
    var series = spec.series || [];
    var xs = [];
    var cols = [];
    var owner = [];
    var logX = !!spec.x_log;
    if (spec.kind === "scatter" || spec.kind === "cdf") {
      var pts = [];
      series.forEach(function (s, si) {
        var sx = s.x || spec.x || [];
        (s.y || []).forEach(function (y, i) {
          var x = num(sx[i]);
          if (x === null || (logX && x <= 0)) return;
          pts.push({ x: x, y: num(y), s: si, i: i });
        });
      });
      pts.sort(function (a, b) {
        return a.x - b.x || a.s - b.s || a.i - b.i;
      });
      xs = pts.map(function (p) {
        return p.x;
      });
      series.forEach(function (_, si) {
        cols.push(
          pts.map(function (p) {
            return p.s === si ? p.y : null;
          })
        );
        owner.push(
          pts.map(function (p) {
            return p.s === si ? p.i : -1;
          })
        );
      });
      return { xs: xs, cols: cols, owner: owner, band: null };
    }
    // line / spark: one shared x; sort it (carrying every per-index array along).
    var x0 = spec.x || [];
    var order = [];
    for (var i = 0; i < x0.length; i++) {
      var xv = num(x0[i]);
      if (xv !== null && !(logX && xv <= 0)) order.push(i);
    }
    order.sort(function (a, b) {
      return x0[a] - x0[b] || a - b;
    });
    xs = order.map(function (i) {
      return x0[i];
    });
    series.forEach(function (s) {
      var y = s.y || [];
      cols.push(
        order.map(function (i) {
          return num(y[i]);
        })
      );
      owner.push(order.slice());
    });
    var band = null;
    if (spec.band && spec.kind === "line" && series.length > 0) {
      band = {
        lower: order.map(function (i) {
          return num((spec.band.lower || [])[i]);
        }),
        upper: order.map(function (i) {
          return num((spec.band.upper || [])[i]);
        }),
      };
    }
    return { xs: xs, cols: cols, owner: owner, band: band };
  }

  function hasPoints(d) {
    return d.cols.some(function (c) {
      return c.some(function (v) {
        return v !== null;
      });
    });
  }

  // Vertical marker lines (change points, alerts), and "no data" for an empty chart so that
  // every chart visibly draws something.
  function drawHook(spec, d) {
    return function (u) {
      var ctx = u.ctx;
      var pr = window.devicePixelRatio || 1;
      var top = u.bbox.top;
      var bottom = u.bbox.top + u.bbox.height;
      ctx.save();
      if (!hasPoints(d)) {
        ctx.fillStyle = "#6b7280";
        ctx.font = 12 * pr + "px sans-serif";
        ctx.textAlign = "center";
        ctx.textBaseline = "middle";
        ctx.fillText("no data", u.bbox.left + u.bbox.width / 2, top + u.bbox.height / 2);
      }
      (spec.markers || []).forEach(function (m) {
        var mx = num(m.x);
        if (mx === null) return;
        var px = u.valToPos(mx, "x", true);
        if (!(px >= u.bbox.left && px <= u.bbox.left + u.bbox.width)) return;
        ctx.strokeStyle = "#b91c1c";
        ctx.lineWidth = pr;
        ctx.setLineDash([4 * pr, 3 * pr]);
        ctx.beginPath();
        ctx.moveTo(px, top);
        ctx.lineTo(px, bottom);
        ctx.stroke();
        if (m.label && spec.kind !== "spark") {
          ctx.setLineDash([]);
          ctx.fillStyle = "#b91c1c";
          ctx.font = 11 * pr + "px sans-serif";
          ctx.textAlign = "left";
          ctx.textBaseline = "top";
          ctx.fillText(String(m.label), px + 3 * pr, top + 2 * pr);
        }
      });
      ctx.restore();
    };
  }

  // The point nearest the cursor: for line/spark the nearest x of series 0 (falling back to
  // any series), for scatter/cdf the nearest point of any series in screen distance.
  function nearest(u, spec, d, left, top) {
    var best = null;
    var bestDist = Infinity;
    var n = d.cols.length;
    var byX = spec.kind === "line" || spec.kind === "spark";
    for (var pass = 0; pass < 2 && best === null; pass++) {
      for (var s = 0; s < n; s++) {
        if (byX && pass === 0 && s !== 0) continue;
        var col = d.cols[s];
        for (var i = 0; i < col.length; i++) {
          if (col[i] === null) continue;
          var dx = u.valToPos(d.xs[i], "x") - left;
          var dist;
          if (byX) {
            dist = Math.abs(dx);
          } else {
            var dy = u.valToPos(col[i], "y") - top;
            dist = dx * dx + dy * dy;
          }
          if (dist < bestDist) {
            bestDist = dist;
            best = { s: s, i: i, orig: d.owner[s][i] };
          }
        }
      }
    }
    return best;
  }

  function tooltipText(spec, d, p) {
    var s = (spec.series || [])[p.s] || {};
    if (p.s === 0 && spec.tooltips && spec.tooltips[p.orig] != null) {
      return String(spec.tooltips[p.orig]);
    }
    var label = s.label ? s.label + ": " : "";
    return label + fmtX(spec, d.xs[p.i]) + ", " + fmt(d.cols[p.s][p.i]);
  }

  // The element's content width (clientWidth less its padding), so the chart fits inside it.
  function innerWidth(el, spark) {
    var cs = window.getComputedStyle(el);
    var pad = (parseFloat(cs.paddingLeft) || 0) + (parseFloat(cs.paddingRight) || 0);
    return Math.max(Math.floor((el.clientWidth || 0) - pad), spark ? 60 : 200);
  }

  function drawChart(el) {
    var spec;
    try {
      spec = JSON.parse(el.dataset.chart);
    } catch (e) {
      el.textContent = "chart: bad data-chart JSON (" + e.message + ")";
      el.classList.add("chart-error");
      return null;
    }
    var kind = spec.kind || "line";
    spec.kind = kind;
    var spark = kind === "spark";
    var d = buildData(spec);

    var seriesOpts = [{ label: spec.x_label || "x", value: function (u, v) { return v == null ? "–" : fmtX(spec, v); } }];
    (spec.series || []).forEach(function (s, si) {
      var color = COLORS[si % COLORS.length];
      var o = {
        label: s.label || "series " + (si + 1),
        stroke: color,
        width: spark ? 1.5 : 2,
        spanGaps: true,
        value: function (u, v) {
          return fmt(v);
        },
      };
      if (s.points_only || kind === "scatter") {
        o.points = { show: true, size: spark ? 3 : 7, stroke: color, fill: color };
      } else {
        o.points = { show: !spark && d.xs.length <= 60, size: 5, stroke: color, fill: "#fff" };
      }
      if (s.points_only) {
        o.paths = function () {
          return null;
        };
      }
      seriesOpts.push(o);
    });
    var data = [d.xs].concat(d.cols);
    var bands = [];
    if (d.band) {
      var lo = seriesOpts.length;
      seriesOpts.push({ label: "lower", stroke: "rgba(37,99,235,0.35)", width: 1, spanGaps: true, points: { show: false } });
      seriesOpts.push({ label: "upper", stroke: "rgba(37,99,235,0.35)", width: 1, spanGaps: true, points: { show: false } });
      data.push(d.band.lower, d.band.upper);
      bands.push({ series: [lo + 1, lo], fill: "rgba(37,99,235,0.12)" });
    }

    var xScale = { time: !!spec.x_time };
    if (spec.x_log) {
      xScale.distr = 3;
      xScale.log = 10;
    }
    var yScale = {};
    if (kind === "cdf") yScale.range = [0, 1];

    var width = innerWidth(el, spark);
    var cssH = el.clientHeight || 0;
    var height = spark ? (cssH > 0 ? cssH : 32) : cssH > 120 ? cssH : 280;

    var opts = {
      width: width,
      height: height,
      title: spark ? undefined : spec.title,
      series: seriesOpts,
      bands: bands,
      scales: { x: xScale, y: yScale },
      legend: { show: !spark },
      cursor: spark ? { x: false, y: false, points: { show: false }, drag: { x: false, y: false } } : {},
      axes: spark
        ? [{ show: false }, { show: false }]
        : [
            { label: spec.x_label, labelSize: spec.x_label ? 24 : 0 },
            { label: spec.y_label, labelSize: spec.y_label ? 24 : 0, size: 60 },
          ],
      hooks: { draw: [drawHook(spec, d)] },
    };
    if (spark) {
      opts.padding = [3, 2, 3, 2];
    }

    el.innerHTML = "";
    var u = new uPlot(opts, data, el);

    // Hover text of the nearest point, in a small absolutely positioned div over the plot.
    var tip = document.createElement("div");
    tip.className = "chart-tooltip";
    tip.style.display = "none";
    u.over.appendChild(tip);
    var current = null;
    u.over.addEventListener("mousemove", function (ev) {
      var r = u.over.getBoundingClientRect();
      var left = ev.clientX - r.left;
      var top = ev.clientY - r.top;
      current = nearest(u, spec, d, left, top);
      if (!current) {
        tip.style.display = "none";
        return;
      }
      tip.textContent = tooltipText(spec, d, current);
      tip.style.display = "block";
      var px = u.valToPos(d.xs[current.i], "x");
      var py = u.valToPos(d.cols[current.s][current.i], "y");
      var tw = tip.offsetWidth;
      var x = px + 10 + tw > r.width ? px - 10 - tw : px + 10;
      tip.style.left = Math.max(0, x) + "px";
      tip.style.top = Math.max(0, py - 28) + "px";
      var link = current.s === 0 && spec.links ? spec.links[current.orig] : null;
      u.over.style.cursor = link ? "pointer" : "";
    });
    u.over.addEventListener("mouseleave", function () {
      tip.style.display = "none";
      current = null;
    });
    // A drag (uPlot's zoom) ends in a click too: only a click that did not move navigates.
    var downAt = null;
    u.over.addEventListener("mousedown", function (ev) {
      downAt = [ev.clientX, ev.clientY];
    });
    u.over.addEventListener("click", function (ev) {
      if (downAt && Math.abs(ev.clientX - downAt[0]) + Math.abs(ev.clientY - downAt[1]) > 4) return;
      var r = u.over.getBoundingClientRect();
      var p = nearest(u, spec, d, ev.clientX - r.left, ev.clientY - r.top);
      if (p && p.s === 0 && spec.links && spec.links[p.orig]) {
        window.location.href = spec.links[p.orig];
      }
    });

    window.addEventListener("resize", function () {
      var w = innerWidth(el, spark);
      if (w !== u.width) u.setSize({ width: w, height: u.height });
    });
    el.classList.add("chart-drawn");
    return u;
  }

  // ---- sortable tables ----

  function cellKey(cell) {
    if (!cell) return "";
    var raw = cell.getAttribute("data-sort");
    return raw !== null ? raw : cell.textContent.trim();
  }

  function asNumber(s) {
    // "512.3 ms", "1,234", "+3.2%", "×1.05" all sort by their leading number.
    var m = /^\s*[×~≈$]?\s*([+\-−]?(?:\d[\d,]*)?\.?\d+(?:e[+\-]?\d+)?)/i.exec(s);
    if (!m) return NaN;
    return parseFloat(m[1].replace(/,/g, "").replace("−", "-"));
  }

  // Sorts each tbody of the table on its own (a table grouped into several tbody elements,
  // like the alerts list, keeps its groups), stably, numbers numerically when every
  // non-empty cell of the column starts with one.
  function sortTable(table, col, th) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var headRow = th.parentNode;
    Array.prototype.forEach.call(table.tBodies, function (tbody) {
      var rows = Array.prototype.slice.call(tbody.rows).filter(function (r) {
        return r !== headRow;
      });
      var keyed = rows.map(function (row, i) {
        var k = cellKey(row.cells[col]);
        return { row: row, k: k, n: asNumber(k), i: i };
      });
      var numeric = keyed.every(function (r) {
        return r.k === "" || !isNaN(r.n);
      });
      keyed.sort(function (a, b) {
        var c;
        if (numeric) {
          // Empty cells last in either direction.
          if (isNaN(a.n) !== isNaN(b.n)) return isNaN(a.n) ? 1 : -1;
          c = isNaN(a.n) ? 0 : a.n < b.n ? -1 : a.n > b.n ? 1 : 0;
        } else {
          c = a.k.localeCompare(b.k, undefined, { numeric: true, sensitivity: "base" });
        }
        return (asc ? c : -c) || a.i - b.i;
      });
      keyed.forEach(function (r) {
        tbody.appendChild(r.row);
      });
    });
    Array.prototype.forEach.call(headRow.cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  }

  function makeSortable(table) {
    var head = table.tHead ? table.tHead.rows[0] : table.rows[0];
    if (!head) return;
    Array.prototype.forEach.call(head.cells, function (th, col) {
      th.classList.add("sort-header");
      th.setAttribute("tabindex", "0");
      th.addEventListener("click", function () {
        sortTable(table, col, th);
      });
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          sortTable(table, col, th);
        }
      });
    });
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll(".chart[data-chart]"), function (el) {
      try {
        drawChart(el);
      } catch (e) {
        el.classList.add("chart-error");
        el.textContent = "chart failed: " + e.message;
        if (window.console) console.error(e);
      }
    });
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), makeSortable);
    // Timestamps in unix milliseconds (`.time[data-ms]`) read as local date and time; the
    // exact value stays in the title.
    Array.prototype.forEach.call(document.querySelectorAll(".time[data-ms]"), function (el) {
      var ms = Number(el.getAttribute("data-ms"));
      if (!isFinite(ms) || el.getAttribute("data-ms") === "") return;
      var d = new Date(ms);
      var pad = function (n) {
        return (n < 10 ? "0" : "") + n;
      };
      el.title = d.toISOString();
      if (!el.hasAttribute("data-sort")) el.setAttribute("data-sort", String(ms));
      el.textContent =
        d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
    });
  }

  window.dyno = { drawChart: drawChart, sortTable: sortTable };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
