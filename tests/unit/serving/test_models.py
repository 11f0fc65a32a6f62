"""Input validation against the signature, and the native predict paths of a loaded model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.errors import MlopsInputError
from tests.unit.serving.conftest import wrap

# The matrix path hands the fitted steps a matrix; the gateway process silences this warning once.
pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names")


def test_numeric_pipeline_takes_the_matrix_path_with_identical_answers(bc_models, bc_outcomes, bc_records):
    model = bc_models["1"]
    assert model.uses_matrix_path
    batch = model.batch(bc_records)
    preds, proba = model.predict(batch)
    pipe = bc_outcomes[0].model
    frame = pd.DataFrame(bc_records)
    np.testing.assert_array_equal(preds, pipe.predict(frame))
    np.testing.assert_allclose(proba, pipe.predict_proba(frame), rtol=0, atol=1e-12)
    assert model.class_labels == [0, 1]


def test_one_record_predicts_and_frame_matches_signature_order(bc_models, bc_records):
    model = bc_models["1"]
    batch = model.batch([bc_records[0]])
    assert batch.n_rows == 1 and list(batch.X.columns) == model.feature_names
    preds, proba = model.predict(batch)
    assert preds.shape == (1,) and proba.shape == (1, 2)


def test_missing_column_names_it(bc_models, bc_records):
    rec = dict(bc_records[0])
    del rec["worst area"]
    with pytest.raises(MlopsInputError, match=r"Input record 1 has no column 'worst area'"):
        bc_models["1"].batch([bc_records[1], rec])


@pytest.mark.parametrize("bad", ["12.5", True, [1.0], {"v": 1}])
def test_wrong_type_names_column_and_record(bc_models, bc_records, bad):
    rec = dict(bc_records[0])
    rec["mean area"] = bad
    with pytest.raises(MlopsInputError) as e:
        bc_models["1"].batch([bc_records[0], rec])
    msg = str(e.value)
    assert "Column 'mean area' takes numbers" in msg and "input record 1" in msg and type(bad).__name__ in msg


def test_null_is_a_missing_value_the_pipeline_imputes(bc_models, bc_records):
    rec = dict(bc_records[0])
    rec["mean area"] = None
    batch = bc_models["1"].batch([rec])
    assert math.isnan(batch.matrix[0, bc_models["1"].feature_names.index("mean area")])
    preds, _ = bc_models["1"].predict(batch)
    assert preds.shape == (1,)


def test_records_must_be_objects(bc_models):
    with pytest.raises(MlopsInputError, match="Input record 0 is list"):
        bc_models["1"].batch([[1.0, 2.0]])


def test_extra_fields_are_ignored(bc_models, bc_records):
    rec = {**bc_records[0], "user_id": "u-1"}
    assert list(bc_models["1"].batch([rec]).X.columns) == bc_models["1"].feature_names


def test_mixed_types_use_the_pipeline_and_check_text_columns():
    from airflow_mlops.core.training import Candidate, train_model

    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame(
        {
            "size": rng.normal(size=n),
            "colour": rng.choice(["red", "blue", "green"], n),
            "flag": rng.random(n) > 0.5,
        }
    )
    df["y"] = ((df["size"] > 0) ^ (df["colour"] == "red")).astype(int)
    outcome = train_model(
        df, "y", [Candidate("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 5})]
    )
    model = wrap(outcome, name="mixed")
    assert not model.uses_matrix_path
    kinds = {c.name: c.kind for c in model.columns}
    assert kinds == {"size": "number", "colour": "string", "flag": "boolean"}
    records = df.drop(columns="y").head(20).to_dict(orient="records")
    preds, proba = model.predict(model.batch(records))
    np.testing.assert_array_equal(preds, outcome.model.predict(df.drop(columns="y").head(20)))
    with pytest.raises(MlopsInputError, match="Column 'colour' takes text"):
        model.batch([{**records[0], "colour": 3}])
    with pytest.raises(MlopsInputError, match="Column 'flag' takes true/false"):
        model.batch([{**records[0], "flag": "yes"}])


def test_regressor_has_no_probabilities():
    from sklearn.datasets import load_diabetes

    from airflow_mlops.core.training import Candidate, train_model

    df = load_diabetes(as_frame=True).frame
    outcome = train_model(df, "target", [Candidate("sklearn.linear_model.Ridge")])
    model = wrap(outcome, name="diabetes")
    assert model.uses_matrix_path and not model.is_classifier
    records = df.drop(columns="target").head(7).to_dict(orient="records")
    preds, proba = model.predict(model.batch(records))
    assert proba is None
    np.testing.assert_allclose(preds, outcome.model.predict(df.drop(columns="target").head(7)))
    assert model.coerce_labels([1.5]) == [1.5]


def test_labels_map_onto_classes(bc_models):
    model = bc_models["1"]
    assert model.coerce_labels([1, "0", 0]) == [1, 0, 0]
    with pytest.raises(MlopsInputError, match=r"Label 'cat' is not a class .* send one of \[0, 1\]"):
        model.coerce_labels(["cat"])
