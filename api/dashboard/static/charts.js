"use strict";
// Plotly conventions of the dashboard: ε axes labelled in /255 and in absolute pixel units, rates in %.

const Charts = {
  colors: ["#1d4ed8", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"],
  // Red where the attack wins, green where the model holds.
  accuracyScale: [[0, "#b91c1c"], [0.5, "#fbbf24"], [1, "#15803d"]],
  config: { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] },

  /** "8/255" for 8, trimmed to at most two decimals. */
  per255(value) { return `${Number(value.toFixed(2))}/255`; },

  /** Tick label with both units: "8/255" over "0.0314". */
  epsTick(value255) { return `${Charts.per255(value255)}<br>${(value255 / 255).toFixed(4)}`; },

  /** At most `count` ticks spread over the sorted ε values (×255), always keeping the first and last. */
  pickTicks(values, count = 8) {
    const unique = [...new Set(values)].sort((a, b) => a - b);
    if (unique.length <= count) return unique;
    const step = (unique.length - 1) / (count - 1);
    return [...new Set(Array.from({ length: count }, (_, i) => unique[Math.round(i * step)]))];
  },

  /** An x axis over ε (values ×255) whose ticks read in both units. */
  epsAxis(values255, title = "ε — per 255 (top) and absolute in the [0, 1] pixel range (bottom)") {
    const ticks = Charts.pickTicks(values255);
    return { title: { text: title }, tickmode: "array", tickvals: ticks, ticktext: ticks.map(Charts.epsTick),
             zeroline: false, automargin: true };
  },

  rateAxis(title) {
    return { title: { text: title }, tickformat: ".0%", range: [-0.02, 1.04], zeroline: false, automargin: true };
  },

  layout(extra = {}) {
    return {
      margin: { l: 64, r: 16, t: 12, b: 64 }, font: { family: "system-ui, sans-serif", size: 12, color: "#1c2430" },
      legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" }, hovermode: "closest",
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fff", ...extra,
    };
  },

  /** One line over ε: x = ε×255, hover shows both units and the rate. */
  epsLine(points, key, name, options = {}) {
    return {
      type: "scatter", mode: "lines+markers", name,
      x: points.map((p) => p.eps * 255), y: points.map((p) => p[key]), customdata: points.map((p) => p.eps),
      hovertemplate: `ε = %{x:.3~f}/255 (%{customdata:.4f})<br>${options.what || name}: %{y:.1%}<extra></extra>`,
      connectgaps: true, ...options.trace,
    };
  },

  draw(element, traces, layout) {
    if (!element || typeof Plotly === "undefined") return;
    Plotly.newPlot(element, traces, layout, Charts.config);
  },
};
