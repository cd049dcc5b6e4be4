"""Train the shipped demo models (and the audit demo's gap-cnn variants) on digits, reproducibly, as TorchScript."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/train_demo_models.py` without installing
    sys.path.insert(0, str(REPO_ROOT))

from services.datasets import digits_split  # noqa: E402
from services.zoo import ARCHITECTURES, build_architecture  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "services" / "demo_models"
# Bit-identical retraining holds only on the same torch build and CPU instruction set (the kernels, and so
# the rounding, differ between e.g. AVX2 and AVX512); this file records where the shipped models were trained.
TRAINED_ON = "TRAINED_ON.json"
TRAINING_THREADS = 1
MIN_TEST_ACCURACY = 0.95
BATCH_SIZE = 32
LEARNING_RATE = 1e-2
EPOCHS = {"gap-cnn": 12, "separable-cnn": 8, "dilated-cnn": 6}
MAX_SHIFT = 1  # pixels of random translation; digits are centred, so small shifts teach some invariance


class Variant(NamedTuple):  # not a dataclass: the tests load this file without registering it as a module
    """A retrained version of a demo architecture, for the regression-audit demo and tests."""

    arch: str
    epochs: int
    seed: int = 0
    augment: bool = True
    purpose: str = ""


# Both are "new versions" of gap-cnn. Without the shift augmentation and trained longer, the fragile one is
# slightly *more* accurate but far less robust (FGSM accuracy at 8/255 about 19 pp lower): exactly what an
# audit must catch. The retrained one only changes the seed: an equivalent model an audit must let pass.
VARIANTS = {
    "gap-cnn-fragile": Variant(
        "gap-cnn",
        epochs=30,
        augment=False,
        purpose="more accurate, far less robust (no augmentation, 30 epochs)",
    ),
    "gap-cnn-retrained": Variant("gap-cnn", epochs=12, seed=1, purpose="equivalent retraining (seed 1)"),
}


def _shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to MAX_SHIFT pixels (zero fill), drawn from the seeded generator."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (MAX_SHIFT,) * 4)
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (n, 2), generator=generator)
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
    )


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of an eval-mode model."""
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train_demo_model(
    name: str, *, epochs: int | None = None, seed: int = 0, augment: bool = True
) -> tuple[nn.Module, float]:
    """Train one architecture from `seed`; returns the model in eval mode and its digits test accuracy."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    # one thread fixes the order of every floating-point reduction, which is what makes reruns identical
    torch.set_num_threads(TRAINING_THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        x_train, y_train = (torch.from_numpy(a) for a in digits_split("train"))
        model = build_architecture(name, num_classes=10, in_channels=1)
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        total = epochs if epochs is not None else EPOCHS[name]
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=LEARNING_RATE, total_steps=total * -(-len(x_train) // BATCH_SIZE)
        )
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(total):
            order = torch.randperm(len(x_train), generator=generator)
            for start in range(0, len(order), BATCH_SIZE):
                batch = order[start : start + BATCH_SIZE]
                inputs = _shift(x_train[batch], generator) if augment else x_train[batch]
                loss = nn.functional.cross_entropy(model(inputs), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        model.eval()
        x_test, y_test = (torch.from_numpy(a) for a in digits_split("test"))
        return model, accuracy(model, x_test, y_test)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def train_variant(name: str) -> tuple[nn.Module, float]:
    """Train the variant `name` of VARIANTS, deterministically like the demo models."""
    variant = VARIANTS[name]
    return train_demo_model(variant.arch, epochs=variant.epochs, seed=variant.seed, augment=variant.augment)


def training_environment() -> dict:
    """What bit-identical retraining depends on, as recorded next to the shipped models."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # oneDNN picks other fp32 kernels on a CPU with AMX tiles, even at the same capability (AVX512)
        "amx": bool(torch.cpu._is_amx_tile_supported()),
        "threads": TRAINING_THREADS,
    }


def write_trained_on(folder: Path) -> Path:
    """Write TRAINED_ON.json into `folder` (aside, then renamed, like the models)."""
    target = folder / TRAINED_ON
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(training_environment(), indent=2) + "\n")
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Train every demo architecture, save it, and fail when one misses the accuracy bar."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the .pt files")
    parser.add_argument(
        "--only", choices=sorted([*ARCHITECTURES, *VARIANTS]), action="append", help="train just these"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.only or [*ARCHITECTURES, *VARIANTS]:
        started = time.perf_counter()
        model, test_accuracy = train_variant(name) if name in VARIANTS else train_demo_model(name)
        seconds = time.perf_counter() - started
        target = args.out / f"{name}.pt"
        partial = target.with_suffix(".pt.partial")  # written aside, then renamed: never a half-written model
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but is the shipped format
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.script(model), str(partial))
        partial.replace(target)
        print(f"{name:17s} test accuracy {test_accuracy:.2%}  trained in {seconds:.1f} s  → {target}")
        if test_accuracy < MIN_TEST_ACCURACY:
            failed.append(name)
    if args.out.resolve() == DEFAULT_OUT.resolve():  # the shipped models: record where they were trained
        previous = args.out / TRAINED_ON
        if args.only and set(args.only) != {*ARCHITECTURES, *VARIANTS} and previous.is_file():
            recorded = json.loads(previous.read_text())
            if recorded != training_environment():
                print(
                    f"warning: the other shipped models were trained on {recorded}, not here; retrain them all "
                    f"so that {TRAINED_ON} describes every file",
                    file=sys.stderr,
                )
        print(f"training environment → {write_trained_on(args.out)}")
    if failed:
        print(f"below {MIN_TEST_ACCURACY:.0%} test accuracy: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
