"""services.evaluation.evaluate end to end on demo models, every checkpoint format, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from services.attacks import perturb
from services.checkpoints import load_model
from services.datasets import load_dataset
from services.errors import ConfigError, DatasetError, EvaluationCancelled
from services.evaluation import evaluate
from services.specs import EvaluationConfig
from services.zoo import build_architecture
from tests.support.env import require

EPS = (0.0, 2 / 255, 8 / 255, 16 / 255)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def run(model_source, dataset, *, load_options=None, **config_options):
    """Evaluate `model_source` on `dataset`: `load_options` go to load_model, the rest to EvaluationConfig."""
    config = EvaluationConfig(
        **{"eps": EPS, "limit": 48, "batch_size": 16, "cam_samples": 6, **config_options}
    )
    loaded = load_model(model_source, input_shape=dataset.info.input_shape, **(load_options or {}))
    return evaluate(loaded, dataset, config), loaded


def eps_zero_reference(model, dataset, limit, batch_size):
    """Predictions of a real forward on perturb(x, sign ∇x CE, 0), computed here independently of the sweep."""
    preds, labels = [], []
    for x, y in dataset.batches(batch_size, limit=limit):
        x_req = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_req), y), x_req)
        unchanged = perturb(x, grad.sign(), 0.0)
        assert torch.equal(unchanged, x)
        with torch.no_grad():
            preds.append(model(unchanged).argmax(1))
        labels.append(y)
    return torch.cat(preds), torch.cat(labels)


def test_report_document_and_files(digits, tmp_path):
    stages = []
    config = EvaluationConfig(
        eps=EPS, limit=48, batch_size=16, cam_samples=6, targeted="next", save_adversarial=True
    )
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    report = evaluate(
        loaded, digits, config, progress=lambda stage, done, total: stages.append((stage, done, total))
    )
    assert stages[:3] == [("sweep", 16, 48), ("sweep", 32, 48), ("sweep", 48, 48)] and stages[-1] == (
        "cam",
        6,
        6,
    )
    report.write(tmp_path)
    document = json.loads((tmp_path / "report.json").read_text())
    for key in (
        "schema_version",
        "model",
        "dataset",
        "config",
        "clean",
        "fgsm",
        "targeted_fgsm",
        "gradcam",
        "architecture",
        "summary",
        "timing",
    ):
        assert key in document
    assert document["schema_version"] == 3
    assert document["model"]["format"] == "demo" and len(document["model"]["sha256"]) == 64
    assert document["dataset"]["num_samples"] == 48
    assert [p["eps"] for p in document["fgsm"]] == list(EPS)
    # ε = 0 reuses the sweep's clean logits, so check it against an independent forward instead of itself.
    reference_pred, reference_labels = eps_zero_reference(loaded.module, digits, 48, 16)
    assert torch.equal(report.sweep.pred[:, 0], reference_pred)
    assert document["fgsm"][0]["accuracy"] == pytest.approx(
        (reference_pred == reference_labels).float().mean().item()
    )
    accuracies = [p["accuracy"] for p in document["fgsm"]]
    assert accuracies[-1] < accuracies[0]
    assert document["targeted_fgsm"]["policy"] == "next" and len(document["targeted_fgsm"]["points"]) == len(
        EPS
    )
    assert document["gradcam"]["method"] == "cam" and document["gradcam"]["num_samples"] == 6
    assert document["architecture"]["totals"]["conv_layers"] == 3
    assert sum(row["count"] for row in document["per_class"]) == 48
    assert 0 <= document["summary"]["robust_auc"] <= 1
    for name in document["artifacts"]:
        assert (tmp_path / name).is_file(), name

    cams = np.load(tmp_path / "gradcam.npz")
    assert cams["clean"].shape == cams["adversarial"].shape == (6, 32, 32)
    assert cams["clean"].dtype == np.float32 and cams["clean"].min() >= 0 and cams["clean"].max() <= 1
    assert set(cams.files) >= {"indices", "clean", "adversarial", "clean_class", "adversarial_class"}

    adversarial = np.load(tmp_path / "adversarial.npz")
    clean = adversarial["clean"]
    # the CAM samples' own inputs: the clean images and the attacked ones at cam_eps
    assert cams["images"].shape == cams["adversarial_images"].shape == (6, 1, 32, 32)
    np.testing.assert_array_equal(cams["images"], clean[cams["indices"]])
    assert np.abs(cams["adversarial_images"] - cams["images"]).max() <= document["gradcam"]["eps"] + 1e-7
    assert clean.dtype == np.float32 and clean.shape == (48, 1, 32, 32)
    for j, e in enumerate(EPS):
        delta = np.abs(adversarial[f"fgsm_{j}"] - clean).max()
        assert delta <= e + 1e-7
    outcomes = np.load(tmp_path / "outcomes.npz")
    assert outcomes["pred"].shape == (48, len(EPS))


def test_rgb_weights_with_normalisation_end_to_end(tmp_path):
    rng = np.random.default_rng(7)
    n = 36
    x = rng.random((n, 3, 32, 32), dtype=np.float32)
    y = np.arange(n, dtype=np.int64) % 10
    np.savez(tmp_path / "rgb.npz", x=x, y=y)
    torch.manual_seed(0)
    net = build_architecture("gap-cnn", 10, in_channels=3).eval()
    torch.save(net.state_dict(), tmp_path / "rgb-gap-cnn.pt")

    dataset = load_dataset(tmp_path / "rgb.npz")
    assert dataset.info.input_shape == (3, 32, 32)
    loaded = load_model(
        tmp_path / "rgb-gap-cnn.pt",
        input_shape=(3, 32, 32),
        arch="gap-cnn",
        num_classes=10,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    config = EvaluationConfig(eps=EPS, batch_size=16, cam_samples=5, targeted="random", cam="auto")
    report = evaluate(loaded, dataset, config)
    out = tmp_path / "report"
    report.write(out)

    document = json.loads((out / "report.json").read_text())
    assert document["dataset"]["num_samples"] == n
    assert document["targeted_fgsm"]["policy"] == "random"
    assert len(document["targeted_fgsm"]["points"]) == len(EPS)
    targets = report.sweep.targets
    assert (targets != torch.from_numpy(y)).all() and ((targets >= 0) & (targets < 10)).all()
    artifacts = document["artifacts"]
    assert {"report.json", "outcomes.npz", "accuracy_curve.png", "gradcam.npz", "cam_gallery.png"} <= set(
        artifacts
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(artifacts)
    for name in artifacts:
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                image.load()
                assert image.format == "PNG" and min(image.size) > 0, name

    m = document["gradcam"]["num_samples"]
    assert m == 5
    cams = np.load(out / "gradcam.npz")
    for key in ("clean", "adversarial"):
        assert cams[key].shape == (m, 32, 32), key
        assert cams[key].dtype == np.float32 and cams[key].min() >= 0 and cams[key].max() <= 1, key
    assert cams["indices"].shape == (m,)
    outcomes = np.load(out / "outcomes.npz")
    assert outcomes["pred"].shape == (n, len(EPS)) and outcomes["targeted_pred"].shape == (n, len(EPS))


def test_saved_adversarial_inputs_equal_torchattacks(digits, tmp_path):
    torchattacks = require("torchattacks")
    config = EvaluationConfig(eps=(8 / 255,), limit=40, batch_size=40, cam="none", save_adversarial=True)
    loaded = load_model("demo:separable-cnn", input_shape=(1, 32, 32))
    evaluate(loaded, digits, config).write(tmp_path)
    saved = np.load(tmp_path / "adversarial.npz")
    x, y = next(digits.batches(40, limit=40))
    expected = torchattacks.FGSM(loaded.module, eps=8 / 255)(x, y)
    assert np.array_equal(saved["fgsm_0"], expected.numpy())


def test_gradcam_on_a_net_without_gap_head(digits):
    report, _ = run("demo:dilated-cnn", digits)
    assert report.cam.method == "gradcam" and report.cam.layer == report.architecture.last_spatial_conv()


def test_explicit_layer_and_unknown_layer(digits):
    report, _ = run("demo:gap-cnn", digits, cam="features.4")
    assert report.cam.method == "gradcam" and report.cam.layer == "features.4"
    with pytest.raises(ConfigError, match="no layer 'features.99'"):
        run("demo:gap-cnn", digits, cam="features.99")


def test_every_checkpoint_format(digits, tmp_path):
    torch.manual_seed(0)
    net = build_architecture("gap-cnn", 10).eval()
    example = torch.rand(2, 1, 32, 32)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    safetensors.torch.save_file(net.state_dict(), tmp_path / "weights.safetensors")
    torch.jit.save(torch.jit.script(net), tmp_path / "scripted.pt")
    program = torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "exported.pt2")
    config = EvaluationConfig(eps=EPS, limit=32, batch_size=16, cam_samples=4)
    reference = None
    for name, arch in (
        ("weights.pt", "gap-cnn"),
        ("weights.safetensors", "gap-cnn"),
        ("exported.pt2", None),
        ("scripted.pt", None),
    ):
        loaded = load_model(
            tmp_path / name, input_shape=(1, 32, 32), arch=arch, num_classes=10 if arch else None
        )
        report = evaluate(loaded, digits, config)
        if reference is None:
            reference = report.sweep.pred
        assert torch.equal(report.sweep.pred, reference), name
        if name == "scripted.pt":
            assert report.cam is None and "TorchScript" in report.warnings[0]
        else:
            assert report.cam is not None and report.cam.method == "cam", name
    scripted = load_model(tmp_path / "scripted.pt", input_shape=(1, 32, 32))
    with pytest.raises(ConfigError, match="TorchScript"):
        evaluate(scripted, digits, EvaluationConfig(eps=EPS, limit=8, cam="features.0"))


def test_labels_outside_the_model_classes(tmp_path):
    x = np.random.default_rng(0).random((8, 1, 32, 32), dtype=np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=np.array([0, 1, 2, 3, 4, 5, 6, 12]))
    dataset = load_dataset(tmp_path / "data.npz")
    loaded = load_model("demo:gap-cnn", input_shape=dataset.info.input_shape)
    with pytest.raises(DatasetError, match="label 12 but the model has only 10 classes"):
        evaluate(loaded, dataset, EvaluationConfig(eps=EPS))


def test_dataset_of_another_shape_is_refused(digits, tmp_path):
    np.savez(tmp_path / "rgb.npz", x=np.zeros((4, 3, 32, 32), np.float32), y=np.zeros(4, np.int64))
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    with pytest.raises(DatasetError, match=r"\(3, 32, 32\)"):
        evaluate(loaded, load_dataset(tmp_path / "rgb.npz"), EvaluationConfig(eps=EPS))


def test_cancellation(digits):
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    calls = []
    with pytest.raises(EvaluationCancelled):
        evaluate(
            loaded,
            digits,
            EvaluationConfig(eps=EPS, batch_size=32),
            progress=lambda *args: calls.append(args),
            should_stop=lambda: len(calls) >= 2,
        )
    assert len(calls) == 2


def test_normalisation_inside_the_model_keeps_eps_in_pixel_units(digits, tmp_path):
    torch.manual_seed(0)
    net = build_architecture("gap-cnn", 10).eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    config = EvaluationConfig(eps=EPS, limit=24, cam="none")
    loaded = load_model(tmp_path / "w.pt", input_shape=(1, 32, 32), arch="gap-cnn", mean=(0.5,), std=(0.25,))
    report = evaluate(loaded, digits, config)
    x, y = next(digits.batches(24, limit=24))
    wrapped = lambda v: net((v - 0.5) / 0.25)  # noqa: E731
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(wrapped(x_req), y), x_req)
    with torch.no_grad():
        expected = wrapped(torch.clamp(x + (8 / 255) * grad.sign(), 0, 1)).argmax(1)
    assert torch.equal(report.sweep.pred[:, 2], expected)


def test_bf16_and_channels_last_stay_close_to_fp32(digits):
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    base = {"eps": EPS, "limit": 64, "cam": "none"}
    fp32 = evaluate(loaded, digits, EvaluationConfig(**base)).to_dict()
    for options in ({"precision": "bf16"}, {"channels_last": True}):
        other = evaluate(loaded, digits, EvaluationConfig(**base, **options)).to_dict()
        assert other["config"] == {**fp32["config"], **options}
        for a, b in zip(fp32["fgsm"], other["fgsm"], strict=True):
            assert abs(a["accuracy"] - b["accuracy"]) <= 0.05, options


def test_a_failed_write_leaves_no_partial_report(digits, tmp_path, monkeypatch):
    loaded = load_model("demo:gap-cnn", input_shape=(1, 32, 32))
    report = evaluate(loaded, digits, EvaluationConfig(eps=EPS, limit=16, cam_samples=2))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("services.plots.triptych", broken)
    with pytest.raises(OSError, match="disk full"):
        report.write(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []
