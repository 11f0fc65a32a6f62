"""RegistryEventTrigger against a real MLflow server: its ``run()`` async generator, driven in this test's
event loop as the triggerer would (the AssetWatcher path through a real triggerer is in
tests/deployment/test_release_events.py)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from airflow_mlops.triggers.registry import RegistryEventTrigger


def _version(client, name: str) -> str:
    """A new version of ``name`` (the registry only: no artifact is needed to watch it)."""
    run = client.create_run(client.create_experiment(f"{name}-{time.time_ns()}"))
    return str(client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id).version)


def test_run_yields_new_versions_and_moved_aliases_and_keeps_its_cursor(
    mlflow_conn, mlflow_client, model_name
):
    mlflow_client.create_registered_model(model_name)
    _version(mlflow_client, model_name)  # exists before the watch starts: no event for it
    env_before = dict(os.environ)
    trigger = RegistryEventTrigger(model_name=model_name, poll_interval=0.3, request_timeout=20)

    async def scenario() -> list[dict]:
        gen = trigger.run()
        nxt = asyncio.ensure_future(gen.__anext__())
        deadline = time.monotonic() + 30
        while trigger._cursor is None:  # the first poll records the registry as it is
            assert time.monotonic() < deadline and not nxt.done()
            await asyncio.sleep(0.05)
        await asyncio.to_thread(_version, mlflow_client, model_name)
        events = [(await asyncio.wait_for(nxt, 30)).payload]
        await asyncio.to_thread(mlflow_client.set_registered_model_alias, model_name, "champion", "2")
        events.append((await asyncio.wait_for(gen.__anext__(), 30)).payload)
        await asyncio.to_thread(mlflow_client.set_registered_model_alias, model_name, "champion", "1")
        events.append((await asyncio.wait_for(gen.__anext__(), 30)).payload)
        await gen.aclose()
        return events

    events = asyncio.run(scenario())
    assert events == [
        {"event": "model_version.created", "model": model_name, "version": "2"},
        {"event": "model_version_alias.created", "model": model_name, "alias": "champion", "version": "2"},
        {"event": "model_version_alias.created", "model": model_name, "alias": "champion", "version": "1",
         "previous_version": "2"},
    ]  # fmt: skip
    assert trigger._cursor == {"versions": ["1", "2"], "aliases": {"champion": "1"}}
    assert dict(os.environ) == env_before  # nothing process-wide was touched
    # The cursor is state, not configuration: the serialized trigger does not carry it.
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_mlops.triggers.registry.RegistryEventTrigger"
    assert RegistryEventTrigger(**kwargs).serialize() == (classpath, kwargs) and "_cursor" not in kwargs


def test_alias_filter_and_event_kinds(mlflow_conn, mlflow_client, model_name):
    mlflow_client.create_registered_model(model_name)
    trigger = RegistryEventTrigger(
        model_name=model_name, events=["model_version_alias.created"], aliases=["champion"], poll_interval=0.2
    )

    async def scenario() -> list[dict]:
        assert await trigger.poll_once() == []  # the cursor starts here
        await asyncio.to_thread(_version, mlflow_client, model_name)
        await asyncio.to_thread(mlflow_client.set_registered_model_alias, model_name, "challenger", "1")
        first = await trigger.poll_once()  # a new version and an alias nobody watches: nothing
        await asyncio.to_thread(mlflow_client.set_registered_model_alias, model_name, "champion", "1")
        return [first, await trigger.poll_once()]

    first, second = asyncio.run(scenario())
    assert first == []
    assert second == [
        {"event": "model_version_alias.created", "model": model_name, "alias": "champion", "version": "1"}
    ]
    with pytest.raises(ValueError, match="cannot be polled"):
        RegistryEventTrigger(model_name=model_name, events=["model_version_tag.set"])


def test_a_dead_mlflow_is_reported_quickly_and_the_watch_goes_on(monkeypatch, capsys):
    from airflow_mlops.core.errors import MlopsServiceError
    from airflow_mlops.core.net import free_port
    from tests.conftest import conn_env

    dead = f"http://user:pw-secret@127.0.0.1:{free_port()}"
    monkeypatch.setenv(*conn_env("mlflow_dead", {"conn_type": "mlflow", "host": dead}))
    trigger = RegistryEventTrigger(model_name="m", mlflow_conn_id="mlflow_dead", poll_interval=0.5)

    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(MlopsServiceError, match="unreachable"):
            await trigger.poll_once()
        assert time.monotonic() - started < 15
        gen = trigger.run()
        with pytest.raises(asyncio.TimeoutError):  # no event, no crash: it keeps polling
            await asyncio.wait_for(gen.__anext__(), 3)

    asyncio.run(scenario())
    logged = capsys.readouterr()  # Airflow's structlog writes the trigger's log to stdout here
    failures = [line for line in (logged.out + logged.err).splitlines() if "registry failed" in line]
    assert failures and all("pw-secret" not in line for line in failures)
