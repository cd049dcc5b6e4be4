#!/usr/bin/env python
"""Side-by-side benchmark of the ε-sweep engine and Grad-CAM against what people use today.

Contenders run interleaved in one process (the order rotates every round), each after one warm-up
run, and the median of `--repeats` timed runs is compared as a RATIO: shared, noisy machines make
absolute seconds meaningless, ratios measured side by side much less so.

Run from the repository root (see bench/README.md):

    python bench/bench_engine.py                                   # CPU defaults, a few minutes
    python bench/bench_engine.py --device cuda --model resnet50 --size 224 --n 1024 \
        --batch-size 128 --precision both --channels-last --skip-art

Writes bench/results/engine-<device>.json and .md (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/bench_engine.py` works without an installed package

from services.architecture import audit_architecture  # noqa: E402
from services.attacks import frozen_eval  # noqa: E402
from services.cams import GradCAM, pearson  # noqa: E402
from services.sweep import run_sweep  # noqa: E402

# Targets from the brief; "le" = ratio must be at most the value, "ge" = at least.
CPU_TARGETS = {
    "ours_vs_bound": ("le", 1.10),
    "cam_pgc_vs_ours": ("ge", 3.0),
    "cam_captum_vs_ours": ("ge", 1.3),
}
CUDA_TARGETS = {
    "ours_vs_bound": ("le", 1.05),
    "ta_fp32_vs_ours_bf16": ("ge", 4.0),
    "bf16_acc_pp": ("le", 0.5),
}


def log(message: str = "") -> None:
    print(message, flush=True)


# ----------------------------------------------------------------------------------------------- timing


@dataclass
class Contender:
    key: str
    label: str
    fn: Callable[[], object]
    repeats: int
    times: list[float] = field(default_factory=list)
    peak_mem: int | None = None
    result: object = None
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


def measure(
    contenders: list[Contender], warmup: int, device: torch.device, cleanup: Callable[[], None]
) -> None:
    """Interleaved rounds: warm-ups first, then timed runs; each round starts one contender later."""
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    rounds = warmup + max((c.repeats for c in contenders), default=0)
    for r in range(rounds):
        live = [c for c in contenders if c.error is None and (r < warmup or len(c.times) < c.repeats)]
        if not live:
            break
        shift = r % len(live)
        for c in live[shift:] + live[:shift]:
            cleanup()
            gc.collect()
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            sync()
            started = time.perf_counter()
            try:
                out = c.fn()
                sync()
            except Exception as exc:  # a broken contender is reported, not fatal
                c.error = f"{type(exc).__name__}: {exc}"
                log(f"  !! {c.label} failed and is dropped: {c.error}")
                traceback.print_exc(limit=3)
                continue
            elapsed = time.perf_counter() - started
            c.result = out
            if cuda:
                c.peak_mem = max(c.peak_mem or 0, torch.cuda.max_memory_allocated(device))
            phase = "warm-up" if r < warmup else f"run {len(c.times) + 1}/{c.repeats}"
            if r >= warmup:
                c.times.append(elapsed)
            log(f"  [{phase:>9}] {c.label:<44} {elapsed:9.3f} s")
    cleanup()


# ------------------------------------------------------------------------------------------ contenders


def make_ours(model, batches, n, num_classes, eps, device, precision, channels_last):
    def run() -> torch.Tensor:
        result = run_sweep(
            model,
            batches,
            num_samples=n,
            num_classes=num_classes,
            eps=eps,
            device=device,
            precision=precision,
            channels_last=channels_last,
        )
        return result.pred

    return run


def make_bound(model, batches, n, eps, device, precision):
    """Per batch: exactly 1 forward+backward w.r.t. the input, then one inference forward per ε > 0."""
    bf16 = precision == "bf16"

    def amp():
        return (
            torch.autocast(device_type=device.type, dtype=torch.bfloat16)
            if bf16
            else contextlib.nullcontext()
        )

    def run() -> torch.Tensor:
        flags = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        pred = torch.empty(n, len(eps), dtype=torch.long, device=device)
        start = 0
        try:
            for x, y in batches:
                rows = slice(start, start + len(y))
                start += len(y)
                xg = x.detach().requires_grad_(True)
                with amp():
                    logits = model(xg)
                logits = logits.float()
                (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), xg)
                direction = grad.sign()
                logits = logits.detach()
                with torch.inference_mode():
                    for j, e in enumerate(eps):
                        if e == 0:  # x unchanged: the clean logits, as the engine does
                            out = logits
                        else:
                            with amp():
                                out = model(torch.clamp(x + e * direction, min=0, max=1))
                        pred[rows, j] = out.argmax(dim=1)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
        return pred.cpu()

    return run


def make_torchattacks(model, batches, n, eps, device):
    import torchattacks

    def run() -> torch.Tensor:
        pred = torch.empty(n, len(eps), dtype=torch.long, device=device)
        for j, e in enumerate(eps):
            attack = torchattacks.FGSM(model, eps=e)
            start = 0
            for x, y in batches:
                adv = attack(x, y)
                with torch.no_grad():
                    pred[start : start + len(y), j] = model(adv).argmax(dim=1)
                start += len(y)
        return pred.cpu()

    return run


def make_art(model, x_np, y_np, eps, device, num_classes, batch_size):
    logging.getLogger("art").setLevel(logging.WARNING)
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import PyTorchClassifier

    def run() -> torch.Tensor:
        classifier = PyTorchClassifier(
            model=model,
            loss=nn.CrossEntropyLoss(),
            input_shape=tuple(x_np.shape[1:]),
            nb_classes=num_classes,
            clip_values=(0.0, 1.0),
            device_type="gpu" if device.type == "cuda" else "cpu",
        )
        preds = []
        for e in eps:
            attack = FastGradientMethod(classifier, norm=np.inf, eps=e, batch_size=batch_size)
            adv = attack.generate(x_np, y=y_np)
            preds.append(classifier.predict(adv, batch_size=batch_size).argmax(axis=1))
        return torch.from_numpy(np.stack(preds, axis=1)).long()

    return run


def make_cam_ours(model, layer, batches, classes):
    def run() -> torch.Tensor:
        maps = []
        with GradCAM(model, model, layer) as cam:
            for (x, _), c in zip(batches, classes, strict=True):
                m, _ = cam(x, c)
                maps.append(m)
        return torch.cat(maps)

    return run


def make_cam_ours_frozen(model, layer, batches, classes):
    inner = make_cam_ours(model, layer, batches, classes)

    def run() -> torch.Tensor:
        with frozen_eval(model):
            return inner()

    return run


def make_cam_pgc(model, module, batches, classes):
    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def run() -> torch.Tensor:
        maps = []
        with PGCGradCAM(model=model, target_layers=[module]) as cam:
            for (x, _), c in zip(batches, classes, strict=True):
                targets = [ClassifierOutputTarget(k) for k in c.tolist()]
                maps.append(torch.from_numpy(np.asarray(cam(input_tensor=x, targets=targets))))
        return torch.cat(maps)

    return run


def make_cam_captum(model, module, batches, classes):
    from captum.attr import LayerAttribution, LayerGradCam

    def run() -> torch.Tensor:
        maps = []
        gradcam = LayerGradCam(model, module)
        for (x, _), c in zip(batches, classes, strict=True):
            raw = gradcam.attribute(x, target=c, relu_attributions=True)
            up = LayerAttribution.interpolate(raw, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]
            flat = up.flatten(1)
            low = flat.min(dim=1).values[:, None, None]
            span = (flat.max(dim=1).values[:, None, None] - low).clamp_min(1e-12)
            maps.append(((up - low) / span).detach())
        return torch.cat(maps)

    return run


# ------------------------------------------------------------------------------------------ set-up


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    return torch.device(name)


def default_layer(model: nn.Module, size: int) -> str:
    """The layer `--cam auto` would use for Grad-CAM: the last conv layer whose output map is spatial."""
    layer = audit_architecture(model, (3, size, size)).last_spatial_conv()
    if layer is None:
        raise SystemExit("no conv layer with a spatial output map at this size; pass --layer")
    return layer


def eps_grid(k: int, eps_max: float, zero: bool) -> tuple[float, ...]:
    if k < 1:
        raise SystemExit("--k must be at least 1")
    if zero:
        return tuple(float(v) for v in np.linspace(0.0, eps_max, k)) if k > 1 else (0.0,)
    return tuple(eps_max * (i + 1) / k for i in range(k))


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device, args) -> dict:
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "torchattacks": version("torchattacks"),
        "adversarial-robustness-toolbox": version("adversarial-robustness-toolbox"),
        "grad-cam": version("grad-cam"),
        "captum": version("captum"),
        "device": str(device),
    }
    if device.type == "cuda":  # only here: the CPU path never touches CUDA
        props = torch.cuda.get_device_properties(device)
        env.update(
            {
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "gpu": props.name,
                "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "sm_count": props.multi_processor_count,
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "tf32_conv": torch.backends.cudnn.allow_tf32,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            }
        )
    return env


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--model", default="resnet18", help="any torchvision classification model name")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--size", type=int, default=32, help="input height = width")
    p.add_argument("--n", type=int, default=512, help="number of samples")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--k", type=int, default=10, help="number of ε values")
    p.add_argument("--eps-max", type=float, default=16.0, help="largest ε, in units of 1/255")
    p.add_argument(
        "--no-zero",
        action="store_true",
        help="ε = (1..K)·max/K instead of linspace(0, max, K) with ε = 0 first",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs per contender (after --warmup)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--art-repeats", type=int, default=None, help="timed runs for ART (default: --repeats)")
    p.add_argument("--precision", choices=["fp32", "bf16", "both"], default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument(
        "--layer",
        default=None,
        help="Grad-CAM layer (default: the last conv layer with a spatial map, as --cam auto picks)",
    )
    p.add_argument("--skip-art", action="store_true")
    p.add_argument("--skip-torchattacks", action="store_true")
    p.add_argument("--skip-cam", action="store_true")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ reporting


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def fmt_value(value: float | None, unit: str) -> str:
    if unit == "×":
        return fmt_ratio(value)
    return "n/a" if value is None else f"{value:.2f} {unit}"


def verdict(value: float | None, target: tuple[str, float] | None) -> str:
    if target is None or value is None:
        return ""
    kind, bound = target
    ok = value <= bound if kind == "le" else value >= bound
    return f"{'PASS' if ok else 'MISS'} (target {'≤' if kind == 'le' else '≥'} {bound:g})"


def ratio(a: Contender | None, b: Contender | None) -> float | None:
    if a is None or b is None or a.median is None or b.median is None:
        return None
    return a.median / b.median


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *[line(r) for r in rows]]


def timing_table(
    contenders: list[Contender], ref: Contender | None, bound: Contender | None, n: int, unit: str, cuda: bool
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: median/min/max seconds, throughput, ratios to `ref` (and `bound`), peak memory."""
    headers = ["contender", "median s", "min s", "max s", "runs", f"{unit}/s", "× ours"]
    headers += (["× bound"] if bound is not None else []) + (["peak GiB"] if cuda else [])
    rows = []
    for c in contenders:
        if c.error or not c.times:
            rows.append([c.label, "failed" if c.error else "no runs"] + [""] * (len(headers) - 2))
            continue
        med = c.median
        row = [
            c.label,
            f"{med:.3f}",
            f"{min(c.times):.3f}",
            f"{max(c.times):.3f}",
            str(len(c.times)),
            f"{n / med:,.0f}",
            fmt_ratio(ratio(c, ref)),
        ]
        if bound is not None:
            row.append(fmt_ratio(ratio(c, bound)))
        if cuda:
            row.append(f"{c.peak_mem / 2**30:.2f}" if c.peak_mem else "")
        rows.append(row)
    return headers, rows


