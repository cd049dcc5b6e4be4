"""services.transfer: the diagonal is the white-box evaluation exactly; off-diagonal cells come from the
source's examples evaluated on the target alone; refusals come with their messages."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from services.checkpoints import load_model
from services.datasets import load_dataset
from services.errors import ConfigError, EvaluationCancelled
from services.evaluation import evaluate
from services.robust import robust_over_eps
from services.specs import EvaluationConfig
from services.transfer import craft_pgd, run_transfer
from services.transfer_specs import TransferConfig, check_roles
from tests.support.tiny import batches_of

EPS = (0.0, 2 / 255, 8 / 255, 32 / 255)
LIMIT, BATCH = 48, 16
DEMOS = ("gap-cnn", "separable-cnn")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def demos(digits):
    return {name: load_model(f"demo:{name}", input_shape=digits.info.input_shape) for name in DEMOS}


@pytest.fixture(scope="module")
def matrix(digits, demos):
    modules = {name: loaded.module for name, loaded in demos.items()}
    config = TransferConfig(
        eps=EPS, steps=3, limit=LIMIT, batch_size=BATCH, seed=7, pgd_examples="first-fooling"
    )
    return run_transfer(
        modules,
        modules,
        digits.batches(BATCH, limit=LIMIT),
        num_samples=LIMIT,
        eps=config.eps,
        attacks=config.attacks,
        pgd=config.pgd,
        pgd_examples=config.pgd_examples,
        seed=config.seed,
    )


@pytest.mark.parametrize("name", DEMOS)
def test_diagonal_is_the_white_box_evaluation_exactly(digits, demos, matrix, name):
    config = EvaluationConfig(
        eps=EPS,
        attacks=("fgsm", "pgd"),
        steps=3,
        seed=7,
        limit=LIMIT,
        batch_size=BATCH,
        cam="none",
        triptychs=0,
        inference_layout="model",
        sanity_eps=0,
    )
    report = evaluate(demos[name], digits, config)
    sweep = report.sweep
    assert torch.equal(matrix.counts[(name, name, "fgsm")], sweep.pred == sweep.labels[:, None])
    assert torch.equal(matrix.counts[(name, name, "pgd")], report.assessment.matrices["pgd"])
    assert torch.equal(matrix.clean[name], sweep.clean_pred == sweep.labels)
    entries = {entry["name"]: entry for entry in report.to_dict()["attacks"] if not entry["targeted"]}
    cells = {(p.attack, p.eps): p for p in matrix.points() if p.source == name and p.target == name}
    for attack in ("fgsm", "pgd"):
        for point in entries[attack]["points"]:
            cell = cells[(attack, point["eps"])]
            assert round(cell.accuracy * LIMIT) == round(point["accuracy"] * LIMIT)
            assert cell.accuracy == pytest.approx(point["accuracy"], abs=1e-6)
            assert cell.success_rate == pytest.approx(point["attack_success_rate"], abs=1e-6)
    assert any(p.accuracy < 0.9 for p in cells.values()), "the attacks must bite at the largest ε"


def test_craft_pgd_flags_are_robust_over_eps(tiny_batch):
    x, y = tiny_batch
    torch.manual_seed(3)
    # a linear model in float64: its per-sample outcomes are exactly independent of the batch's other rows
    tiny_net = nn.Sequential(nn.Flatten(), nn.Linear(100, 4)).double().eval()
    x = x.double()
    spec = TransferConfig(steps=4).pgd
    forward = tiny_net
    ids = torch.arange(len(y))
    with torch.no_grad():
        y = torch.where(torch.arange(len(y)) % 3 == 0, y, tiny_net(x).argmax(1))  # most clean-correct
    correct = tiny_net(x).argmax(1) == y
    flags, fooled, examples = craft_pgd(spec, forward, x, y, (0.0, 0.15, 0.4), correct, ids, 3)
    assert torch.equal(flags, robust_over_eps(spec, forward, x, y, (0.0, 0.15, 0.4), correct, ids, 3))
    first = fooled[:, 1]
    assert first.any() and fooled[:, 2].any()
    assert not torch.equal(examples[1][first], examples[2][first])  # attacked afresh at the larger ε
    for e, example in zip((0.0, 0.15, 0.4), examples, strict=True):
        assert float((example - x).abs().max()) <= e + 1e-6
        assert float(example.min()) >= 0 and float(example.max()) <= 1
    with torch.no_grad():  # an example that fooled the source fools it when evaluated again
        for j in range(3):
            hit = fooled[:, j]
            assert bool((tiny_net(examples[j])[hit].argmax(1) != y[hit]).all())
            assert bool((tiny_net(examples[j])[correct & ~hit].argmax(1) == y[correct & ~hit]).all())


def test_final_pgd_examples_keep_the_source_outcomes_and_transfer_at_least_as_well(digits, demos, matrix):
    modules = {name: loaded.module for name, loaded in demos.items()}
    config = TransferConfig(eps=EPS, steps=3, seed=7, pgd_examples="final")
    final = run_transfer(
        modules,
        modules,
        digits.batches(BATCH, limit=LIMIT),
        num_samples=LIMIT,
        eps=config.eps,
        pgd=config.pgd,
        pgd_examples=config.pgd_examples,
        seed=config.seed,
    )
    for name in DEMOS:  # the white-box cell: "some iterate fooled the source" does not depend on stopping
        assert torch.equal(final.counts[(name, name, "pgd")], matrix.counts[(name, name, "pgd")])
    off = [(s, t, "pgd") for s in DEMOS for t in DEMOS if s != t]
    assert sum(int(final.counts[key].sum()) for key in off) <= sum(
        int(matrix.counts[key].sum()) for key in off
    )


def test_a_copy_of_the_source_gets_the_source_numbers_from_its_own_forward(digits, demos):
    source = demos["gap-cnn"].module
    twin = copy.deepcopy(source)
    result = run_transfer(
        {"gap": source},
        {"gap": source, "twin": twin},
        digits.batches(BATCH, limit=LIMIT),
        num_samples=LIMIT,
        eps=EPS,
        pgd=TransferConfig(steps=3).pgd,
        pgd_examples="first-fooling",  # the final iterate may have left the source's boundary again
    )
    for attack in ("fgsm", "pgd"):
        assert torch.equal(result.counts[("gap", "twin", attack)], result.counts[("gap", "gap", attack)])


class Constant(nn.Module):
    """Always predicts `cls`, whatever the input: its accuracy is the share of that class in any case."""

    def __init__(self, num_classes: int, cls: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.bias.data[cls] = 1.0

    def forward(self, x):
        return self.bias.expand(len(x), -1) + 0 * x.flatten(1)[:, :1]


def test_a_constant_target_keeps_its_accuracy_and_is_never_fooled(tiny_net, tiny_batch):
    x, y = tiny_batch
    constant = Constant(4, 2)
    result = run_transfer(
        {"tiny": tiny_net},
        {"constant": constant},
        batches_of(x, y, 10),
        num_samples=len(y),
        eps=(0.0, 0.1, 0.5),
        pgd=TransferConfig(steps=2).pgd,
    )
    share = float((y == 2).float().mean())
    points = [p for p in result.points() if p.source == "tiny"]
    assert len(points) == 6
    for point in points:
        assert point.accuracy == pytest.approx(share)
        assert point.success_rate == 0.0
        assert point.n == len(y)


def test_worst_case_is_per_sample_over_the_other_sources(digits, demos, matrix):
    for target in DEMOS:
        other = next(name for name in DEMOS if name != target)
        for attack in ("fgsm", "pgd"):
            assert torch.equal(matrix.worst(target, attack), matrix.counts[(other, target, attack)])
        both = matrix.counts[(other, target, "fgsm")] & matrix.counts[(other, target, "pgd")]
        assert torch.equal(matrix.worst(target, "all"), both)
    worst = [p for p in matrix.points() if p.source is None]
    assert {(p.target, p.attack) for p in worst} == {(t, a) for t in DEMOS for a in ("fgsm", "pgd", "all")}


def test_worst_case_needs_another_source(tiny_net, tiny_batch):
    x, y = tiny_batch
    result = run_transfer(
        {"m": tiny_net}, {"m": tiny_net}, batches_of(x, y, 8), num_samples=len(y), eps=(0.1,)
    )
    assert result.worst("m", "fgsm") is None
    assert all(p.source == "m" for p in result.points())


def test_cancel_stops_at_a_batch(tiny_net, tiny_batch):
    x, y = tiny_batch
    with pytest.raises(EvaluationCancelled):
        run_transfer(
            {"m": tiny_net},
            {"m": tiny_net},
            batches_of(x, y, 8),
            num_samples=len(y),
            eps=(0.1,),
            should_stop=lambda: True,
        )


def test_progress_counts_samples(tiny_net, tiny_batch):
    x, y = tiny_batch
    seen = []
    run_transfer(
        {"m": tiny_net},
        {"m": tiny_net},
        batches_of(x, y, 10),
        num_samples=len(y),
        eps=(0.1,),
        attacks=("fgsm",),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(10, 24), (20, 24), (24, 24)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eps": "0,2"}, "outside [0, 1]"),
        ({"attacks": "fgsm,square"}, "unknown attacks square"),
        ({"steps": 0}, "steps must be between 1 and 1000"),
        ({"precision": "fp16"}, "unknown precision"),
        ({"pgd_examples": "best"}, "unknown pgd_examples 'best'"),
        ({"batch_size": True}, "batch_size must be a whole number"),
    ],
)
def test_bad_options_are_refused_with_their_message(options, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TransferConfig(**options)


def test_roles_are_checked():
    with pytest.raises(ConfigError, match="at least one target"):
        check_roles(["a"], [])
    with pytest.raises(ConfigError, match="given twice: a"):
        check_roles(["a", "a"], ["b"])
    with pytest.raises(ConfigError, match="at most 8 source"):
        check_roles([str(i) for i in range(9)], ["b"])
    check_roles(["a", "b"], ["a", "b"])


def test_models_must_take_the_dataset_images_and_share_its_classes():
    from services.transfer_specs import ModelShape, check_compatible

    good = ModelShape("a 1", (1, 32, 32), 10)
    check_compatible([good, ModelShape("b 1", (1, 32, 32), 10)], "digits", (1, 32, 32), 10)
    with pytest.raises(ConfigError, match=r"model b 1 takes inputs of shape \(3, 32, 32\)"):
        check_compatible([good, ModelShape("b 1", (3, 32, 32), 10)], "digits", (1, 32, 32), 10)
    with pytest.raises(ConfigError, match=r"same classes; class counts: a 1 \(10\), b 1 \(5\)"):
        check_compatible([good, ModelShape("b 1", (1, 32, 32), 5)], "digits", (1, 32, 32), 10)
    with pytest.raises(ConfigError, match="has 12 classes but the models predict only 10"):
        check_compatible([good], "digits", (1, 32, 32), 12)
