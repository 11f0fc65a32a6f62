"""The gateway's JSON encoder takes any numpy array a model returns, contiguous or not."""

from __future__ import annotations

import json

import numpy as np

from airflow_mlops.serving.app import _dumps


def test_non_contiguous_arrays_are_encoded() -> None:
    # A column of a 2-D array is a strided view: orjson's numpy option refuses those on its own.
    probabilities = np.arange(12.0).reshape(3, 4)[:, 1]
    assert not probabilities.flags.c_contiguous
    out = json.loads(_dumps({"p": probabilities, "labels": np.array([0, 1, 1]), "n": np.int64(3)}))
    assert out == {"p": [1.0, 5.0, 9.0], "labels": [0, 1, 1], "n": 3}
