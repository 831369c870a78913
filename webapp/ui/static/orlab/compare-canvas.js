/* The compare page's lines on a <canvas> over plotly's plot area (issue 12 point 8).

   Why: plotly costs ~1 ms per trace before it draws a point (its defaults pass) and re-rasterises
   every SVG path on any change, so a chart of 50 runs took 100-150 ms to draw on a quiet machine
   (10 charts could not draw in 1 s) and every smoothing step or legend click re-rasterised 50 paths
   per chart. Here plotly keeps what it is good at (axes, ticks, grid, zoom/pan/double-click reset,
   the modebar, resizing) for a chart with one invisible trace that spans the data's x and y (so its
   autorange is the data's), and this layer draws every line, band and marker on one canvas placed
   over the plot area, with the axes' own transforms, after every plotly draw (zoom, pan, resize).
   A smoothing step or a legend click repaints the canvas only: no plotly work at all.

   A line is a plain object in plotly's trace shape, so the page's code and its tests read them the
   same way: {x, y, name, visible, line: {color, width}, opacity, fill: "tonexty" (filled down to the
   line before it), fillcolor, meta, hover: {title, subtitle, what} (hoverable lines only; what:
   text after the value or a function of the point's index)}. A mark is a
   vertical line at an x: {x, color, dash: "dot" | "dash", visible, hover (text) | null, event}.

   window.orlab.lineLayer:
     rangeTrace(lines, logx, logy)   plotly's invisible trace spanning the visible data
     set(plot, lines, marks, opts)   what the canvas draws (opts.xLabel, opts.xFormat for hover)
     paint(plot)                     draw now (after a plotly draw, a smoothing step, a legend click)
     toPng(plot, title, legend)      the chart as a PNG data URL: plotly's axes + the canvas + legend */
