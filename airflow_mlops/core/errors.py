"""Errors raised for bad input: each message names the problem and the fix."""

from __future__ import annotations


class MlopsInputError(ValueError):
    """Bad input from the user (data, configuration or arguments); nothing was changed."""


class MlopsServiceError(RuntimeError):
    """A service the task depends on (MLflow, DVC, Prometheus, a gateway) cannot be used."""


class MlopsConflictError(RuntimeError):
    """Shared state changed under the caller (another writer won); nothing was changed: re-read, retry.

    Not a :class:`MlopsServiceError`: the service works, and retrying blindly would undo the other write.
    """
