"""Domain errors. Each message is written for the user: what is wrong and what to do about it."""


class AdvauditError(Exception):
    """Base class for every problem with the user's input, files or configuration."""


class ConfigError(AdvauditError):
    """An evaluation option is invalid (ε outside [0, 1], unknown policy, unknown layer, …)."""


class CheckpointError(AdvauditError):
    """A model file cannot be loaded safely (corrupt, unsupported, pickle payload, wrong shape)."""


class DatasetError(AdvauditError):
    """A dataset cannot be loaded safely (bad layout, label mismatch, zip bomb, traversal, empty)."""


class ModelError(AdvauditError):
    """The model misbehaved during evaluation (forward raised, NaN or infinite logits)."""


class EvaluationCancelled(AdvauditError):
    """The caller asked the evaluation to stop; raised at a batch boundary."""


class ShardError(AdvauditError):
    """A shard's stored outcomes are missing, unreadable, or belong to another job's options."""
