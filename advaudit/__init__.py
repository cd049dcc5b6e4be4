"""advaudit: adversarial robustness evaluation for PyTorch image classifiers."""

__version__ = "0.1.0"
