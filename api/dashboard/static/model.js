"use strict";
// Model page: worst-case AUC (over the ε grid every version on the dataset swept) and clean accuracy of every
// version, one pair of lines per dataset.

document.addEventListener("DOMContentLoaded", () => {
  const rows = Dash.embedded("versions-data");
  if (!rows || rows.length === 0) return;
  const datasets = [...new Set(rows.map((row) => row.dataset))];
  const traces = datasets.flatMap((dataset, i) => {
    const mine = rows.filter((row) => row.dataset === dataset);
    const color = Charts.colors[i % Charts.colors.length];
    const line = (key, name, dash) => ({
      type: "scatter", mode: "lines+markers", name: `${name} (${dataset})`, x: mine.map((row) => row.version),
      y: mine.map((row) => row[key]), customdata: mine.map((row) => row.job_id), line: { color, dash },
      marker: { size: 9 },
      hovertemplate: `%{x}: ${name} %{y:.3f} (job #%{customdata})<extra></extra>`,
    });
    return [line("worst_case_auc", "worst-case AUC", "solid"), line("clean_accuracy", "clean accuracy", "dot")];
  });
  Charts.draw(document.getElementById("versions-chart"), traces, Charts.layout({
    xaxis: { title: { text: "model version" }, type: "category", automargin: true },
    yaxis: { title: { text: "score (fraction, 0–1)" }, range: [0, 1.05], automargin: true },
  }));
});
