"""Features at depth in headless chromium: the job page's gallery and depth-under-attack plot, and the model
page's gallery of its latest job, every picture loaded; screenshots of both sections kept as artifacts."""

from __future__ import annotations

from tests.support.browser import ARTIFACTS, TIMEOUT_MS, open_clean


def _section_screenshot(page, selector: str, name: str) -> None:
    """The section alone, without the sticky top bar painted over it."""
    page.add_style_tag(content=".topbar { position: static !important; }")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(selector).screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _all_pictures_loaded(page, selector: str, count: int) -> None:
    page.locator(selector).first.scroll_into_view_if_needed()
    page.wait_for_function(
        "([selector, n]) => { const images = [...document.querySelectorAll(selector + ' img')];"
        " images.forEach(img => img.scrollIntoView());"
        " return images.length === n && images.every(img => img.complete && img.naturalWidth > 0); }",
        arg=[selector, count],
        timeout=TIMEOUT_MS,
    )


def test_job_page_shows_the_features_at_depth(signed_in, server):
    job_id = server.jobs[0]["id"]
    page = open_clean(signed_in, f"{server.url}/jobs/{job_id}", "job-features-page")
    _all_pictures_loaded(page, "#features", 3 + 1)  # three depth sheets and the depth-under-attack plot
    roles = page.locator("#features .feature-depth").evaluate_all(
        "figures => figures.map(f => f.dataset.role)"
    )
    assert roles == ["low", "mid", "high"]
    widths = page.locator("#features .feature-depth img").evaluate_all(
        "images => images.map(i => i.naturalWidth)"
    )
    shown = page.locator("#features .feature-depth img").evaluate_all(
        "images => images.map(i => i.getBoundingClientRect().width)"
    )
    assert all(width >= 0.75 * natural for width, natural in zip(shown, widths, strict=True))  # not squeezed
    rows = page.locator("#features-under-attack tbody tr")
    assert rows.count() == 3 and "CAM drift" in page.locator("#features-under-attack tfoot").inner_text()
    # the depth-under-attack panel sits beside the sheets, not under them, on a laptop screen
    sheets = page.locator("#features .feature-sheets").bounding_box()
    aside = page.locator("#features-under-attack").bounding_box()
    assert aside["x"] > sheets["x"] + sheets["width"] - 1
    _section_screenshot(page, "#features", "job-features")
    page.close()


def test_model_page_shows_the_gallery_of_its_latest_job(signed_in, server):
    model = server.models[1]
    # other browser tests may have run more jobs of this model: the gallery is its newest succeeded one's
    done = server.api.get("/jobs", params={"model_id": model["id"], "status": "succeeded"}).json()["data"]
    newest = max(job["id"] for job in done)
    page = open_clean(signed_in, f"{server.url}/models/{model['id']}", "model-features-page")
    _all_pictures_loaded(page, "#model-features", 3 + 1)
    link = page.locator("#model-features-source a")
    assert link.get_attribute("href") == f"/jobs/{newest}"
    layers = page.locator("#model-features .feature-depth").evaluate_all("f => f.map(x => x.dataset.layer)")
    assert layers == ["features.2", "features.5", "features.9"]  # dilated-cnn: first, middle and last conv
    _section_screenshot(page, "#model-features", "model-features")
    page.close()
