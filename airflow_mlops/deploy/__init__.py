"""Deploying model versions behind the gateway: backends (local process, Docker), infra validation,
rollout strategies with automatic rollback, the promotion ledger and the deployment state.

Core code: no Airflow import. The Airflow face is :class:`airflow_mlops.operators.deploy.DeployOperator`.
"""
