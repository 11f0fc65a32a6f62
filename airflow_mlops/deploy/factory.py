"""Picks a deploy backend by name."""

from __future__ import annotations

from typing import Any

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.deploy.backends import ExternalBackend, GatewayBackend, LocalBackend
from airflow_mlops.deploy.docker_backend import DockerBackend


def make_backend(kind: str, **options: Any) -> GatewayBackend:
    """A backend by name.

    :param kind: ``local``, ``docker`` or ``external``.
    :param options: the backend's constructor arguments.
    :raises MlopsInputError: unknown backend.
    """
    if kind == "local":
        return LocalBackend(**options)
    if kind == "external":
        return ExternalBackend(**options)
    if kind == "docker":
        return DockerBackend(**options)
    raise MlopsInputError(f"Unknown deploy backend {kind!r}: use 'local', 'docker' or 'external'.")
