"""The Docker backend's host-side set-up (no engine needed)."""

from __future__ import annotations

import os
from pathlib import Path

from airflow_mlops.deploy import docker_backend


def test_prediction_log_folder_is_never_world_writable(tmp_path: Path):
    """The container's uid owns the folder (as root) or our group lets it write (not root): 0770 either
    way, nothing for other users (issue 10)."""
    folder = tmp_path / "predictions"
    group = docker_backend._writable_by_container(folder)
    mode = folder.stat().st_mode & 0o777
    assert mode == 0o770 and not mode & 0o007
    if os.geteuid() == 0:
        assert group is None and folder.stat().st_uid == docker_backend.GATEWAY_UID
    else:
        assert group == os.getegid()
