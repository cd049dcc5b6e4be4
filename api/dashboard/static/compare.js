"use strict";
// Compare page: overlaid worst-case accuracy–ε curves (one per job) and worst-case AUC (over the shared ε
// grid) against compute.

document.addEventListener("DOMContentLoaded", () => {
  const data = Dash.embedded("compare-data");
  if (!data) return;
  const label = (row) => `${row.model_name} ${row.model_version} (#${row.job_id})`;
  const curves = data.rows.map((row, i) => ({
    type: "scatter", mode: "lines+markers", name: label(row), x: data.eps_255, y: row.worst_case_accuracy,
    customdata: data.eps, connectgaps: true, line: { color: Charts.colors[i % Charts.colors.length], width: 2.5 },
    hovertemplate: `${label(row)}<br>ε = %{x:.3~f}/255 (%{customdata:.4f})<br>worst-case accuracy %{y:.1%}<extra></extra>`,
  }));
  Charts.draw(document.getElementById("compare-curve"), curves, Charts.layout({
    xaxis: Charts.epsAxis(data.eps_255), yaxis: Charts.rateAxis("worst-case accuracy (% of samples)"),
  }));

  const placed = data.rows.filter((row) => row.macs !== null && row.worst_case_auc !== null);
  const macs = placed.map((row) => row.macs);
  const logScale = macs.length > 1 && Math.max(...macs) / Math.min(...macs) > 20;
  // Room around the points, so their labels are not cut at the plot's edges.
  const top = Math.max(...macs, 1);
  const range = logScale ? [Math.log10(Math.min(...macs)) - 0.3, Math.log10(top) + 0.3] : [0, top * 1.25];
  Charts.draw(document.getElementById("compare-scatter"), [{
    type: "scatter", mode: "markers+text", x: macs, y: placed.map((row) => row.worst_case_auc),
    text: placed.map((row) => `${row.model_name} ${row.model_version}`), textposition: "top center",
    cliponaxis: false, customdata: placed.map((row) => row.job_id),
    marker: { size: 13, color: placed.map((_, i) => Charts.colors[i % Charts.colors.length]) },
    hovertemplate: "%{text} (#%{customdata})<br>%{x:,.0f} MACs per image<br>worst-case AUC %{y:.3f}<extra></extra>",
    name: "jobs",
  }], Charts.layout({
    showlegend: false,
    xaxis: { title: { text: "compute: MACs per image (multiply–accumulates)" }, type: logScale ? "log" : "linear",
             range, automargin: true },
    yaxis: { title: { text: "worst-case AUC over the shared ε (0–1)" }, range: [0, 1.08], automargin: true },
  }));
});
