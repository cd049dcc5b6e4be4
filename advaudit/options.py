"""Evaluation options shared by `advaudit evaluate` (local) and `advaudit jobs submit` (server)."""

from __future__ import annotations

import argparse

from services.specs import DEFAULT_CAM_EPS, DEFAULT_EPS, EvaluationConfig, parse_eps_list, parse_eps_value


def floats(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated numbers."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_evaluation_options(p: argparse.ArgumentParser) -> None:
    """The options of one evaluation, named as in report.json's config (kebab-case here)."""
    p.add_argument("--eps", default=None, help="ε list in [0, 1], fractions allowed (default 0,1/255,…,32/255)")
    p.add_argument("--targeted", default=None, help="targeted FGSM policy: class:K, random, least-likely or next")
    p.add_argument("--targeted-eps", default=None, help="ε list for the targeted sweep (default: --eps)")
    p.add_argument("--cam", default="auto", help="auto, none, or a layer path for Grad-CAM (e.g. features.6)")
    p.add_argument("--cam-eps", default=str(DEFAULT_CAM_EPS), help="ε of the adversarial CAMs (default 8/255)")
    p.add_argument("--cam-samples", type=int, default=16, help="images in the CAM gallery (default 16)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (CUDA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-adversarial", action="store_true", help="also write adversarial.npz (float32, lossless)")


def config_from_args(args: argparse.Namespace) -> EvaluationConfig:
    """The validated EvaluationConfig (ConfigError on a bad value)."""
    return EvaluationConfig(
        eps=parse_eps_list(args.eps) if args.eps else DEFAULT_EPS,
        targeted=args.targeted, targeted_eps=parse_eps_list(args.targeted_eps) if args.targeted_eps else None,
        cam=args.cam, cam_eps=parse_eps_value(args.cam_eps), cam_samples=args.cam_samples, limit=args.limit,
        batch_size=args.batch_size, device=args.device, precision=args.precision,
        channels_last=args.channels_last, seed=args.seed, save_adversarial=args.save_adversarial,
    )
