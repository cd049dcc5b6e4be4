"""The ε-sweep: per batch one gradient pass, then K inference forwards; per-sample × ε outcomes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields

import torch
from torch import nn

from services.attack_specs import AttackSpec, SanityProbe
from services.attacks import autocast_for, fgsm_directions, frozen_eval, perturb
from services.errors import ConfigError, DatasetError, EvaluationCancelled, ModelError
from services.inference_layout import LayoutChoice, as_channels_last, channels_last_copy
from services.robust import RobustSweep
from services.specs import TargetPolicy

BatchProgress = Callable[[int, int], None]
"""progress(samples done, samples in total), called after every batch."""

TargetFunction = Callable[[torch.Tensor, torch.Tensor, slice], torch.Tensor]
"""targets(labels, clean logits, row slice) for one batch."""


@dataclass
class SweepResult:
    """Per-sample outcomes on the CPU. Rows follow the dataset order; columns follow the ε lists.

    A sweep of a sample range (a shard) holds that range's rows; `selected` is keyed by dataset index.
    """

    labels: torch.Tensor  # (N,) int64
    clean_pred: torch.Tensor  # (N,) int64
    clean_conf: torch.Tensor  # (N,) float32, softmax probability of the predicted class
    eps: tuple[float, ...]
    pred: torch.Tensor  # (N, K) int64
    conf: torch.Tensor  # (N, K) float32
    targeted_eps: tuple[float, ...] = ()
    policy: TargetPolicy | None = None
    targets: torch.Tensor | None = None  # (N,) int64
    targeted_pred: torch.Tensor | None = None  # (N, Kt) int64
    target_prob: torch.Tensor | None = None  # (N, Kt) float32, softmax probability of the target
    # index -> (x, untargeted direction), for CAM galleries and triptychs
    selected: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
    directions: torch.Tensor | None = None  # (N, C, H, W) int8, with keep_directions
    inputs: torch.Tensor | None = None  # (N, C, H, W) float32, with keep_directions
    targeted_directions: torch.Tensor | None = None  # (N, C, H, W) int8, with keep_directions
    robust: RobustSweep | None = None  # the iterative and black-box attacks and the sanity probes
    inference_layout: str = "model"  # what the forward-only passes ran on (services.inference_layout)

    @classmethod
    def concat(cls, parts: Sequence[SweepResult]) -> SweepResult:
        """The sweep of consecutive sample ranges, in order, as one (what merging a job's shards gives)."""
        if not parts:
            raise ValueError("nothing to concatenate: no sweep parts")
        first = parts[0]
        for part in parts[1:]:
            if (part.eps, part.targeted_eps, part.policy) != (first.eps, first.targeted_eps, first.policy):
                raise ValueError("sweep parts of different ε lists or target policies cannot be merged")
        values: dict[str, object] = {}
        for item in fields(cls):
            column = [getattr(part, item.name) for part in parts]
            if item.name in ("eps", "targeted_eps", "policy"):
                values[item.name] = getattr(first, item.name)
            elif item.name == "selected":
                values[item.name] = {index: kept for part in column if part for index, kept in part.items()}
            elif item.name == "robust":
                values[item.name] = None if column[0] is None else RobustSweep.concat(column)
            elif item.name == "inference_layout":  # each part chose for itself
                values[item.name] = "+".join(sorted(set(column)))
            elif column[0] is None:
                values[item.name] = None
            else:
                values[item.name] = torch.cat(column)
        return cls(**values)  # type: ignore[arg-type]  # every field, each of its own type


def target_function(policy: TargetPolicy, num_classes: int, offsets: torch.Tensor | None) -> TargetFunction:
    """Targets for one batch from (labels, clean logits, row slice) under `policy`."""
    if policy.kind == "class":
        target_class = policy.target_class
        assert target_class is not None, "a class policy names its class (TargetPolicy.parse)"
        if target_class >= num_classes:
            raise ConfigError(
                f"target class {target_class} does not exist: the model has {num_classes} classes"
            )
        return lambda y, logits, rows: torch.full_like(y, target_class)
    if policy.kind == "next":
        return lambda y, logits, rows: (y + 1) % num_classes
    if policy.kind == "least-likely":
        return lambda y, logits, rows: logits.argmin(dim=1)
    if policy.kind == "random":
        # Offsets in [1, C-1] drawn once per sample index: never the true class, independent of batching.
        assert offsets is not None, "the random policy needs its per-sample offsets (random_offsets)"
        drawn = offsets
        return lambda y, logits, rows: (y + drawn[rows].to(y.device)) % num_classes
    raise ConfigError(f"unknown targeted policy {policy}")


def cancellable_forward(
    model: nn.Module, device: torch.device, precision: str, should_stop: Callable[[], bool] | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """model(x) as fp32 logits under the run's autocast, checking for a stop before every forward pass (not
    only between batches: a batch with many ε values or attack steps can take minutes)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        if should_stop is not None and should_stop():
            raise EvaluationCancelled("evaluation cancelled")
        with autocast_for(device, precision):
            logits: torch.Tensor = model(x)
            return logits.float()

    return forward


def random_offsets(num_samples: int, num_classes: int, seed: int) -> torch.Tensor:
    """Seeded per-sample class offsets for the `random` policy."""
    if num_classes < 2:
        raise ConfigError("a targeted attack needs a model with at least two classes")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, num_classes, (num_samples,), generator=generator)


def run_sweep(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_samples: int,
    num_classes: int,
    eps: Sequence[float],
    targeted_eps: Sequence[float] = (),
    policy: TargetPolicy | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    seed: int = 0,
    first_index: int = 0,
    total_samples: int | None = None,
    select: Sequence[int] = (),
    keep_directions: bool = False,
    progress: BatchProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    attacks: Sequence[AttackSpec] = (),
    worst_case_attacks: tuple[str, ...] = ("fgsm", "bim", "pgd", "square"),
    probe: SanityProbe | None = None,
    inference_layout: str = "model",
) -> SweepResult:
    """FGSM (and targeted FGSM) over `eps` for every sample, one gradient per batch and mode; then, per
    batch, the iterative and black-box `attacks` and the sanity `probe` (services.robust). With
    `inference_layout="auto"` the forward-only passes may run a channels_last copy (services.inference_layout).

    `batches` may be a range of a dataset of `total_samples`: `first_index` is the dataset index of its first
    sample, which seeds every per-sample draw (random targets, random starts, Square, noise), so a range
    gets exactly the outcomes its samples get in a sweep of the whole dataset. `select` holds dataset indices.
    """
    device = torch.device(device)
    eps, targeted_eps = tuple(eps), tuple(targeted_eps) if policy else ()
    n, k, kt = num_samples, len(eps), len(targeted_eps)
    total = first_index + n if total_samples is None else total_samples
    if first_index < 0 or first_index + n > total:
        raise ConfigError(f"samples {first_index}…{first_index + n - 1} are outside the {total} samples")
    offsets = (
        random_offsets(total, num_classes, seed)[first_index : first_index + n]
        if policy and policy.kind == "random"
        else None
    )
    targets_for = target_function(policy, num_classes, offsets) if policy else None
    labels = torch.empty(n, dtype=torch.long, device=device)
    clean_pred = torch.empty(n, dtype=torch.long, device=device)
    clean_conf = torch.empty(n, dtype=torch.float32, device=device)
    pred = torch.empty(n, k, dtype=torch.long, device=device)
    conf = torch.empty(n, k, dtype=torch.float32, device=device)
    targets = torch.empty(n, dtype=torch.long, device=device) if policy else None
    t_pred = torch.empty(n, kt, dtype=torch.long, device=device) if policy else None
    t_prob = torch.empty(n, kt, dtype=torch.float32, device=device) if policy else None
    nonfinite = torch.zeros(n, dtype=torch.bool, device=device)
    kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    wanted = sorted(set(select))
    directions: torch.Tensor | None = None
    inputs: torch.Tensor | None = None
    t_directions: torch.Tensor | None = None
    robust = (
        RobustSweep(
            tuple(attacks),
            n,
            eps,
            targeted_eps,
            worst_case_attacks,
            seed,
            probe or SanityProbe(0.0, False),
            first_index=first_index,
        )
        if attacks or probe
        else None
    )

    def check_stop() -> None:
        if should_stop is not None and should_stop():
            raise EvaluationCancelled("evaluation cancelled")

    forward_all = cancellable_forward(model, device, precision, should_stop)

    start = 0
    with frozen_eval(model):
        layout_copy = (
            channels_last_copy(model, device) if inference_layout == "auto" and not channels_last else None
        )
        infer_all = LayoutChoice(  # the passes that only read predictions
            forward_all,
            as_channels_last(cancellable_forward(layout_copy, device, precision, should_stop))
            if layout_copy is not None
            else None,
        )
        for x, y in batches:
            check_stop()
            stop = start + len(y)
            if stop > n:
                raise DatasetError(f"the dataset yielded more than the {n} samples announced")
            rows = slice(start, stop)
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)

            def batch_targets(logits: torch.Tensor, y: torch.Tensor = y, rows: slice = rows) -> torch.Tensor:
                assert targets_for is not None  # only passed on with a policy
                return targets_for(y, logits, rows)

            logits, direction, t_direction, t = fgsm_directions(
                model, x, y, batch_targets if policy else None, precision=precision
            )
            raw_direction = direction
            if start == 0:
                infer_all.start(x, logits.detach())
            # A NaN in the gradient gives no direction for that pixel (the sanity checks report it).
            direction = direction.nan_to_num(0.0)
            if t_direction is not None:
                t_direction = t_direction.nan_to_num(0.0)
            labels[rows] = y
            probs = logits.softmax(dim=1)
            clean_conf[rows], clean_pred[rows] = probs.max(dim=1)
            nonfinite[rows] |= ~torch.isfinite(logits).all(dim=1)
            with torch.inference_mode():
                for j, e in enumerate(eps):
                    # ε = 0 leaves x unchanged: reuse the clean logits instead of a second identical forward.
                    out = logits if e == 0 else infer_all(perturb(x, direction, e))
                    nonfinite[rows] |= ~torch.isfinite(out).all(dim=1)
                    conf[rows, j], pred[rows, j] = out.softmax(dim=1).max(dim=1)
                if policy:
                    assert targets is not None and t_pred is not None and t_prob is not None
                    assert t is not None and t_direction is not None  # a policy gives targets and directions
                    targets[rows] = t
                    for j, e in enumerate(targeted_eps):
                        out = logits if e == 0 else infer_all(perturb(x, t_direction, e))
                        nonfinite[rows] |= ~torch.isfinite(out).all(dim=1)
                        t_pred[rows, j] = out.argmax(dim=1)
                        t_prob[rows, j] = out.softmax(dim=1).gather(1, t[:, None]).squeeze(1)
            if robust is not None:
                robust.run_batch(
                    forward_all, x, y, rows, logits, raw_direction, t, pred[rows], infer=infer_all
                )
            if keep_directions:
                if directions is None or inputs is None:  # the first batch: all three are allocated together
                    # Host memory, not the device's: N·C·H·W·(4 + 1 + 1) bytes for a whole dataset.
                    pin = device.type == "cuda"
                    shape = (n, *x.shape[1:])
                    directions = torch.empty(shape, dtype=torch.int8, device="cpu", pin_memory=pin)
                    inputs = torch.empty(shape, dtype=torch.float32, device="cpu", pin_memory=pin)
                    t_directions = (
                        torch.empty(shape, dtype=torch.int8, device="cpu", pin_memory=pin) if policy else None
                    )
                directions[rows].copy_(direction.to(torch.int8), non_blocking=True)
                inputs[rows].copy_(x, non_blocking=True)
                if policy:
                    assert t_directions is not None and t_direction is not None
                    t_directions[rows].copy_(t_direction.to(torch.int8), non_blocking=True)
            for index in wanted:
                if first_index + start <= index < first_index + stop:
                    row = index - first_index - start
                    kept[index] = (x[row].detach().clone(), direction[row].clone())
            start = stop
            if progress is not None:
                progress(start, n)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the non-blocking host copies above must land before use
    if start != n:
        raise DatasetError(f"the dataset yielded {start} samples, {n} were announced")
    bad = int(nonfinite.sum())
    if bad:
        raise ModelError(
            f"the model produced NaN or infinite logits for {bad} sample(s); check its weights and inputs"
        )

    def cpu(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.cpu()

    return SweepResult(
        labels=labels.cpu(),
        clean_pred=clean_pred.cpu(),
        clean_conf=clean_conf.cpu(),
        eps=eps,
        pred=pred.cpu(),
        conf=conf.cpu(),
        targeted_eps=targeted_eps,
        policy=policy,
        targets=cpu(targets),
        targeted_pred=cpu(t_pred),
        target_prob=cpu(t_prob),
        selected={i: (a.cpu(), b.cpu()) for i, (a, b) in kept.items()},
        directions=cpu(directions),
        inputs=cpu(inputs),
        targeted_directions=cpu(t_directions),
        robust=robust,
        inference_layout=infer_all.layout,
    )
