"use strict";
// Helpers shared by every dashboard page: JSON calls to /api/v1 (the cookie authenticates them) and formats.

const Dash = {
  /** JSON of a GET or POST to our API; throws an Error carrying the problem+json detail. */
  async request(method, url) {
    let response;
    try {
      response = await fetch(url, { method, headers: { Accept: "application/json" }, credentials: "same-origin" });
    } catch (error) {
      throw new Error("the server cannot be reached; retrying");
    }
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try { detail = (await response.json()).detail || detail; } catch (ignored) { /* not JSON */ }
      const error = new Error(response.status === 401 ? "your sign-in expired: reload the page to sign in" : detail);
      error.status = response.status;
      throw error;
    }
    return response.json();
  },
  getJSON(url) { return Dash.request("GET", url); },
  postJSON(url) { return Dash.request("POST", url); },

  /** The JSON a page embeds in <script type="application/json" id=…>, or null. */
  embedded(id, root = document) {
    const element = root.querySelector(`#${id}`);
    return element ? JSON.parse(element.textContent) : null;
  },

  pct(value, digits = 1) {
    return value === null || value === undefined ? "—" : `${(100 * value).toFixed(digits)} %`;
  },

  isActive(status) { return status === "queued" || status === "running"; },

  /** Show a job's status and progress in a container holding data-role="status" / "progress" elements. */
  showJob(container, job) {
    const badge = container.querySelector('[data-role="status"]');
    if (badge) {
      badge.textContent = job.status;
      badge.className = `badge status-${job.status}`;
    }
    const bar = container.querySelector('[data-role="progress"]');
    if (bar) {
      const percent = Math.round(job.progress * 1000) / 10;
      bar.setAttribute("aria-valuenow", String(Math.round(percent)));
      const fill = bar.querySelector(".progress-fill");
      fill.style.width = `${percent}%`;
      fill.className = `progress-fill status-${job.status}`;
    }
    container.dataset.status = job.status;
  },
};
