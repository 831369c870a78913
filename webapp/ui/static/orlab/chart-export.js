/* Chart PNGs that stand on their own (issue 16 point 7): plotly's image of the plot (its axes, with
   a y axis label added for the export) composed on a canvas under a title and over a legend, so a
   PNG pasted into a report still says what it shows and which line is which run.

   window.orlabChartExport.png(plotDiv, {title, legend: [{name, color}], yLabel, filename}) downloads
   <filename>.png and resolves to the composed canvas; .compose(plotDiv, opts) only composes it. Used
   by the run page (run.js); the compare page may use it too. */
(function () {
  "use strict";
  const SCALE = 2; // crisp in slides and on high-density screens
  const FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif";
  const PAD = 12;
  const TITLE_PX = 15;
  const LEGEND_PX = 12;
  const LEGEND_ROW = 20;
  const SWATCH = 18;

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("plotly's image could not be decoded"));
      img.src = url;
    });
  }

  /* The legend's entries laid out in rows that fit the width: [[{name, color, x}], ...]. */
  function legendRows(ctx, legend, width) {
    const rows = [];
    let row = [];
    let x = PAD;
    for (const item of legend) {
      const w = SWATCH + 6 + ctx.measureText(item.name).width + 16;
      if (row.length && x + w > width - PAD) {
        rows.push(row);
        row = [];
        x = PAD;
      }
      row.push({ ...item, x });
      x += w;
    }
    if (row.length) rows.push(row);
    return rows;
  }

  /* A title too wide for the image is cut with an ellipsis rather than drawn past the edge. */
  function fit(ctx, text, width) {
    if (ctx.measureText(text).width <= width) return text;
    let cut = text;
    while (cut.length > 1 && ctx.measureText(`${cut}…`).width > width) cut = cut.slice(0, -1);
    return `${cut}…`;
  }

  async function compose(plotDiv, opts) {
    opts = opts || {};
    const width = Math.max(320, Math.round(plotDiv.clientWidth || 800));
    const height = Math.max(200, Math.round(plotDiv.clientHeight || 320));
    // a copy of the figure: the page's chart keeps its layout (no y title, its legend setting)
    const layout = JSON.parse(JSON.stringify(plotDiv.layout || {}));
    layout.showlegend = false; // the composed legend below names every line, whatever the chart showed
    layout.paper_bgcolor = "#ffffff";
    layout.margin = { ...(layout.margin || {}), l: 72, t: 10 };
    if (opts.yLabel) layout.yaxis = { ...(layout.yaxis || {}), title: { text: window.orlab.plotText(opts.yLabel), standoff: 6 } };
    if (!layout.xaxis || !layout.xaxis.title) layout.xaxis = { ...(layout.xaxis || {}), title: { text: "step" } };
    const url = await Plotly.toImage({ data: plotDiv.data, layout }, { format: "png", width, height, scale: SCALE });
    const img = await loadImage(url);

    const measure = document.createElement("canvas").getContext("2d");
    measure.font = `${LEGEND_PX}px ${FONT}`;
    const rows = legendRows(measure, opts.legend || [], width);
    const titleH = opts.title ? TITLE_PX + 2 * PAD : 0;
    const legendH = rows.length ? rows.length * LEGEND_ROW + PAD : 0;

    const canvas = document.createElement("canvas");
    canvas.width = width * SCALE;
    canvas.height = (titleH + height + legendH) * SCALE;
    const ctx = canvas.getContext("2d");
    ctx.scale(SCALE, SCALE);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, titleH + height + legendH);
    if (opts.title) {
      ctx.fillStyle = "#111827";
      ctx.font = `600 ${TITLE_PX}px ${FONT}`;
      ctx.textBaseline = "middle";
      ctx.fillText(fit(ctx, opts.title, width - 2 * PAD), PAD, titleH / 2);
    }
    ctx.drawImage(img, 0, titleH, width, height);
    ctx.font = `${LEGEND_PX}px ${FONT}`;
    ctx.textBaseline = "middle";
    rows.forEach((row, i) => {
      const y = titleH + height + PAD / 2 + i * LEGEND_ROW + LEGEND_ROW / 2;
      for (const item of row) {
        ctx.strokeStyle = item.color || "#2563eb";
        ctx.lineWidth = 3;
        ctx.beginPath();
        ctx.moveTo(item.x, y);
        ctx.lineTo(item.x + SWATCH, y);
        ctx.stroke();
        ctx.fillStyle = "#374151";
        ctx.fillText(item.name, item.x + SWATCH + 6, y);
      }
    });
    canvas.dataset.titleHeight = String(titleH * SCALE); // what a test reads back
    canvas.dataset.legendHeight = String(legendH * SCALE);
    canvas.dataset.plotHeight = String(height * SCALE);
    return canvas;
  }

  async function png(plotDiv, opts) {
    const canvas = await compose(plotDiv, opts);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    window.orlab.downloadBlob(blob, `${(opts && opts.filename) || "orlab-chart"}.png`);
    return canvas;
  }

  window.orlabChartExport = { png, compose };
})();
