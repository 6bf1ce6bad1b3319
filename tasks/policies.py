"""Retry policies shared by the tasks: retry only failures that a second attempt can fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ptune.errors import ArtifactError, ConfigError, DataError, RegistryError, ValidationFailed
from ptune.packages import PackageError

TRANSIENT: tuple[type[BaseException], ...] = (OSError, TimeoutError, PackageError, RegistryError)
DETERMINISTIC: tuple[type[BaseException], ...] = (ConfigError, DataError, ValidationFailed, ArtifactError)
# A pinned file the index does not list, or whose bytes do not match the pin, fails the same way on a retry;
# an unreachable index or a cut-off download may not.
PERMANENT_PACKAGE_KINDS = frozenset({"unlisted", "mismatch"})

RetryCondition = Callable[[Any, Any, Any], bool]


def _exception(state: Any) -> BaseException | None:
    """The exception a failed state carries (None for any other state)."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a state without data carries no exception to judge
        return None
    return exc if isinstance(exc, BaseException) else None


def permanent(exc: BaseException | None) -> bool:
    """A failure a second attempt cannot fix: a DETERMINISTIC kind (gemma3-270m's TermsNotAccepted is a
    ModelError and a ConfigError), or a PackageError of a PERMANENT_PACKAGE_KINDS kind."""
    return isinstance(exc, DETERMINISTIC) or (isinstance(exc, PackageError) and exc.kind in PERMANENT_PACKAGE_KINDS)


def retry_on(*kinds: type[BaseException]) -> RetryCondition:
    """A `retry_condition_fn`: retry when the failure is one of `kinds` (default: I/O, network, registry)
    and not `permanent`."""
    kinds = kinds or TRANSIENT

    def should_retry(task: Any, task_run: Any, state: Any) -> bool:
        exc = _exception(state)
        return isinstance(exc, kinds) and not permanent(exc)

    should_retry.__name__ = f"retry_on({', '.join(k.__name__ for k in kinds)})"
    return should_retry


def retry_unless(*kinds: type[BaseException]) -> RetryCondition:
    """Retry any failure except `kinds` (default: bad config, bad data, bad artifact: the same input fails again)."""
    kinds = kinds or DETERMINISTIC

    def should_retry(task: Any, task_run: Any, state: Any) -> bool:
        return not isinstance(_exception(state), kinds)

    should_retry.__name__ = f"retry_unless({', '.join(k.__name__ for k in kinds)})"
    return should_retry
