"use strict";
// Live job status without reloading: the job page follows one job, job tables follow their active rows.

const JOB_POLL_MS = 1000;
const TABLE_POLL_MS = 2000;
const MAX_BACKOFF_MS = 15000;

function followJob(section) {
  const jobId = section.dataset.jobId;
  const errorBox = section.querySelector('[data-role="error"]');
  const actionError = document.getElementById("action-error");
  const cancel = document.getElementById("cancel-job");
  const rerun = document.getElementById("rerun-job");
  let delay = JOB_POLL_MS;

  const showButtons = (status) => {
    cancel.hidden = !Dash.isActive(status);
    rerun.hidden = Dash.isActive(status);
  };
  const showError = (box, message) => {
    box.textContent = message || "";
    box.hidden = !message;
  };

  const loadReport = async () => {
    const response = await fetch(`/jobs/${jobId}/report-section`, { credentials: "same-origin" });
    if (!response.ok) throw new Error("the report could not be loaded: reload the page");
    const target = document.getElementById("report-section");
    target.innerHTML = await response.text();
    window.Report.init(target);
  };

  const render = (job) => {
    Dash.showJob(section, job);
    section.querySelector('[data-role="progress-text"]').textContent = `${Math.round(job.progress * 100)} %`;
    section.querySelector('[data-role="attempts"]').textContent = String(job.attempts);
    if (job.finished_at) {
      section.querySelector('[data-role="finished"]').textContent =
        `${job.finished_at.replace("T", " ").replace(/\.\d+/, "").replace(/(\+00:00|Z)$/, "")} UTC`;
    }
    showError(errorBox, job.error);
    showButtons(job.status);
  };

  const poll = async () => {
    try {
      const job = await Dash.getJSON(`/api/v1/jobs/${jobId}`);
      showError(actionError, "");
      render(job);
      delay = JOB_POLL_MS;
      if (!Dash.isActive(job.status)) {
        if (job.status === "succeeded") await loadReport();
        else document.getElementById("report-pending")?.remove();
        return;
      }
    } catch (error) {
      showError(actionError, error.message);
      if (error.status === 401 || error.status === 404) return;
      delay = Math.min(delay * 2, MAX_BACKOFF_MS);
    }
    window.setTimeout(poll, delay);
  };

  cancel.addEventListener("click", async () => {
    try {
      render(await Dash.postJSON(`/api/v1/jobs/${jobId}/cancel`));
    } catch (error) {
      showError(actionError, error.message);
    }
  });
  rerun.addEventListener("click", async () => {
    try {
      const job = await Dash.postJSON(`/api/v1/jobs/${jobId}/rerun`);
      window.location.assign(`/jobs/${job.id}`);
    } catch (error) {
      showError(actionError, error.message);
    }
  });
  if (Dash.isActive(section.dataset.status)) window.setTimeout(poll, JOB_POLL_MS);
}

function followTable(table) {
  const rows = () => [...table.querySelectorAll("tbody tr[data-job-id]")];
  const active = () => rows().filter((row) => Dash.isActive(row.dataset.status));
  const poll = async () => {
    const ids = active().map((row) => row.dataset.jobId);
    if (ids.length === 0) return;
    try {
      // Active jobs are recent, so the newest page holds them; a row missing from it simply waits.
      const page = await Dash.getJSON("/api/v1/jobs?limit=100");
      const byId = new Map(page.data.map((job) => [String(job.id), job]));
      rows().forEach((row) => { if (byId.has(row.dataset.jobId)) Dash.showJob(row, byId.get(row.dataset.jobId)); });
    } catch (error) {
      if (error.status === 401) return;
    }
    window.setTimeout(poll, TABLE_POLL_MS);
  };
  if (active().length) window.setTimeout(poll, TABLE_POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const section = document.getElementById("job-live");
  if (section) followJob(section);
  document.querySelectorAll("#jobs-table, #model-jobs").forEach(followTable);
});
