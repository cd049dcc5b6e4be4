"""Dashboard pages rendered by the app in-process: content, 404 pages, the compare page, static assets."""

from __future__ import annotations

import re

import pytest

from tests.support import api as helpers
from tests.support.api import API
from tests.support.dashboard import HTML, embedded, finish_job


def test_overview_lists_jobs_models_and_datasets(client, finished, weights_model, npz_dataset):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f'href="/jobs/{finished["id"]}"' in page.text and "succeeded" in page.text
    assert f'href="/models/{weights_model["id"]}"' in page.text and npz_dataset["name"] in page.text
    assert 'href="/evaluations/new"' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "http" not in policy


def test_job_page_shows_the_report(client, finished):
    job_id = finished["id"]
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    report = client.get(f"{API}/jobs/{job_id}/report").json()
    data = embedded(page.text, "report-data")
    assert data["fgsm"] == report["fgsm"] and data["targeted"] == report["targeted_fgsm"]
    assert (
        data["per_class"] == report["per_class"] and data["minimal_eps"] == report["summary"]["minimal_eps"]
    )
    assert 'id="clean-accuracy"' in page.text and "4/255" in page.text and "16/255" in page.text
    for chart in ("accuracy-curve", "success-curve", "min-eps-histogram", "per-class-heatmap"):
        assert f'id="{chart}"' in page.text
    samples = report["gradcam"]["samples"]
    assert page.text.count('class="cam-card"') == len(samples) == 4
    for sample in samples:
        assert f'data-index="{sample["index"]}"' in page.text
    assert page.text.count(f'<img src="/api/v1/jobs/{job_id}/artifacts/triptych_') == 2
    assert f'href="/api/v1/jobs/{job_id}/report"' in page.text
    assert "were not saved for this job" in page.text  # no adversarial.npz without save_adversarial
    fragment = client.get(f"/jobs/{job_id}/report-section")
    assert (
        fragment.status_code == 200 and "<html" not in fragment.text and 'id="report-data"' in fragment.text
    )


def test_cam_images_are_pngs_with_clear_errors(client, finished):
    job_id = finished["id"]
    for view in ("clean", "adversarial"):
        image = client.get(f"/jobs/{job_id}/cam/0/{view}.png")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG")
    beyond = client.get(f"/jobs/{job_id}/cam/4/clean.png")
    assert beyond.status_code == 404 and "has 4 samples" in beyond.json()["detail"]
    assert client.get(f"/jobs/{job_id}/cam/0/other.png").status_code == 404


def test_a_job_that_saved_adversarial_examples_links_them(client, app, gap_model, npz_dataset):
    job = finish_job(client, app, gap_model, npz_dataset, save_adversarial=True, targeted=None, cam="none")
    page = client.get(f"/jobs/{job['id']}")
    assert f'href="/api/v1/jobs/{job["id"]}/artifacts/adversarial.npz"' in page.text
    assert 'id="cam-gallery"' not in page.text and embedded(page.text, "report-data")["targeted"] is None


def test_queued_job_page_waits_for_the_report(client, gap_model, npz_dataset):
    job = client.post(
        f"{API}/jobs", json={"model_id": gap_model["id"], "dataset_id": npz_dataset["id"]}
    ).json()
    page = client.get(f"/jobs/{job['id']}")
    assert (
        page.status_code == 200 and 'data-status="queued"' in page.text and 'id="report-pending"' in page.text
    )
    assert 'id="report-data"' not in page.text
    assert 'id="report-pending"' in client.get(f"/jobs/{job['id']}/report-section").text


