"""Core of the provider: pure functions and types that never import Airflow.

Everything here can be called from any CI system (see :mod:`airflow_mlops.cli`).
"""
