"""The test environment: whether CI is running, cross-check imports that must not silently skip there, free ports."""

from __future__ import annotations

import importlib
import os
import socket
from types import ModuleType

import pytest


def in_ci() -> bool:
    """True when the `CI` environment variable is set (to anything but an empty/false-like value)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(module_name: str) -> ModuleType:
    """Import and return `module_name` for a cross-check test.

    Missing locally, the test is skipped; in CI (the `CI` environment variable is set, as `.ci/run` runs
    with CI=true) it fails instead, so a cross-check can never silently drop out of the pipeline.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        message = f"cross-check dependency {module_name!r} cannot be imported: {error}"
        if in_ci():
            pytest.fail(
                f"{message} (CI is set, so this is a failure, not a skip; run `make install`)", pytrace=False
            )
        pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