(function () {
  "use strict";
  const o = (window.orlab = window.orlab || {});
  const CLAMP = 1e5; // canvas coordinates stay sane for far-off points (the canvas clips them)
  const HOVER_PX = 30; // nearest point within this many pixels of the cursor
  const MARK_PX = 4;

  /* Data to pixels within the plot area: plotly's l2p (p = _b + _m * l) with l = log10(v) on log
     axes and l = v on linear and date axes (dates in ms); from the axis as plotly last drew it. */
  function toPixels(ax) {
    const m = ax._m;
    const b = ax._b;
    if (ax.type === "log") return (v) => (v > 0 ? b + m * Math.log10(v) : NaN);
    return (v) => b + m * v;
  }
  function fromPixels(ax) {
    const m = ax._m;
    const b = ax._b;
    if (ax.type === "log") return (p) => 10 ** ((p - b) / m);
    return (p) => (p - b) / m;
  }
  const clamp = (p) => (p > CLAMP ? CLAMP : p < -CLAMP ? -CLAMP : p);
  const finite = (v) => typeof v === "number" && v === v && v !== Infinity && v !== -Infinity;

  /* An invisible two-point trace from the visible data's lowest to highest x and y: plotly
     autoranges on it as it would on the lines themselves (lines only: x tight, y padded). */
  function rangeTrace(lines, logx, logy) {
    let x0 = Infinity;
    let x1 = -Infinity;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (const t of lines) {
      if (t.visible === false) continue;
      const xs = t.x;
      const ys = t.y;
      for (let j = 0; j < xs.length; j++) {
        const x = xs[j];
        const y = ys[j];
        if (!finite(x) || !finite(y) || (logx && x <= 0) || (logy && y <= 0)) continue;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
    const empty = x0 > x1;
    return {
      x: empty ? [] : [x0, x1],
      y: empty ? [] : [y0, y1],
      type: "scatter",
      mode: "lines",
      line: { width: 0, color: "rgba(0,0,0,0)" },
      hoverinfo: "skip",
      showlegend: false,
      name: "range",
    };
  }

  /* Draw lines and marks into ctx, whose origin is the plot area's top left corner. */
  function drawInto(ctx, lines, marks, xa, ya, w, h) {
    const fx = toPixels(xa);
    const fy = toPixels(ya);
    // Widths of at most one device pixel take Skia's hairline path: 50 lines of 200 points
    // rasterised in ~1 ms against 40-50 ms at width 1.8 (2 cores under load); compare.js draws
    // the lines of many runs 1 px wide. Bevel joins: cheaper than round, the same at these widths.
    ctx.lineJoin = "bevel";
    for (let i = 0; i < lines.length; i++) {
      const t = lines[i];
      if (t.visible === false) continue;
      ctx.globalAlpha = t.opacity === undefined ? 1 : t.opacity;
      if (t.fill === "tonexty" && i > 0) fillBetween(ctx, lines[i - 1], t, fx, fy);
      const width = t.line && t.line.width;
      if (!(width > 0)) continue;
      ctx.beginPath();
      const xs = t.x;
      const ys = t.y;
      let open = false;
      for (let j = 0; j < ys.length; j++) {
        const px = fx(xs[j]);
        const py = fy(ys[j]);
        if (!finite(px) || !finite(py)) {
          open = false; // a gap: connectgaps false, as plotly drew them
          continue;
        }
        if (open) ctx.lineTo(clamp(px), clamp(py));
        else ctx.moveTo(clamp(px), clamp(py));
        open = true;
      }
      ctx.strokeStyle = t.line.color;
      ctx.lineWidth = width;
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    for (const m of marks) {
      if (m.visible === false) continue;
      const px = fx(m.x);
      if (!finite(px) || px < -1 || px > w + 1) continue;
      ctx.beginPath();
      ctx.setLineDash(m.dash === "dot" ? [2, 3] : [5, 4]);
      ctx.strokeStyle = m.color;
      ctx.lineWidth = m.event ? 1.5 : 1;
      ctx.moveTo(px, m.event ? 10 : 0);
      ctx.lineTo(px, h);
      ctx.stroke();
      ctx.setLineDash([]);
      if (m.event) {
        // an event's flag: a small triangle at the top, so it reads as an event, not a run's line
        ctx.beginPath();
        ctx.moveTo(px - 5, 0);
        ctx.lineTo(px + 5, 0);
        ctx.lineTo(px, 9);
        ctx.closePath();
        ctx.fillStyle = m.color;
        ctx.fill();
      }
    }
  }

  /* The band between lower (the line before) and upper: one polygon per stretch where both ends
     are finite. */
  function fillBetween(ctx, lower, upper, fx, fy) {
    const n = Math.min(lower.y.length, upper.y.length);
    ctx.fillStyle = upper.fillcolor || "rgba(0,0,0,0.1)";
    let j = 0;
    while (j < n) {
      while (j < n && !(finite(fy(lower.y[j])) && finite(fy(upper.y[j])) && finite(fx(upper.x[j])))) j++;
      const start = j;
      while (j < n && finite(fy(lower.y[j])) && finite(fy(upper.y[j])) && finite(fx(upper.x[j]))) j++;
      if (j - start < 2) continue;
      ctx.beginPath();
      for (let k = start; k < j; k++) {
        const px = clamp(fx(upper.x[k]));
        const py = clamp(fy(upper.y[k]));
        if (k === start) ctx.moveTo(px, py);
        else ctx.lineTo(px, py);
      }
      for (let k = j - 1; k >= start; k--) ctx.lineTo(clamp(fx(lower.x[k])), clamp(fy(lower.y[k])));
      ctx.closePath();
      ctx.fill();
    }
  }

  function stateOf(plot) {
    if (!plot._orlabLayer) {
      const canvas = document.createElement("canvas");
      canvas.className = "orlab-lines";
      canvas.dataset.testid = "chart-canvas";
      const tip = document.createElement("div");
      tip.className = "chart-hover";
      tip.dataset.testid = "chart-hover";
      tip.hidden = true;
      const dot = document.createElement("div");
      dot.className = "chart-hover-dot";
      dot.hidden = true;
      const st = { canvas, tip, dot, lines: [], marks: [], opts: {}, frame: 0 };
      plot._orlabLayer = st;
      plot.addEventListener("mousemove", (event) => hover(plot, event));
      plot.addEventListener("mouseleave", () => hideHover(st));
      plot.addEventListener("mousedown", () => hideHover(st));
    }
    return plot._orlabLayer;
  }
  function later(plot) {
    const st = stateOf(plot);
    if (st.frame) return;
    st.frame = requestAnimationFrame(() => {
      st.frame = 0;
      paint(plot);
    });
  }

  function set(plot, lines, marks, opts) {
    const st = stateOf(plot);
    st.lines = lines;
    st.marks = marks || [];
    st.opts = opts || {};
    plot.orlabLines = lines; // what the chart holds (the CSV export and the tests read it)
    plot.orlabMarks = st.marks;
  }

  /* The canvas sits in plotly's .svg-container right after its first SVG (grid and axes): above
     the grid, below the hover/info layer; it takes no pointer events, so plotly's drag layer under
     it keeps zoom and pan. */
  function attach(plot, st) {
    const container = plot.querySelector(".svg-container");
    if (!container) return false;
    if (st.canvas.parentNode !== container) {
      const first = container.querySelector(".main-svg");
      container.insertBefore(st.canvas, first ? first.nextSibling : null);
      container.appendChild(st.dot);
      container.appendChild(st.tip);
    }
    return true;
  }

  /* Plotly's events come through its own emitter (plot.on), which exists once plotly has drawn the
     element and goes with Plotly.purge: bound after each draw, once per emitter. */
  function listen(plot, st) {
    if (typeof plot.on !== "function" || st.emitter === plot._ev) return;
    st.emitter = plot._ev;
    plot.on("plotly_afterplot", () => paint(plot));
    plot.on("plotly_relayout", () => paint(plot));
    // pan and zoom drags: plotly updates the axes while dragging; follow them once per frame
    plot.on("plotly_relayouting", () => later(plot));
  }

  function paint(plot) {
    const st = stateOf(plot);
    listen(plot, st);
    const fl = plot._fullLayout;
    const xa = fl && fl.xaxis;
    const ya = fl && fl.yaxis;
    if (!xa || !ya || !finite(xa._m) || !finite(ya._m) || !attach(plot, st)) return;
    const w = Math.max(1, Math.round(xa._length));
    const h = Math.max(1, Math.round(ya._length));
    const dpr = window.devicePixelRatio || 1;
    const c = st.canvas;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
      c.style.width = `${w}px`;
      c.style.height = `${h}px`;
    }
    c.style.left = `${xa._offset}px`;
    c.style.top = `${ya._offset}px`;
    // a CPU canvas: where Chromium has no GPU it otherwise draws through software GL
    // (SwiftShader), measured 2-3x slower to rasterise the same lines
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    drawInto(ctx, st.lines, st.marks, xa, ya, w, h);
    plot.dataset.paints = String(Number(plot.dataset.paints || 0) + 1);
  }

  // --- hover: the nearest point of a visible line to the cursor (binary search on x per line) ---
  function nearestIndex(xs, x) {
    let lo = 0;
    let hi = xs.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] <= x) lo = mid;
      else hi = mid;
    }
    return lo;
  }
  function hideHover(st) {
    st.tip.hidden = true;
    st.dot.hidden = true;
  }
  function hover(plot, event) {
    const st = stateOf(plot);
    const fl = plot._fullLayout;
    if (!fl || !fl.xaxis || !st.canvas.isConnected || event.buttons) return hideHover(st);
    const xa = fl.xaxis;
    const ya = fl.yaxis;
    const rect = st.canvas.getBoundingClientRect();
    const cx = event.clientX - rect.left;
    const cy = event.clientY - rect.top;
    if (cx < 0 || cy < 0 || cx > rect.width || cy > rect.height) return hideHover(st);
    const fx = toPixels(xa);
    const fy = toPixels(ya);
    const xAt = fromPixels(xa)(cx);
    let best = null;
    for (const t of st.lines) {
      if (t.visible === false || !t.hover || !t.x.length) continue;
      const j = nearestIndex(t.x, xAt);
      for (const k of [j - 1, j, j + 1, j + 2]) {
        if (k < 0 || k >= t.x.length) continue;
        const px = fx(t.x[k]);
        const py = fy(t.y[k]);
        if (!finite(px) || !finite(py)) continue;
        const d = Math.hypot(px - cx, py - cy);
        if (d <= HOVER_PX && (!best || d < best.d)) best = { d, t, k, px, py };
      }
    }
    const events = st.marks.filter((m) => m.visible !== false && m.hover && Math.abs(fx(m.x) - cx) <= MARK_PX);
    if (!best && !events.length) return hideHover(st);
    const rows = [];
    if (best) {
      const t = best.t;
      const x = t.x[best.k];
      const xText = st.opts.xFormat ? st.opts.xFormat(x) : String(x);
      rows.push({ text: t.hover.title, color: t.line.color, strong: true });
      if (t.hover.subtitle) rows.push({ text: t.hover.subtitle });
      // what: text after the value, or a function of the point's index (a group mean: "of N runs")
      const what = typeof t.hover.what === "function" ? t.hover.what(best.k) : t.hover.what || "";
      rows.push({ text: `${st.opts.xLabel || "x"} ${xText}: ${Number(t.y[best.k]).toPrecision(6)}${what}` });
    }
    for (const m of events) rows.push({ text: m.hover, color: m.color });
    st.tip.replaceChildren(
      ...rows.map((r) => {
        const div = document.createElement("div");
        if (r.color) {
          const sw = document.createElement("span");
          sw.className = "swatch";
          sw.style.background = r.color;
          div.append(sw);
        }
        const span = document.createElement(r.strong ? "strong" : "span");
        span.textContent = r.text; // user text (run names, keys, messages): never markup
        div.append(span);
        return div;
      })
    );
    st.tip.hidden = false;
    const left = st.canvas.offsetLeft;
    const top = st.canvas.offsetTop;
    const flip = cx > rect.width * 0.6;
    st.tip.style.left = flip ? "" : `${left + cx + 14}px`;
    st.tip.style.right = flip ? `${st.canvas.parentNode.clientWidth - left - cx + 14}px` : "";
    st.tip.style.top = `${top + Math.max(0, cy - 10)}px`;
    if (best) {
      st.dot.hidden = false;
      st.dot.style.left = `${left + best.px - 4}px`;
      st.dot.style.top = `${top + best.py - 4}px`;
      st.dot.style.background = best.t.line.color;
    } else {
      st.dot.hidden = true;
    }
  }

  // --- PNG: plotly's image of the axes, the canvas's lines drawn again at that scale, a title and
  // a legend of the visible series ---
  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = reject;
      img.src = url;
    });
  }
  async function toPng(plot, title, legend) {
    const st = stateOf(plot);
    const fl = plot._fullLayout;
    const w = plot.clientWidth || 800;
    const h = plot.clientHeight || 320;
    const scale = 2;
    const axes = await loadImage(await window.Plotly.toImage(plot, { format: "png", width: w, height: h, scale }));
    const titleH = 28;
    const font = "11px system-ui, -apple-system, Segoe UI, Roboto, sans-serif";
    const probe = document.createElement("canvas").getContext("2d");
    probe.font = font;
    // the legend in rows across the width, as many as it needs
    const items = legend.map((it) => ({ ...it, w: 22 + probe.measureText(it.text).width + 14 }));
    const rowH = 16;
    let rows = items.length ? 1 : 0;
    let x = 8;
    for (const it of items) {
      if (x + it.w > w - 8 && x > 8) {
        rows++;
        x = 8;
      }
      it.row = rows - 1;
      it.x = x;
      x += it.w;
    }
    const legendH = rows ? rows * rowH + 10 : 0;
    const out = document.createElement("canvas");
    out.width = w * scale;
    out.height = (titleH + h + legendH) * scale;
    const ctx = out.getContext("2d");
    ctx.scale(scale, scale);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, w, titleH + h + legendH);
    ctx.fillStyle = "#111827";
    ctx.font = "600 13px system-ui, -apple-system, Segoe UI, Roboto, sans-serif";
    ctx.textBaseline = "middle";
    ctx.fillText(title, 8, titleH / 2);
    ctx.drawImage(axes, 0, titleH, w, h);
    if (fl && fl.xaxis && fl.yaxis) {
      const xa = fl.xaxis;
      const ya = fl.yaxis;
      ctx.save();
      ctx.translate(xa._offset, titleH + ya._offset);
      ctx.beginPath();
      ctx.rect(0, 0, xa._length, ya._length);
      ctx.clip();
      drawInto(ctx, st.lines, st.marks, xa, ya, xa._length, ya._length);
      ctx.restore();
    }
    ctx.font = font;
    ctx.textBaseline = "middle";
    for (const it of items) {
      const y = titleH + h + 5 + it.row * rowH + rowH / 2;
      ctx.fillStyle = it.color;
      ctx.fillRect(it.x, y - 2, 16, 4);
      ctx.fillStyle = "#374151";
      ctx.fillText(it.text, it.x + 22, y);
    }
    return out.toDataURL("image/png");
  }

  o.lineLayer = { rangeTrace, set, paint, toPng };
})();
