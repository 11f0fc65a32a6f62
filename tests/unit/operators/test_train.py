"""TrainOperator's arguments: bad ones are package input errors, raised when the DAG is parsed."""

from __future__ import annotations

import re

import pytest

from airflow_mlops.core.errors import MlopsInputError


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({}, "Give `data` (a file or folder) or `dvc_path`"),
        ({"data": "x.csv", "serialization": "pickle"}, "use 'cloudpickle' or 'skops'"),
    ],
)
def test_bad_arguments_are_input_errors(kwargs, text):
    from airflow_mlops.operators.train import TrainOperator

    with pytest.raises(MlopsInputError, match=re.escape(text)):
        TrainOperator(task_id="t", registered_model_name="m", target="y", **kwargs)
