"use strict";
// The report part of a job page: curves, histogram, per-class heat map and the sortable CAM gallery.

const Report = {
  init(root = document) {
    const data = Dash.embedded("report-data", root);
    if (!data) return;
    Report.accuracy(root.querySelector("#accuracy-curve"), data);
    Report.success(root.querySelector("#success-curve"), data);
    Report.minimalEps(root.querySelector("#min-eps-histogram"), data.minimal_eps);
    Report.perClass(root.querySelector("#per-class-heatmap"), data);
    Report.gallery(root.querySelector("#cam-gallery"));
  },

  /** One trace per attack, the worst case in bold; the clean accuracy is a reference line, not a trace. */
  accuracy(element, data) {
    const traces = [Charts.epsLine(data.fgsm, "accuracy", "FGSM",
      { what: "accuracy under FGSM", trace: { line: { color: Charts.colors[0], width: 2.5 } } })];
    // Version 2 reports: every other untargeted attack, and the per-sample worst case over them (bold).
    const others = (data.attacks || []).filter((entry) => !entry.targeted && entry.name !== "fgsm");
    others.forEach((entry, i) => {
      traces.push(Charts.epsLine(entry.points, "accuracy", entry.name.toUpperCase(),
        { what: `accuracy under ${entry.name.toUpperCase()}`,
          trace: { line: { color: Charts.colors[(i + 2) % Charts.colors.length], width: 2 } } }));
    });
    if (data.robust && data.robust.points) {
      traces.push(Charts.epsLine(data.robust.points, "accuracy", "worst case",
        { what: "worst-case accuracy (every attack failed)", trace: { line: { color: "#111827", width: 4 } } }));
    }
    if (data.targeted) {
      traces.push(Charts.epsLine(data.targeted.points, "accuracy", `targeted FGSM (${data.targeted.policy})`,
        { what: "accuracy under targeted FGSM", trace: { line: { color: Charts.colors[1], width: 2.5 } } }));
    }
    const all = traces.flatMap((trace) => trace.x);
    Charts.draw(element, traces, Charts.layout({
      xaxis: Charts.epsAxis(all), yaxis: Charts.rateAxis("accuracy (% of samples)"),
      shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: data.clean_accuracy, y1: data.clean_accuracy,
                 line: { dash: "dot", color: "#667085", width: 1 } }],
      annotations: [{ xref: "paper", x: 1, y: data.clean_accuracy, yanchor: "bottom", xanchor: "right",
                      showarrow: false, text: `clean ${Dash.pct(data.clean_accuracy)}`, font: { color: "#667085" } }],
    }));
  },

  success(element, data) {
    const traces = [Charts.epsLine(data.fgsm, "attack_success_rate", "FGSM attack success",
      { what: "attack success (clean-correct samples fooled)", trace: { line: { color: Charts.colors[0] } } })];
    if (data.targeted) {
      traces.push(Charts.epsLine(data.targeted.points, "target_success_rate",
        `targeted FGSM target success (${data.targeted.policy})`,
        { what: "target success (predicted as the target)", trace: { line: { color: Charts.colors[1] } } }));
    }
    Charts.draw(element, traces, Charts.layout({
      xaxis: Charts.epsAxis(traces.flatMap((trace) => trace.x)), yaxis: Charts.rateAxis("success rate (%)"),
    }));
  },

  minimalEps(element, summary) {
    if (!summary) return;
    const eps = summary.histogram.eps.map((value) => value * 255);
    const labels = eps.map(Charts.epsTick).concat(["never<br>fooled"]);
    const counts = summary.histogram.counts.concat([summary.never_fooled]);
    const colors = eps.map(() => Charts.colors[0]).concat(["#94a3b8"]);
    Charts.draw(element, [{
      type: "bar", x: labels, y: counts, marker: { color: colors }, name: "samples",
      hovertemplate: "minimal ε %{x}<br>%{y} samples<extra></extra>",
    }], Charts.layout({
      xaxis: { title: { text: "smallest swept ε that fools the sample (per 255 / absolute)" }, type: "category",
               automargin: true },
      yaxis: { title: { text: "clean-correct samples (count)" }, rangemode: "tozero", automargin: true },
      showlegend: false, bargap: 0.25,
    }));
  },

  perClass(element, data) {
    const rows = data.per_class.filter((row) => row.count > 0);
    const x = data.fgsm.map((p) => Charts.epsTick(p.eps * 255));
    const y = rows.map((row) => `${row.name} (n=${row.count})`);
    const z = rows.map((row) => row.accuracy);
    element.style.height = `${Math.max(300, 120 + 26 * rows.length)}px`;
    Charts.draw(element, [{
      type: "heatmap", x, y, z, zmin: 0, zmax: 1, colorscale: Charts.accuracyScale, xgap: 2, ygap: 2,
      texttemplate: rows.length * x.length <= 400 ? "%{z:.0%}" : "", textfont: { size: 11 },
      colorbar: { title: { text: "robust<br>accuracy" }, tickformat: ".0%" },
      hovertemplate: "class %{y}<br>ε %{x}<br>accuracy %{z:.1%}<extra></extra>",
    }], Charts.layout({
      xaxis: { title: { text: "FGSM ε (per 255 / absolute)" }, type: "category", automargin: true },
      yaxis: { title: { text: "true class" }, type: "category", autorange: "reversed", automargin: true },
    }));
  },

  /** Sort the CAM cards by drift (low map correlation first), stability, or sample index. */
  gallery(section) {
    if (!section) return;
    const select = section.querySelector("#cam-sort");
    const container = section.querySelector("#cam-cards");
    const similarity = (card) => (card.dataset.similarity === "" ? null : Number(card.dataset.similarity));
    // Constant maps have no correlation: they go last in either direction.
    const bySimilarity = (direction) => (a, b) => {
      const [x, y] = [similarity(a), similarity(b)];
      if (x === null || y === null) return (x === null) - (y === null);
      return direction * (x - y);
    };
    const orders = {
      drift: bySimilarity(1), stable: bySimilarity(-1),
      index: (a, b) => Number(a.dataset.index) - Number(b.dataset.index),
    };
    const apply = () => {
      const cards = [...container.children].sort(orders[select.value] || orders.drift);
      cards.forEach((card) => container.appendChild(card));
    };
    select.addEventListener("change", apply);
    apply();
  },
};

window.Report = Report;
document.addEventListener("DOMContentLoaded", () => Report.init(document));
