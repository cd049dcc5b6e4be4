"""The dashboard in headless chromium against `advaudit serve`: load, read, submit, watch, compare, 404."""

from __future__ import annotations

from tests.support.browser import (
    DEMO_MODELS,
    JOB_CONFIG,
    TIMEOUT_MS,
    VIEWPORT,
    PageWatch,
    open_clean,
    plot_traces,
    screenshot,
)

# The `server`, `browser` and `signed_in` fixtures live in conftest.py: one server for every browser test file.


def test_every_page_loads_without_errors(signed_in, server):
    first, second = (job["id"] for job in server.jobs)
    pages = {
        "overview": "/",
        "job": f"/jobs/{first}",
        "model-gap-cnn": f"/models/{server.models[0]['id']}",
        "model-dilated-cnn": f"/models/{server.models[1]['id']}",
        "new-evaluation": "/evaluations/new",
        "compare-chooser": "/compare",
        "compare-jobs": f"/compare?job_ids={first},{second}",
    }
    for name, path in pages.items():
        page = open_clean(signed_in, server.url + path, name)
        titles = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].map(plot => [
            plot.id, plot.layout.xaxis.title.text || '', plot.layout.yaxis.title.text || ''])""")
        for plot_id, x_title, y_title in titles:
            assert x_title and y_title, f"{name}: chart {plot_id} lacks an axis title"
        page.close()


def test_report_page_draws_one_curve_per_attack(signed_in, server):
    page = open_clean(signed_in, f"{server.url}/jobs/{server.jobs[0]['id']}", "job-report")
    curves = plot_traces(page, "accuracy-curve")
    assert [trace["name"] for trace in curves] == ["FGSM", "PGD", "worst case", "targeted FGSM (next)"]
    assert all(trace["points"] == len(JOB_CONFIG["eps"]) for trace in curves)
    assert len(plot_traces(page, "success-curve")) == 2
    assert plot_traces(page, "min-eps-histogram")[0]["points"] == len(JOB_CONFIG["eps"]) + 1  # + never fooled
    assert len(plot_traces(page, "per-class-heatmap")) == 1
    assert page.locator("#headline .tile").count() >= 1 + len(JOB_CONFIG["eps"])
    cards = page.locator("#cam-cards .cam-card")
    assert cards.count() == JOB_CONFIG["cam_samples"]
    # the triptychs load lazily, below the attack and sanity tables: bring them into view first
    page.locator("#triptychs").scroll_into_view_if_needed()
    page.wait_for_function(
        "n => [...document.querySelectorAll('#triptychs img')].filter(img => img.complete && img.naturalWidth > 0)"
        ".length === n",
        arg=JOB_CONFIG["triptychs"],
        timeout=TIMEOUT_MS,
    )
    loaded = page.evaluate(
        "() => [...document.querySelectorAll('#report img')].length + "
        "[...document.querySelectorAll('#cam-gallery img, #triptychs img')]"
        ".filter(img => img.complete && img.naturalWidth > 0).length"
    )
    assert loaded == 2 * JOB_CONFIG["cam_samples"] + JOB_CONFIG["triptychs"]
    similarity = [
        float(value) for value in cards.evaluate_all("cards => cards.map(c => c.dataset.similarity)")
    ]
    assert similarity == sorted(similarity)  # most drift (lowest correlation) first
    page.select_option("#cam-sort", "index")
    indices = [int(value) for value in cards.evaluate_all("cards => cards.map(c => c.dataset.index)")]
    assert indices == sorted(indices)
    report = page.request.get(f"{server.url}/api/v1/jobs/{server.jobs[0]['id']}/report")
    assert report.ok and report.json()["schema_version"] == 3  # the download link works with the cookie


def test_submit_an_evaluation_and_watch_it_finish_without_reloading(signed_in, server):
    page = signed_in.new_page()
    watch = PageWatch(page)
    page.goto(f"{server.url}/evaluations/new", wait_until="networkidle")
    page.select_option("#model_id", str(server.models[1]["id"]))
    page.wait_for_selector("#cam option[value='features.7']", state="attached")  # the model's conv layers
    page.fill("#eps", "0,4/255,16/255")
    page.fill("#limit", "40")
    page.fill("#cam_samples", "2")
    page.select_option("#device", "cpu")
    page.click("#submit-evaluation")
    page.wait_for_url(f"{server.url}/jobs/*")
    screenshot(page, "job-live")
    page.evaluate("() => { window.notReloaded = true; }")
    status = page.locator("#job-live [data-role=status]")
    page.wait_for_function(
        "() => document.querySelector('#job-live').dataset.status === 'succeeded'", timeout=120_000
    )
    assert status.inner_text() == "succeeded"
    page.wait_for_selector("#accuracy-curve .main-svg")
    assert page.evaluate("() => window.notReloaded === true"), "the page reloaded"
    # no targeted attack: FGSM, PGD (the default attacks) and their per-sample worst case
    assert [trace["name"] for trace in plot_traces(page, "accuracy-curve")] == ["FGSM", "PGD", "worst case"]
    assert page.locator("#cancel-job").is_hidden() and page.locator("#rerun-job").is_visible()
    page.wait_for_load_state("networkidle")
    watch.assert_clean("live job page")
    screenshot(page, "job-finished-live")
    page.close()


def test_compare_two_demo_models(signed_in, server):
    page = open_clean(signed_in, f"{server.url}/compare", "compare-empty")
    page.select_option("#compare-dataset", str(server.digits["id"]))
    for model in server.models:
        page.check(f"#compare-models input[name=model_ids][value='{model['id']}']")
    page.click("#compare-models button[type=submit]")
    page.wait_for_selector("#compare-curve .main-svg")
    page.wait_for_load_state("networkidle")
    curves = plot_traces(page, "compare-curve")
    eps_columns = page.locator("#leaderboard thead th[title^='worst-case accuracy at ε =']").count()
    assert len(curves) == 2 and all(trace["points"] == eps_columns >= 3 for trace in curves)
    assert {trace["name"].split()[0] for trace in curves} == set(DEMO_MODELS)
    assert page.locator("#leaderboard tbody tr").count() == 2
    assert plot_traces(page, "compare-scatter")[0]["points"] == 2
    screenshot(page, "compare")
    page.close()


def test_unknown_ids_get_a_404_page(signed_in, server):
    page = signed_in.new_page()
    for path, message in (
        ("/jobs/999999", "Job 999999 does not exist"),
        ("/models/abc", "does not exist"),
        ("/no/such/page", "There is no page at /no/such/page"),
    ):
        response = page.goto(server.url + path)
        assert response.status == 404 and message in page.inner_text("#error-detail")
    screenshot(page, "not-found")
    page.close()


def test_a_wrong_token_is_explained(browser, server):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{server.url}/")
    page.fill("#token", "not-a-token")
    page.click("#sign-in")
    assert "invalid or was revoked" in page.inner_text("#login-error")
    assert not any(cookie["name"] == "advaudit_token" for cookie in context.cookies())
    context.close()
