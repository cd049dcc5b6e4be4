"""Bounds that every surface (CLI, API, dashboard, worker) applies the same way, each declared once here."""

from __future__ import annotations

# More classes than any real classification set (ImageNet-21k has 21,841): a larger label is a corrupt file,
# and the count must fit the database's integer columns.
MAX_CLASSES = 100_000
# The ε values of one sweep (each costs a forward pass per sample): the list form and the comma-separated
# form of every ε list meet this one limit.
MAX_EPS_VALUES = 256
