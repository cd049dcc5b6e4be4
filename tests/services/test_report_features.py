"""Report v3: the features section and its pictures, written into evaluate's report folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from services.audit_verdict import report_version
from services.checkpoints import load_model
from services.datasets import load_dataset
from services.evaluation import evaluate
from services.report import SCHEMA_VERSION
from services.specs import EvaluationConfig

OPTIONS = {"eps": (0.0, 8 / 255), "limit": 40, "batch_size": 16, "cam_samples": 6, "steps": 2}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def written(digits, tmp_path_factory):
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    report = evaluate(loaded, digits, EvaluationConfig(**OPTIONS))
    out = tmp_path_factory.mktemp("report")
    report.write(out)
    return report, out, json.loads((out / "report.json").read_text())


def test_the_features_section_of_a_v3_report(written):
    report, out, document = written
    assert document["schema_version"] == SCHEMA_VERSION == 3 and report_version(document) == 3
    features = document["features"]
    assert features["layers"] == "auto" and features["scanned_samples"] == 40
    # the CAM audit's samples (max(cam_samples, triptychs) of them), attacked at the CAM ε
    assert features["attack"] == {"method": "fgsm", "eps": 8 / 255, "num_samples": 6}
    assert [d["role"] for d in features["depths"]] == ["low", "mid", "high"]
    for depth in features["depths"]:
        assert len(depth["channels"]) == 4 and depth["receptive_field"][0] >= 3
        shift = depth["under_attack"]
        assert shift["relative_l2_change"] > 0 and shift["channel_cosine"] <= 1
        for channel in depth["channels"]:
            assert len(channel["patches"]) == 8
            assert channel["actmax_activation"] > channel["dataset_mean"]
            values = [patch["activation"] for patch in channel["patches"]]
            assert values == sorted(values, reverse=True)
            assert all(len(patch["box"]) == 4 for patch in channel["patches"])
    assert document["timing"]["features_seconds"] > 0
    # the document round-trips: what was written is what to_dict gives
    assert json.loads(json.dumps(report.to_dict())) == document


def test_the_features_pictures_are_written_and_listed(written):
    _, out, document = written
    names = ["features.npz", "features_depth_0.png", "features_depth_1.png", "features_depth_2.png"]
    names.append("features_under_attack.png")
    for name in names:
        assert name in document["artifacts"] and (out / name).is_file()
    for name in names[1:]:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and 300 < image.width < 1200 and image.height < 600
    with np.load(out / "features.npz") as arrays:
        assert arrays["depth0_actmax"].shape == (4, 1, 32, 32)
        assert arrays["depth2_patches"].shape == (4, 8, 5)
        first = document["features"]["depths"][2]["channels"][0]["patches"][0]
        assert arrays["depth2_patches"][0, 0].tolist() == [first["sample"], *first["box"]]


def test_features_none_leaves_the_section_and_its_files_out(digits, tmp_path):
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    report = evaluate(loaded, digits, EvaluationConfig(**OPTIONS, features="none"))
    report.write(tmp_path)
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["features"] is None
    assert not [name for name in document["artifacts"] if name.startswith("features")]
    assert not list(tmp_path.glob("features*"))


def test_chosen_feature_layers_are_reported_in_order(digits):
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    config = EvaluationConfig(**OPTIONS, feature_layers="features.6,features.2", feature_channels=2)
    features = evaluate(loaded, digits, config).to_dict()["features"]
    assert features["layers"] == "chosen"
    assert [(d["role"], d["layer"]) for d in features["depths"]] == [
        ("layer 1", "features.6"),
        ("layer 2", "features.2"),
    ]
    assert all(len(d["channels"]) == 2 for d in features["depths"])
