"""Dashboard fixtures: the API test app (SQLite in tmp_path, recording enqueue), a finished job, and for the
browser tests one `advaudit serve` with a signed-in chromium context, shared by every browser test file."""

from __future__ import annotations

import pytest

from tests.support import api as helpers
from tests.support import api_fixtures
from tests.support.api import demo_safetensors
from tests.support.browser import (
    DEMO_MODELS,
    JOB_CONFIG,
    TIMEOUT_MS,
    VIEWPORT,
    PageWatch,
    launch,
    running_server,
    screenshot,
    sync_playwright,
    wait_for_jobs,
)
from tests.support.dashboard import finish_job

# The API tests' fixtures, shared: an app on SQLite in tmp_path with a recording enqueue.
migrated_db, settings, enqueue = api_fixtures.migrated_db, api_fixtures.settings, api_fixtures.enqueue
app, client = api_fixtures.app, api_fixtures.client
npz_dataset, gap_model = api_fixtures.npz_dataset, api_fixtures.gap_model


@pytest.fixture
def weights_model(client, npz_dataset) -> dict:
    """gap-cnn as safetensors weights + arch: loaded as a Python module, so the CAM audit can hook it."""
    response = helpers.upload_model(
        client,
        "gap-w",
        helpers.demo_safetensors("gap-cnn"),
        "gap.safetensors",
        arch="gap-cnn",
        num_classes=10,
        dataset_id=npz_dataset["id"],
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def finished(client, app, weights_model, npz_dataset) -> dict:
    return finish_job(client, app, weights_model, npz_dataset)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`advaudit serve` for every browser test: two demo models (weights, so CAM can hook them) run on digits."""
    with running_server(tmp_path_factory.mktemp("dashboard")) as server:
        digits = server.api.get("/datasets", params={"name": "digits"}).json()["data"][0]
        models, jobs = [], []
        for name in DEMO_MODELS:
            response = server.api.post(
                "/models",
                data={"name": name, "arch": name, "num_classes": "10", "dataset_id": str(digits["id"])},
                files={"file": (f"{name}.safetensors", demo_safetensors(name))},
            )
            assert response.status_code == 201, response.text
            models.append(response.json())
            job = server.api.post(
                "/jobs", json={"model_id": models[-1]["id"], "dataset_id": digits["id"], "config": JOB_CONFIG}
            )
            assert job.status_code == 201, job.text
            jobs.append(job.json())
        wait_for_jobs(server.api, [job["id"] for job in jobs], server.data_dir)
        server.models, server.jobs, server.digits = models, jobs, digits
        yield server


@pytest.fixture(scope="session")
def browser():
    with sync_playwright()() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def signed_in(browser, server):
    """A browser context that signed in once through the login page the dashboard redirected it to."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    watch = PageWatch(page)
    page.goto(f"{server.url}/jobs/{server.jobs[0]['id']}")
    assert page.url.startswith(f"{server.url}/login?next=")
    screenshot(page, "login")
    page.fill("#token", server.token)
    page.click("#sign-in")
    page.wait_for_url(f"{server.url}/jobs/{server.jobs[0]['id']}")
    cookie = next(c for c in context.cookies() if c["name"] == "advaudit_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    watch.assert_clean("sign-in")
    page.close()
    yield context
    context.close()