# ------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings(
        "ignore", category=UserWarning, module=r"(captum|art|pytorch_grad_cam|torchattacks)"
    )
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    eps = eps_grid(args.k, args.eps_max / 255, not args.no_zero)
    n, bs, num_classes = args.n, args.batch_size, args.num_classes
    art_repeats = args.art_repeats if args.art_repeats is not None else args.repeats
    targets = CUDA_TARGETS if cuda else CPU_TARGETS
    env = environment(device, args)
    notes: list[str] = []

    log(f"advaudit engine benchmark — device {device}" + (f" ({env['gpu']})" if cuda else ""))
    log(
        f"torch {env['torch']} (CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')})"
        if cuda
        else f"torch {env['torch']}, {env['torch_threads']} threads on {env['cpu_count']} CPUs, {env['processor'] or ''}"
    )
    log(
        f"model {args.model} ({num_classes} classes, random init seed {args.seed}) at 3×{args.size}×{args.size}, "
        f"N={n}, batch {bs}, K={len(eps)}, precision {args.precision}, channels_last={args.channels_last}"
    )
    log("ε = " + ", ".join(f"{e * 255:.3g}/255" for e in eps))

    torch.manual_seed(args.seed)
    model = torchvision.models.get_model(args.model, weights=None, num_classes=num_classes).eval().to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    layer = args.layer or default_layer(model, args.size)
    module = model.get_submodule(layer)

    generator = torch.Generator().manual_seed(args.seed + 1)
    x_all = torch.rand(n, 3, args.size, args.size, generator=generator)
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():  # labels = the model's own clean fp32 predictions
        for start in range(0, n, bs):
            x = x_all[start : start + bs].to(device)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            batches.append((x, model(x).argmax(dim=1)))
    labels = torch.cat([y for _, y in batches]).cpu()
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    log(f"labels = clean predictions; class histogram {counts}")
    if max(counts) > 0.9 * n:
        notes.append(f"the random model predicts one class for {max(counts)}/{n} inputs")

    def cleanup() -> None:
        model.zero_grad(set_to_none=True)  # ART and pytorch-grad-cam leave parameter .grad behind

    report: dict = {
        "config": {**vars(args), "eps": list(eps), "layer": layer, "art_repeats": art_repeats},
        "env": env,
        "sweep": {},
        "cam": {},
        "ratios": {},
        "notes": notes,
    }
    lines_md: list[str] = [f"# Engine benchmark — {device}" + (f" ({env['gpu']})" if cuda else ""), ""]
    lines_md.append(
        f"{args.model} at 3×{args.size}×{args.size}, N={n}, batch {bs}, K={len(eps)}, "
        f"channels_last={args.channels_last}, repeats {args.repeats} (median), torch {env['torch']}"
        + (f", CUDA {env['cuda']}" if cuda else f", {env['torch_threads']} threads")
    )
    lines_md.append("")
    ratios = report["ratios"]

    def record(key: str, value: float | None, label: str, unit: str = "×") -> None:
        target = targets.get(key)
        ratios[key] = {
            "value": value,
            "unit": unit,
            "label": label,
            "target": list(target) if target else None,
            "verdict": verdict(value, target) or None,
        }
        log(f"  {label:<58} {fmt_value(value, unit):>9}  {verdict(value, target)}")

    # ------------------------------------------------------------------ sweep
    if not args.skip_sweep:
        sweep: list[Contender] = []
        for prec in precisions:
            sweep.append(
                Contender(
                    f"ours_{prec}",
                    f"ours {prec} (run_sweep)",
                    make_ours(model, batches, n, num_classes, eps, device, prec, args.channels_last),
                    args.repeats,
                )
            )
            sweep.append(
                Contender(
                    f"bound_{prec}",
                    f"bound {prec} (1 fwd+bwd + fwd/ε>0)",
                    make_bound(model, batches, n, eps, device, prec),
                    args.repeats,
                )
            )
        if not args.skip_torchattacks:
            try:
                sweep.append(
                    Contender(
                        "torchattacks_fp32",
                        "torchattacks fp32 (FGSM per ε)",
                        make_torchattacks(model, batches, n, eps, device),
                        args.repeats,
                    )
                )
            except ImportError as exc:
                notes.append(f"torchattacks skipped: {exc}")
        if not args.skip_art:
            try:
                x_np, y_np = x_all.numpy(), labels.numpy()
                sweep.append(
                    Contender(
                        "art_fp32",
                        "ART fp32 (FastGradientMethod per ε)",
                        make_art(model, x_np, y_np, eps, device, num_classes, bs),
                        art_repeats,
                    )
                )
                if art_repeats != args.repeats:
                    notes.append(f"ART timed {art_repeats}× (others {args.repeats}×), same N")
            except ImportError as exc:
                notes.append(f"ART skipped: {exc}")
        log(
            f"\n== ε-sweep: {len(sweep)} contenders, {args.warmup} warm-up + up to "
            f"{max(c.repeats for c in sweep)} timed runs each, interleaved"
        )
        measure(sweep, args.warmup, device, cleanup)
        by = {c.key: c for c in sweep}
        ours, bound = by.get("ours_fp32") or by.get(f"ours_{precisions[0]}"), by.get(f"bound_{precisions[0]}")

        headers, rows = timing_table(sweep, ours, bound, n, "samples", cuda)
        log("\nε-sweep timings (× ours / × bound = median ÷ median of ours / of the bound; lower is faster)")
        for line in table(headers, rows):
            log(line)
        lines_md += ["## ε-sweep", "", *table(headers, rows), ""]

        log("\nratios")
        for prec in precisions:
            record(
                f"ours_vs_bound{'' if prec == 'fp32' else '_' + prec}",
                ratio(by.get(f"ours_{prec}"), by.get(f"bound_{prec}")),
                f"ours {prec} / bound {prec}",
            )
        ta = by.get("torchattacks_fp32")
        record(
            "ta_fp32_vs_ours_fp32", ratio(ta, by.get("ours_fp32")), "torchattacks fp32 / ours fp32 (speed-up)"
        )
        record(
            "art_fp32_vs_ours_fp32",
            ratio(by.get("art_fp32"), by.get("ours_fp32")),
            "ART fp32 / ours fp32 (speed-up)",
        )
        if "bf16" in precisions:
            record(
                "ta_fp32_vs_ours_bf16",
                ratio(ta, by.get("ours_bf16")),
                "torchattacks fp32 / ours bf16 (speed-up)",
            )
            record(
                "ours_fp32_vs_ours_bf16",
                ratio(by.get("ours_fp32"), by.get("ours_bf16")),
                "ours fp32 / ours bf16 (speed-up)",
            )

        # accuracy, in %, per ε, from the per-sample predictions (N, K) every contender returns
        preds = {c.key: c.result for c in sweep if c.error is None and isinstance(c.result, torch.Tensor)}
        acc = {k: (p == labels[:, None]).double().mean(dim=0).tolist() for k, p in preds.items()}
        acc_headers = ["ε (/255)"] + [by[k].label.split(" (")[0] for k in acc]
        has_bf16 = "ours_fp32" in acc and "ours_bf16" in acc
        if has_bf16:
            acc_headers.append("bf16−fp32 pp")
        acc_rows = []
        for j, e in enumerate(eps):
            row = [f"{e * 255:.3g}"] + [f"{100 * acc[k][j]:.2f}" for k in acc]
            if has_bf16:
                row.append(f"{100 * (acc['ours_bf16'][j] - acc['ours_fp32'][j]):+.2f}")
            acc_rows.append(row)
        log("\naccuracy (%) on the model's own clean fp32 predictions")
        for line in table(acc_headers, acc_rows):
            log(line)
        lines_md += ["### Accuracy (%) per ε", "", *table(acc_headers, acc_rows), ""]

        # Agreement: max |Δ accuracy| over ε (pp) and the share of (sample, ε) whose adversarial
        # prediction differs — the latter stays meaningful when accuracy collapses to 0 for both.
        checks: dict[str, dict] = {}
        for a, b in (
            ("ours_fp32", "torchattacks_fp32"),
            ("ours_fp32", "bound_fp32"),
            ("ours_fp32", "art_fp32"),
            ("ours_bf16", "bound_bf16"),
            ("ours_bf16", "ours_fp32"),
        ):
            if a in preds and b in preds:
                checks[f"{a} vs {b}"] = {
                    "max_abs_acc_diff_pp": 100 * max(abs(u - v) for u, v in zip(acc[a], acc[b], strict=True)),
                    "pred_mismatch_pct": 100 * float((preds[a] != preds[b]).double().mean()),
                    "pred_mismatch_count": int((preds[a] != preds[b]).sum()),
                }
        check_headers = ["pair", "max |Δacc| pp", "preds differing", "% of N·K"]
        check_rows = [
            [
                k,
                f"{v['max_abs_acc_diff_pp']:.4f}",
                str(v["pred_mismatch_count"]),
                f"{v['pred_mismatch_pct']:.3f}",
            ]
            for k, v in checks.items()
        ]
        log("\nagreement (0 / 0 = identical adversarial predictions for every sample and ε)")
        for line in table(check_headers, check_rows):
            log(line)
        if has_bf16:
            log("")
            record(
                "bf16_acc_pp",
                checks["ours_bf16 vs ours_fp32"]["max_abs_acc_diff_pp"],
                "max |acc bf16 − acc fp32| over ε",
                unit="pp",
            )
        report["sweep"] = {
            "contenders": {
                c.key: {
                    "label": c.label,
                    "times_s": c.times,
                    "median_s": c.median,
                    "error": c.error,
                    "peak_mem_bytes": c.peak_mem,
                    "accuracy": acc.get(c.key),
                }
                for c in sweep
            },
            "agreement": checks,
        }
        ratio_rows = [
            [v["label"], fmt_value(v["value"], v["unit"]), v["verdict"] or ""] for v in ratios.values()
        ]
        lines_md += ["### Ratios", "", *table(["ratio", "value", "verdict"], ratio_rows), ""]
        lines_md += ["### Agreement", "", *table(check_headers, check_rows), ""]
        del sweep, preds

    # ------------------------------------------------------------------ Grad-CAM
    if not args.skip_cam:
        classes = [y for _, y in batches]
        cams = [
            Contender(
                "cam_ours", "ours GradCAM", make_cam_ours(model, layer, batches, classes), args.repeats
            ),
            Contender(
                "cam_ours_frozen",
                "ours GradCAM, frozen params (as evaluation.py)",
                make_cam_ours_frozen(model, layer, batches, classes),
                args.repeats,
            ),
        ]
        for key, label, factory in (
            ("cam_pgc", "pytorch-grad-cam GradCAM", make_cam_pgc),
            ("cam_captum", "Captum LayerGradCam + interpolate/norm", make_cam_captum),
        ):
            try:
                cams.append(Contender(key, label, factory(model, module, batches, classes), args.repeats))
            except ImportError as exc:
                notes.append(f"{label} skipped: {exc}")
        log(f"\n== Grad-CAM on {layer!r} ({type(module).__name__}), N={n}, batch {bs}, classes = predictions")
        measure(cams, args.warmup, device, cleanup)
        by = {c.key: c for c in cams}
        ours = by["cam_ours"]
        headers, rows = timing_table(cams, ours, None, n, "images", cuda)
        log("\nGrad-CAM timings (× ours = median ÷ ours' median; higher = slower than ours)")
        for line in table(headers, rows):
            log(line)
        lines_md += [
            "## Grad-CAM",
            "",
            f"layer `{layer}`, classes = predicted classes",
            "",
            *table(headers, rows),
            "",
        ]
        log("\nratios")
        record("cam_pgc_vs_ours", ratio(by.get("cam_pgc"), ours), "pytorch-grad-cam / ours (speed-up)")
        record("cam_captum_vs_ours", ratio(by.get("cam_captum"), ours), "Captum / ours (speed-up)")
        record(
            "cam_ours_vs_ours_frozen", ratio(ours, by.get("cam_ours_frozen")), "ours / ours frozen (speed-up)"
        )

        agreement = {}
        mine = ours.result.float().cpu() if ours.result is not None else None
        spatial = None
        with torch.no_grad():
            if mine is not None:
                shapes: list[tuple[int, ...]] = []

                def grab(module_, inputs, output) -> None:
                    shapes.append(tuple(output.shape))

                handle = module.register_forward_hook(grab)
                try:
                    model(batches[0][0][:1])
                finally:
                    handle.remove()
                spatial = shapes[0][2:] if shapes else None
            for key in ("cam_ours_frozen", "cam_pgc", "cam_captum"):
                c = by.get(key)
                if mine is None or c is None or c.result is None:
                    continue
                theirs = c.result.float().cpu()
                flat_a = mine.flatten(1)
                flat_b = theirs.flatten(1)
                varying = (flat_a.std(1) > 0) & (flat_b.std(1) > 0)
                corr = pearson(mine[varying], theirs[varying]) if varying.any() else torch.empty(0)
                agreement[key] = {
                    "max_abs_diff": float((mine - theirs).abs().max()),
                    "pearson_mean": float(corr.mean()) if corr.numel() else None,
                    "pearson_min": float(corr.min()) if corr.numel() else None,
                    "constant_maps": int((~varying).sum()),
                }
        log(f"\nmap agreement with ours (layer output spatial size {spatial})")
        agree_rows = []
        for key, a in agreement.items():
            cells = [
                by[key].label,
                f"{a['max_abs_diff']:.2e}",
                "n/a" if a["pearson_mean"] is None else f"{a['pearson_mean']:.4f}",
                "n/a" if a["pearson_min"] is None else f"{a['pearson_min']:.4f}",
                str(a["constant_maps"]),
            ]
            agree_rows.append(cells)
        agree_headers = ["vs", "max |Δ|", "mean r", "min r", "constant maps"]
        for line in table(agree_headers, agree_rows):
            log(line)
        if spatial is not None and tuple(spatial) == (1, 1):
            notes.append(
                f"layer {layer!r} outputs a 1×1 map at {args.size}px: every Grad-CAM map should be "
                "constant, so the map comparison is vacuous (timings still hold). pytorch-grad-cam returns "
                "zeros; ours (and Captum with the same normalisation) stretch the ~1-ulp rounding noise of "
                "bilinear upsampling to [0, 1] by per-image min–max. Use --size 64+ or an earlier --layer "
                "to compare maps."
            )
        lines_md += ["### Map agreement with ours", "", *table(agree_headers, agree_rows), ""]
        report["cam"] = {
            "layer": layer,
            "layer_spatial": list(spatial) if spatial is not None else None,
            "contenders": {
                c.key: {
                    "label": c.label,
                    "times_s": c.times,
                    "median_s": c.median,
                    "error": c.error,
                    "peak_mem_bytes": c.peak_mem,
                }
                for c in cams
            },
            "agreement": agreement,
        }
        cam_ratio_rows = [
            [ratios[k]["label"], fmt_value(ratios[k]["value"], "×"), ratios[k]["verdict"] or ""]
            for k in ("cam_pgc_vs_ours", "cam_captum_vs_ours", "cam_ours_vs_ours_frozen")
        ]
        lines_md += ["### Grad-CAM ratios", "", *table(["ratio", "value", "verdict"], cam_ratio_rows), ""]

    if notes:
        log("\nnotes")
        for note in notes:
            log(f"  - {note}")
        lines_md += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    lines_md += ["## Environment", "", *table(["key", "value"], [[k, str(v)] for k, v in env.items()]), ""]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"engine-{device.type}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text("\n".join(lines_md))
    log(f"\nwrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
