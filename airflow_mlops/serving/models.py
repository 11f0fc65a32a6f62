"""Models behind the gateway: loaded from the MLflow registry, validated against their signature,
and predicted with the native scikit-learn estimator (not MLflow's generic pyfunc path)."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any, cast

from airflow_mlops.core import skops_trust
from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.redact import redact

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from airflow_mlops.core.tracking import MlflowTarget

# Signature types -> the kind of JSON value a column accepts (None is a missing value, imputed by the model).
_NUMBER_TYPES = {"double", "float", "long", "integer"}
_KIND_OF = {**dict.fromkeys(_NUMBER_TYPES, "number"), "string": "string", "boolean": "boolean"}
_ACCEPTED = {
    "number": frozenset({int, float, type(None)}),
    "string": frozenset({str, type(None)}),
    "boolean": frozenset({bool, type(None)}),
}
_WHAT = {"number": "numbers", "string": "text", "boolean": "true/false"}


@dataclass(frozen=True)
class Column:
    """One input column of the model's signature.

    :param name: column name.
    :param kind: ``number``, ``string``, ``boolean`` or ``any`` (not checked).
    :param type: the MLflow signature type, for messages.
    """

    name: str
    kind: str
    type: str


class Batch:
    """Validated request rows: a float matrix (all-numeric models) or one array per column.

    The DataFrame is built only when something asks for it: the matrix path never does.
    """

    __slots__ = ("names", "matrix", "n_rows", "_columns", "_X")

    def __init__(
        self,
        names: list[str],
        n_rows: int,
        *,
        matrix: np.ndarray | None = None,
        columns: dict[str, np.ndarray] | None = None,
        X: pd.DataFrame | None = None,
    ) -> None:
        if matrix is None and columns is None:
            raise TypeError("A Batch holds its values as a matrix or as columns: give one of them.")
        self.names = names
        self.n_rows = n_rows
        self.matrix = matrix
        self._columns = columns
        self._X = X

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """One array per column."""
        if self._columns is None:
            matrix = cast("np.ndarray", self.matrix)  # __init__ has one of matrix and columns
            self._columns = {c: matrix[:, j] for j, c in enumerate(self.names)}
        return self._columns

    @property
    def X(self) -> pd.DataFrame:
        """The DataFrame the model's pipeline takes."""
        if self._X is None:
            import pandas as pd

            if self.matrix is not None:
                self._X = pd.DataFrame(self.matrix, columns=self.names, copy=False)
            else:
                self._X = pd.DataFrame(self.columns, columns=self.names, copy=False)
        return self._X