def test_model_page_shows_the_architecture_audit_and_versions(client, finished, weights_model, npz_dataset):
    page = client.get(f"/models/{weights_model['id']}")
    assert page.status_code == 200
    layers = client.get(f"{API}/jobs/{finished['id']}/report").json()["architecture"]["layers"]
    table = page.text[page.text.index('id="conv-layers"') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr><td") == len(layers) == 3
    assert all(layer["name"] in table for layer in layers) and "receptive field" in table
    grid = f'src="/api/v1/models/{weights_model["id"]}/filters.png"'
    assert (
        grid in page.text and client.get(f"{API}/models/{weights_model['id']}/filters.png").status_code == 200
    )
    versions = embedded(page.text, "versions-data")
    report = client.get(f"{API}/jobs/{finished['id']}/report").json()
    assert versions == [
        {
            "version": weights_model["version"],
            "dataset": npz_dataset["name"],
            "job_id": finished["id"],
            "clean_accuracy": report["summary"]["clean_accuracy"],
            "robust_auc": report["summary"]["robust_auc"],
            # one version: its own ε grid is the shared one, 16/255 its largest nonzero ε (no 8/255 swept)
            "worst_case_auc": pytest.approx(report["summary"]["worst_case_auc"]),
            "ranking_accuracy": report["summary"]["worst_case_accuracy"][-1],
            "ranking_eps": pytest.approx(16 / 255),
            "sanity_verdict": report["summary"]["sanity_verdict"],
        }
    ]


def test_compare_page_leaderboard(client, app, gap_model, npz_dataset):
    dilated = helpers.upload_model(
        client, "dilated", helpers.demo_bytes("dilated-cnn"), "dilated.pt", dataset_id=npz_dataset["id"]
    ).json()
    first = finish_job(client, app, gap_model, npz_dataset)
    second = finish_job(client, app, dilated, npz_dataset)
    by_models = client.get(
        "/compare",
        params=[
            ("dataset_id", npz_dataset["id"]),
            ("model_ids", gap_model["id"]),
            ("model_ids", dilated["id"]),
        ],
    )
    by_jobs = client.get("/compare", params={"job_ids": f"{first['id']},{second['id']}"})
    for page in (by_models, by_jobs):
        assert page.status_code == 200, page.text
        data = embedded(page.text, "compare-data")
        assert {row["job_id"] for row in data["rows"]} == {first["id"], second["id"]}
        aucs = [row["robust_auc"] for row in data["rows"]]
        assert aucs == sorted(aucs, reverse=True)
        board = page.text[page.text.index('id="leaderboard"') :]
        assert board[: board.index("</table>")].count("<tr data-job-id=") == 2
    assert client.get("/compare").status_code == 200  # the chooser alone


def test_compare_page_explains_bad_choices(client, finished, npz_dataset):
    cases = {
        "job_ids=999": "job 999 does not exist",
        "job_ids=1,x": "comma-separated positive integers",
        "model_ids=1": "Choose the dataset",
        "dataset_id=abc": "dataset &#39;abc&#39; does not exist",
    }
    for query, message in cases.items():
        page = client.get(f"/compare?{query}")
        assert page.status_code == 422 and message in page.text, (query, page.text[-2000:])
    queued = client.post(
        f"{API}/jobs", json={"model_id": finished["model_id"], "dataset_id": npz_dataset["id"]}
    )
    page = client.get(f"/compare?job_ids={queued.json()['id']}")
    assert "only succeeded jobs can be compared" in page.text


def test_unknown_ids_and_paths_give_404_pages(client, finished):
    for path, message in (
        ("/jobs/999999", "Job 999999 does not exist"),
        ("/models/424242", "Model 424242"),
        ("/jobs/abc", "Job &#39;abc&#39; does not exist"),
        ("/jobs/99999999999", "does not exist"),
    ):
        page = client.get(path, headers=HTML)
        assert page.status_code == 404 and "text/html" in page.headers["content-type"], path
        assert message in page.text and 'href="/"' in page.text
    unknown = client.get("/no/such/page", headers=HTML)
    assert unknown.status_code == 404 and "There is no page at /no/such/page" in unknown.text
    api = client.get(f"{API}/no/such/endpoint", headers=HTML)
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"
    assert client.get(f"{API}/jobs/999999").headers["content-type"] == "application/problem+json"


def test_plotly_and_static_files_are_served_by_us(client, finished):
    plotly = client.get("/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and "javascript" in plotly.headers["content-type"]
    assert len(plotly.content) > 1_000_000
    for name in (
        "dashboard.css",
        "common.js",
        "charts.js",
        "report.js",
        "live.js",
        "form.js",
        "compare.js",
        "model.js",
        "favicon.svg",
    ):
        assert client.get(f"/static/{name}").status_code == 200, name
    page = client.get(f"/jobs/{finished['id']}").text
    assert not re.search(r'(src|href)="(https?:)?//', page), "pages must not load anything from elsewhere"


def test_robustness_over_versions_takes_each_versions_latest_job_per_dataset(client, app, npz_dataset):
    first = helpers.upload_model(
        client, "net", helpers.demo_bytes("gap-cnn"), "net.pt", dataset_id=npz_dataset["id"]
    ).json()
    older = finish_job(client, app, first, npz_dataset, cam="none")
    newer = finish_job(client, app, first, npz_dataset, cam="none", eps=[0, "8/255"])  # supersedes `older`
    second = helpers.upload_model(
        client, "net", helpers.demo_bytes("gap-cnn-fragile"), "net2.pt", dataset_id=npz_dataset["id"]
    ).json()
    latest = finish_job(client, app, second, npz_dataset, cam="none")
    page = client.get(f"/models/{second['id']}")
    versions = embedded(page.text, "versions-data")
    assert [(row["version"], row["job_id"]) for row in versions] == [
        ("v1", newer["id"]),
        ("v2", latest["id"]),
    ]
    assert older["id"] not in {row["job_id"] for row in versions}
    for row, job in zip(versions, (newer, latest), strict=True):
        summary = client.get(f"{API}/jobs/{job['id']}/report").json()["summary"]
        assert row["robust_auc"] == summary["robust_auc"]
        assert (
            row["clean_accuracy"] == client.get(f"{API}/jobs/{job['id']}/report").json()["clean"]["accuracy"]
        )
