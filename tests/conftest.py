"""Shared fixtures: tiny seeded models and synthetic data; nothing is downloaded.

Helpers, builders and harnesses live in tests/support/; conftest.py files hold fixtures only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

# Before anything imports tests.support: its asserts are then rewritten as the tests' own are.
pytest.register_assert_rewrite("tests.support")

from tests.support.seaweed import SeaweedServer  # noqa: E402
from tests.support.tiny import TinyConvNet  # noqa: E402


@pytest.fixture
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return TinyConvNet().eval()


@pytest.fixture
def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(24, 1, 10, 10, generator=generator)
    y = torch.randint(0, 4, (24,), generator=generator)
    return x, y


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory) -> Iterator[SeaweedServer]:
    """A real S3 server (SeaweedFS) of this session on free loopback ports; tests make their own buckets."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()
