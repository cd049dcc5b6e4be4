"use strict";
// Audit and audit-run pages: the timeline of judged runs, and live status while a run is pending or running.

const RUN_POLL_MS = 1500;
const RUN_MAX_BACKOFF_MS = 15000;
const REGRESSED_COLOR = "#b91c1c";
const ERROR_COLOR = "#6b7280";
const HOVER_LINE_CHARS = 80;

/** A run's reason as hover text: HTML-escaped (Plotly reads tags in hover labels) and wrapped into lines. */
function hoverText(text) {
  const escaped = (text || "no reason recorded").replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  const lines = [];
  let line = "";
  for (const word of escaped.split(" ")) {
    if (line && line.length + word.length > HOVER_LINE_CHARS) { lines.push(line); line = word; }
    else line = line ? `${line} ${word}` : word;
  }
  return [...lines, line].join("<br>");
}

/** Runs that ended in error: grey × at the bottom of the chart, with the reason on hover. */
function errorTrace(errors) {
  return {
    type: "scatter", mode: "markers", name: "error", x: errors.map((p) => p.at), y: errors.map(() => 0),
    customdata: errors.map((p) => [p.run_id, hoverText(p.reason)]),
    marker: { symbol: "x-thin-open", size: 12, color: ERROR_COLOR, line: { width: 2.5, color: ERROR_COLOR } },
    hovertemplate: "run #%{customdata[0]} ended in error:<br>%{customdata[1]}<extra></extra>",
  };
}

/** Robust AUC (solid) and clean accuracy (dotted) per run, one pair of lines per model; regressed runs ringed;
 * runs that ended in error on their own trace. */
function drawTimeline(element, timeline, auditId) {
  const points = timeline.filter((point) => point.verdict !== "error");
  const errors = timeline.filter((point) => point.verdict === "error");
  const models = [...new Set(points.map((point) => point.model))];
  const details = (rows) => rows.map((p) => [p.run_id, p.version, p.verdict, p.job_id]);
  const traces = models.flatMap((model, i) => {
    const mine = points.filter((point) => point.model === model);
    const color = Charts.colors[i % Charts.colors.length];
    const line = (key, name, dash, markRegressed) => ({
      type: "scatter", mode: "lines+markers", name: models.length > 1 ? `${name} (${model})` : name,
      x: mine.map((p) => p.at), y: mine.map((p) => p[key]), customdata: details(mine), line: { color, dash },
      marker: { size: 8, color: mine.map((p) => (markRegressed && (p.regressed || p.suspicious) ? REGRESSED_COLOR : color)) },
      hovertemplate: `run #%{customdata[0]}: ${model} %{customdata[1]}<br>${name} %{y:.1%}`
        + "<br>verdict %{customdata[2]}<extra></extra>",
    });
    return [line("robust_auc", "robust AUC", "solid", true), line("clean_accuracy", "clean accuracy", "dot", false)];
  });
  const regressed = points.filter((point) => point.regressed || point.suspicious);
  if (regressed.length) {
    traces.push({
      type: "scatter", mode: "markers", name: "regressed run", x: regressed.map((p) => p.at),
      y: regressed.map((p) => p.robust_auc), customdata: details(regressed),
      marker: { symbol: "circle-open", size: 20, color: REGRESSED_COLOR, line: { width: 3, color: REGRESSED_COLOR } },
      hovertemplate: "run #%{customdata[0]} %{customdata[2]}: %{customdata[1]}<extra></extra>",
    });
  }
  if (errors.length) traces.push(errorTrace(errors));
  Charts.draw(element, traces, Charts.layout({
    xaxis: { title: { text: "run time (UTC)" }, type: "date", automargin: true },
    yaxis: Charts.rateAxis("clean accuracy and robust AUC (%)"),
  }));
  element.on?.("plotly_click", (event) => {
    const point = event.points && event.points[0];
    if (point && point.customdata) window.location.assign(`/audits/${auditId}/runs/${point.customdata[0]}`);
  });
}

/** Poll `url` until `done(document)` says the page is out of date, then reload it (it renders the result). */
function pollUntil(url, update, done) {
  let delay = RUN_POLL_MS;
  const poll = async () => {
    try {
      const body = await Dash.getJSON(url);
      if (done(body)) { window.location.reload(); return; }
      update(body);
      delay = RUN_POLL_MS;
    } catch (error) {
      if (error.status === 401 || error.status === 404) return;
      delay = Math.min(delay * 2, RUN_MAX_BACKOFF_MS);
    }
    window.setTimeout(poll, delay);
  };
  window.setTimeout(poll, delay);
}

function showRunStatus(container, status) {
  const badge = container.querySelector('[data-role="run-status"]');
  badge.textContent = status;
  badge.className = `badge run-${status}`;
  container.dataset.status = status;
}

/** Audit page: each unfinished run row follows its run; a finished run reloads the page (chart, verdict). */
function followRuns(table) {
  const auditId = table.dataset.auditId;
  table.querySelectorAll('tbody tr[data-run-id]:not([data-status="finished"])').forEach((row) => {
    pollUntil(`/api/v1/audits/${auditId}/runs/${row.dataset.runId}`,
      (run) => showRunStatus(row, run.status), (run) => run.status === "finished");
  });
}

/** Run page: job rows show progress; new jobs or the verdict reload the page. */
function followRun(section) {
  const jobRows = () => [...document.querySelectorAll("#run-jobs-table tbody tr[data-job-id]")];
  const known = jobRows().length;
  pollUntil(`/api/v1/audits/${section.dataset.auditId}/runs/${section.dataset.runId}`, (run) => {
    showRunStatus(section, run.status);
    const byId = new Map(run.jobs.map((job) => [String(job.job_id), job]));
    jobRows().forEach((row) => { if (byId.has(row.dataset.jobId)) Dash.showJob(row, byId.get(row.dataset.jobId)); });
  }, (run) => run.status === "finished" || run.jobs.length !== known);
}

document.addEventListener("DOMContentLoaded", () => {
  const timeline = document.getElementById("audit-timeline");
  const runs = document.getElementById("runs-table");
  if (timeline) drawTimeline(timeline, Dash.embedded("timeline-data"), runs.dataset.auditId);
  if (runs) followRuns(runs);
  const section = document.getElementById("run-live");
  if (section && section.dataset.status !== "finished") followRun(section);
});
