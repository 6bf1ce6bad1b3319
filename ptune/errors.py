"""The errors ptune raises at its edges; the CLI prints their message and exits 1 (no traceback)."""


class PtuneError(Exception):
    """Base class: the message alone must tell the user what was wrong and where."""


class ConfigError(PtuneError, ValueError):
    """params.yaml, a TrainConfig or a user task entry is invalid (message lists every problem)."""


class DataError(PtuneError):
    """A data file is missing, unreadable or malformed (message names file, row, field)."""


class ValidationFailed(PtuneError):
    """Great Expectations rejected a split; nothing downstream may run on it."""


class ArtifactError(PtuneError):
    """A prompt artifact is malformed, tampered with, or made for another base model."""


class ModelError(PtuneError):
    """A base model spec cannot be resolved or loaded."""


class RegistryError(PtuneError):
    """MLflow tracking or registry failure (unreachable server, missing alias, ...)."""
