"""Pure domain layer: models, datasets, attacks, CAMs, architecture audit, reports."""