@dataclass
class LoadedModel:
    """A registered model version ready to predict.

    :param name: registered model name.
    :param version: version number.
    :param estimator: the native scikit-learn estimator or pipeline.
    :param columns: input columns from the signature (empty: no signature, nothing checked).
    :param run_id: the MLflow run that produced it.
    :param input_example: the logged input example as records (for infrastructure checks).
    """

    name: str
    version: str
    estimator: Any
    columns: tuple[Column, ...] = ()
    run_id: str | None = None
    input_example: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.classes: Any = getattr(self.estimator, "classes_", None)
        self.is_classifier = self.classes is not None and hasattr(self.estimator, "predict_proba")
        self._names = [c.name for c in self.columns]
        # itemgetter pulls a row's values in one C call (a tuple, even for one column).
        names = self._names
        if len(names) == 1:
            self._getter: Any = lambda r: (r[names[0]],)
        elif names:
            self._getter = itemgetter(*names)
        else:
            self._getter = None  # no signature: records go to the frame as they are
        self._all_numbers = bool(self.columns) and all(c.kind == "number" for c in self.columns)
        # One predict_proba pass gives labels too when argmax(proba) is how the model labels;
        # checked on the example so models that label otherwise (e.g. SVC) keep calling predict.
        self._labels_from_proba = False
        self._fast: _MatrixPipeline | None = None
        if self.input_example:
            import numpy as np

            example = self.batch(self.input_example)
            if self.is_classifier:
                proba = self.estimator.predict_proba(example.X)
                self._labels_from_proba = bool(
                    np.array_equal(
                        np.asarray(self.classes)[proba.argmax(axis=1)], self.estimator.predict(example.X)
                    )
                )
            if self._all_numbers:
                self._fast = _MatrixPipeline.build(self.estimator, self._names, example, self.is_classifier)

    @property
    def key(self) -> str:
        """``name/version``: identifies the model across deployments."""
        return f"{self.name}/{self.version}"

    @property
    def feature_names(self) -> list[str]:
        """The input column names the model takes."""
        return list(self._names)

    @property
    def class_labels(self) -> list[Any] | None:
        """The class labels as plain Python values (None for regressors)."""
        return None if self.classes is None else self.classes.tolist()

    def batch(self, records: Sequence[dict[str, Any]]) -> Batch:
        """Check request records against the signature and build the model's input frame.

        :param records: one dict per row, keyed by column name; extra keys are ignored.
        :raises MlopsInputError: a column is missing or holds a value of the wrong type.
        """
        import numpy as np
        import pandas as pd

        for i, r in enumerate(records):
            if type(r) is not dict:
                raise MlopsInputError(
                    f"Input record {i} is {type(r).__name__}, not an object: send "
                    '{"inputs": {"column": value, ...}} or a list of such objects.'
                )
        if not self.columns:
            X = pd.DataFrame.from_records(list(records))
            return Batch(list(X.columns), len(X), columns={c: X[c].to_numpy() for c in X.columns}, X=X)
        names = self._names
        getter = self._getter
        try:
            rows = list(map(getter, records))
        except KeyError:
            self._raise_missing(records)
        if self._all_numbers:
            # Fast path: one float matrix, one pandas block.
            if not set(map(type, chain.from_iterable(rows))) <= _ACCEPTED["number"]:
                self._raise_type(records)
            n = len(rows)
            matrix = np.fromiter(chain.from_iterable(rows), np.float64, n * len(names)).reshape(n, len(names))
            return Batch(names, n, matrix=matrix)
        cols: dict[str, np.ndarray] = {}
        for j, col in enumerate(self.columns):
            values = [row[j] for row in rows]
            accepted = _ACCEPTED.get(col.kind)
            if accepted is not None and not set(map(type, values)) <= accepted:
                self._raise_type(records)
            if col.kind == "number":
                cols[col.name] = np.array(values, dtype=np.float64)
            else:
                arr = np.empty(len(values), dtype=object)
                arr[:] = values
                cols[col.name] = arr
        return Batch(names, len(rows), columns=cols)

    def _raise_missing(self, records: Sequence[dict[str, Any]]) -> None:
        for i, r in enumerate(records):
            missing = [c for c in self._names if c not in r]
            if missing:
                raise MlopsInputError(
                    f"Input record {i} has no column {missing[0]!r}"
                    + (f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else "")
                    + f": model {self.name} v{self.version} needs columns {_shorten(self._names)}."
                )
        raise AssertionError("unreachable: a KeyError was raised")

    def _raise_type(self, records: Sequence[dict[str, Any]]) -> None:
        for col in self.columns:
            accepted = _ACCEPTED.get(col.kind)
            if accepted is None:
                continue
            for i, r in enumerate(records):
                v = r[col.name]
                if type(v) not in accepted:
                    raise MlopsInputError(
                        f"Column {col.name!r} takes {_WHAT[col.kind]} (signature type {col.type}), but "
                        f"input record {i} has {v!r} ({type(v).__name__}): send {_WHAT[col.kind]} "
                        "or null for a missing value."
                    )
        raise AssertionError("unreachable: a type check failed")

    def predict(self, batch: Batch) -> tuple[np.ndarray, np.ndarray | None]:
        """Predict with the native estimator.

        :param batch: the validated input from :meth:`batch`.
        :return: the predictions and, for classifiers, the class probabilities (``classes`` order).
        """
        fast = self._fast
        if fast is not None and batch.matrix is not None:
            if not self.is_classifier:
                return fast.final.predict(fast.transform(batch.matrix)), None
            Z = fast.transform(batch.matrix)
            proba = fast.final.predict_proba(Z)
            if self._labels_from_proba:
                return self.classes[proba.argmax(axis=1)], proba
            return fast.final.predict(Z), proba
        X = batch.X
        if not self.is_classifier:
            return self.estimator.predict(X), None
        proba = self.estimator.predict_proba(X)
        if self._labels_from_proba:
            return self.classes[proba.argmax(axis=1)], proba
        return self.estimator.predict(X), proba

    @property
    def uses_matrix_path(self) -> bool:
        """Whether predictions skip pandas (a numeric pipeline verified on the input example)."""
        return self._fast is not None

    def coerce_labels(self, labels: Sequence[Any]) -> list[Any]:
        """Map feedback labels onto the model's class labels (``"1"`` -> ``1`` when classes are ints).

        :param labels: true labels as sent by the caller.
        :raises MlopsInputError: a label is not one of the model's classes.
        """
        if self.classes is None:
            for lab in labels:
                if type(lab) not in (int, float) or not math.isfinite(lab):
                    raise MlopsInputError(
                        f"Label {lab!r} ({type(lab).__name__}) is not a number, but model {self.name} "
                        f"v{self.version} is a regressor: send the true values as numbers."
                    )
            return list(labels)
        known = self.classes.tolist()
        by_text = {str(c): c for c in known}
        out = []
        for lab in labels:
            if lab in known and not isinstance(lab, bool):
                out.append(lab)
            elif str(lab) in by_text:
                out.append(by_text[str(lab)])
            else:
                raise MlopsInputError(
                    f"Label {lab!r} is not a class of model {self.name} v{self.version}: send one of {known}."
                )
        return out


