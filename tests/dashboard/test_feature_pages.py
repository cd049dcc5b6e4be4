"""The features-at-depth gallery on the job page and the model page (a v3 report), its pictures served as
artifacts, and the pages of v2 and v1 reports, which have none."""

from __future__ import annotations

import copy
import io

from PIL import Image

from tests.dashboard.test_report_sanity import as_v1, section, set_report
from tests.support.api import API
from tests.support.dashboard import finish_job


def _report(client, job_id: int) -> dict:
    return client.get(f"{API}/jobs/{job_id}/report").json()


def test_job_page_shows_each_depth_and_the_depth_under_attack(client, finished):
    report = _report(client, finished["id"])
    features = report["features"]
    assert report["schema_version"] == 3 and [d["role"] for d in features["depths"]] == ["low", "mid", "high"]
    page = client.get(f"/jobs/{finished['id']}").text
    gallery = section(page, "features", "</section>")
    for position, depth in enumerate(features["depths"]):
        assert f'data-role="{depth["role"]}" data-layer="{depth["layer"]}"' in gallery
        assert f"/api/v1/jobs/{finished['id']}/artifacts/features_depth_{position}.png" in gallery
    table = gallery[gallery.index('data-role="depth-under-attack"') :]
    for depth in features["depths"]:
        assert f"{depth['under_attack']['relative_l2_change']:.3f}" in table
        assert f"{depth['under_attack']['channel_cosine']:.3f}" in table
    assert f"{report['gradcam']['drift']:.3f}" in table  # the CAM drift beside them
    assert "features_under_attack.png" in gallery
    for name in ("features_depth_0.png", "features_under_attack.png"):
        response = client.get(f"{API}/jobs/{finished['id']}/artifacts/{name}")
        assert response.status_code == 200
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.format == "PNG" and image.width > 300


def test_model_page_shows_the_gallery_of_its_latest_job_that_has_one(
    client, app, finished, weights_model, npz_dataset
):
    newer = finish_job(client, app, weights_model, npz_dataset, features="none")
    assert newer["id"] > finished["id"] and _report(client, newer["id"])["features"] is None
    page = client.get(f"/models/{weights_model['id']}").text
    gallery = section(page, "model-features", "</section>")
    # the newest job without a gallery does not hide the one of the job before it
    assert f'href="/jobs/{finished["id"]}">job #{finished["id"]}</a>' in gallery
    assert f"/api/v1/jobs/{finished['id']}/artifacts/features_depth_2.png" in gallery
    assert 'data-role="depth-under-attack"' in gallery


def test_v2_and_v1_reports_render_without_a_gallery(client, app, finished, weights_model):
    report = _report(client, finished["id"])
    v2 = {key: value for key, value in copy.deepcopy(report).items() if key != "features"} | {
        "schema_version": 2
    }
    for document in (v2, as_v1(v2)):
        set_report(app, finished["id"], document)
        page = client.get(f"/jobs/{finished['id']}")
        assert page.status_code == 200 and 'id="features"' not in page.text
        assert 'id="attack-table"' in page.text
    model_page = client.get(f"/models/{weights_model['id']}").text
    assert "No evaluation of this version has a feature gallery yet" in section(model_page, "model-features")