_NO_NAMES_WARNING = "X does not have valid feature names"


@dataclass
class _MatrixPipeline:
    """The fitted steps of a ``Pipeline(ColumnTransformer(...), ..., estimator)`` on numeric columns,
    applied to a float matrix by column position instead of to a DataFrame by column name.

    The ColumnTransformer's pandas handling costs most of a one-row prediction; the fitted
    transformers and estimator are the model's own, called directly. Used only when it gives the
    same answers as the pipeline on the logged input example.
    """

    parts: list[tuple[Any, np.ndarray]]
    middle: list[Any]
    final: Any

    def transform(self, matrix: np.ndarray) -> np.ndarray:
        import numpy as np

        outs = [matrix[:, idx] if t is None else t.transform(matrix[:, idx]) for t, idx in self.parts]
        Z = outs[0] if len(outs) == 1 else np.hstack(outs)
        for step in self.middle:
            Z = step.transform(Z)
        return Z

    @classmethod
    def build(
        cls, estimator: Any, names: list[str], example: Batch, is_classifier: bool
    ) -> _MatrixPipeline | None:
        """The matrix path of ``estimator``, or None when its shape does not allow one or it differs."""
        import numpy as np
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline

        if not isinstance(estimator, Pipeline) or len(estimator.steps) < 2 or example.matrix is None:
            return None
        first = estimator.steps[0][1]
        if not isinstance(first, ColumnTransformer) or getattr(first, "sparse_output_", False):
            return None
        position = {n: i for i, n in enumerate(names)}
        parts: list[tuple[Any, np.ndarray]] = []
        for _, trans, cols in first.transformers_:
            if isinstance(trans, str) and trans == "drop":
                continue
            if not isinstance(cols, list) or not all(isinstance(c, str) and c in position for c in cols):
                return None  # selection by mask, slice or callable: leave it to the pipeline
            idx = np.array([position[c] for c in cols], dtype=np.intp)
            parts.append((None if isinstance(trans, str) and trans == "passthrough" else trans, idx))
        if not parts:
            return None
        steps = [s for _, s in estimator.steps[1:] if s not in (None, "passthrough")]
        fast = cls(parts, steps[:-1], steps[-1])
        # The sub-transformers were fitted on frames; a matrix by position is what they saw.
        warnings.filterwarnings("ignore", message=_NO_NAMES_WARNING, category=UserWarning)
        try:
            Z = fast.transform(example.matrix)
            if is_classifier:
                same = np.allclose(fast.final.predict_proba(Z), estimator.predict_proba(example.X), atol=1e-9)
            else:
                same = np.allclose(fast.final.predict(Z), estimator.predict(example.X), atol=1e-9)
        except Exception:  # noqa: BLE001 - any failure just means: use the pipeline as it is
            return None
        return fast if same else None


def _shorten(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}" + (f", ... {len(names) - limit} more]" if len(names) > limit else "]")


def columns_from_signature(signature: Any) -> tuple[Column, ...]:
    """The input columns of an MLflow model signature (empty when there is none or it is a tensor).

    :param signature: ``mlflow.models.ModelSignature`` or None.
    """
    if signature is None or signature.inputs is None or signature.inputs.is_tensor_spec():
        return ()
    out = []
    for spec in signature.inputs.inputs:
        if spec.name is None:
            return ()
        type_name = getattr(spec.type, "name", str(spec.type))
        out.append(Column(spec.name, _KIND_OF.get(type_name, "any"), type_name))
    return tuple(out)


def _is_missing(e: Exception) -> bool:
    """Whether an MlflowException says the thing asked for does not exist (rather than a failure)."""
    code = str(getattr(e, "error_code", ""))
    return "RESOURCE_DOES_NOT_EXIST" in code or "INVALID_PARAMETER" in code or "NOT_FOUND" in code


class ModelLoader:
    """Loads model versions of the MLflow registry and resolves aliases to version numbers.

    :param target: the MLflow tracking/registry store and its credentials.
    :param process_env: this process serves this one store with its own ``MLFLOW_TRACKING_*``
        credentials (the gateway process): MLflow's URIs are set once, here, and no load or resolve
        touches ``os.environ``, which is shared by the requests served concurrently. False: the target
        applies within :meth:`MlflowTarget.activate` around each call.
    :param probe_timeout: seconds the reachability check of an MLflow server waits.
    """

    def __init__(self, target: MlflowTarget, process_env: bool = False, probe_timeout: float = 3.0) -> None:
        self.target = target
        self.process_env = process_env
        self.probe_timeout = probe_timeout
        if process_env:
            import mlflow

            # Once, for the process's life: parts of MLflow's artifact download take no URI argument.
            mlflow.set_tracking_uri(target.tracking_uri)
            mlflow.set_registry_uri(target.registry_uri or target.tracking_uri)

    def _scope(self) -> Any:
        return contextlib.nullcontext() if self.process_env else self.target.activate()

    def check(self) -> None:
        """Fail within seconds, naming the server and the fix, when the MLflow server does not answer
        (MLflow's own client retries for minutes).

        :raises MlopsServiceError: the tracking or registry server is unreachable.
        """
        from airflow_mlops.core.tracking import check_reachable

        uris = dict.fromkeys(u for u in (self.target.tracking_uri, self.target.registry_uri) if u)
        for uri in uris:
            try:
                check_reachable(uri, timeout=self.probe_timeout)
            except MlopsServiceError as e:
                raise MlopsServiceError(
                    f"{redact(e)} (The gateway loads models from its --tracking-uri / MLFLOW_TRACKING_URI.)"
                ) from None

    def resolve(self, name: str, version_or_alias: str) -> str:
        """The version number behind ``version_or_alias`` (``"3"``, ``"champion"`` or ``"@champion"``).

        :raises MlopsInputError: the model, version or alias does not exist.
        """
        from mlflow.exceptions import MlflowException

        ref = str(version_or_alias).removeprefix("@")
        with self._scope():
            client = self.target.client()
            try:
                if ref.isdigit():
                    return str(client.get_model_version(name, ref).version)
                return str(client.get_model_version_by_alias(name, ref).version)
            except MlflowException as e:
                if _is_missing(e):
                    what = f"version {ref}" if ref.isdigit() else f"alias @{ref}"
                    raise MlopsInputError(
                        f"Model {name!r} has no {what} in the registry at {redact(self.target.tracking_uri)}: "
                        "register it first or fix the route."
                    ) from e
                raise MlopsServiceError(
                    redact(
                        f"The MLflow registry at {self.target.registry_uri or self.target.tracking_uri} "
                        f"failed ({e}): check that the server answers and the gateway's credentials."
                    )
                ) from None

    def load(self, name: str, version: str) -> LoadedModel:
        """Download and load ``models:/name/version`` with its native scikit-learn flavor.

        :raises MlopsInputError: the version does not exist or has no scikit-learn flavor.
        """
        import mlflow
        import mlflow.sklearn
        from mlflow.exceptions import MlflowException
        from mlflow.models import Model

        uri = f"models:/{name}/{version}"
        t = self.target
        with self._scope(), tempfile.TemporaryDirectory(prefix="mlops-gateway-") as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=uri,
                    dst_path=tmp,
                    tracking_uri=t.tracking_uri,
                    registry_uri=t.registry_uri or t.tracking_uri,
                )
            except MlflowException as e:
                if _is_missing(e):
                    raise MlopsInputError(
                        redact(f"Cannot download {uri}: {e}. Check the version exists.")
                    ) from None
                raise MlopsServiceError(
                    redact(
                        f"Cannot download {uri} from MLflow at {t.tracking_uri}: {e}: check the server answers."
                    )
                ) from None
            except OSError as e:
                raise MlopsServiceError(
                    redact(f"Cannot download {uri}: {e}: check MLflow's artifact store answers.")
                ) from None
            meta = Model.load(os.path.join(local, "MLmodel"))
            if "sklearn" not in meta.flavors:
                raise MlopsInputError(
                    f"{uri} has flavors {sorted(meta.flavors)}, not 'sklearn': the gateway serves "
                    "scikit-learn models; log it with mlflow.sklearn."
                )
            flavor = meta.flavors["sklearn"]
            if flavor.get("serialization_format") == "skops":
                # The fixed allow-list decides, not the skops_trusted_types the MLmodel file brings.
                estimator = skops_trust.load(os.path.join(local, flavor["pickled_model"]), uri)
            else:
                estimator = mlflow.sklearn.load_model(local)
            example: list[dict[str, Any]] = []
            try:
                frame = meta.load_input_example(local)
            except Exception:  # noqa: BLE001 - an unreadable example only disables a shortcut
                frame = None
            if frame is not None and hasattr(frame, "to_dict"):
                example = frame.to_dict(orient="records")
        return LoadedModel(
            name=name,
            version=str(version),
            estimator=estimator,
            columns=columns_from_signature(meta.signature),
            run_id=meta.run_id,
            input_example=example,
        )
