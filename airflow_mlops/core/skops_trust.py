"""Which types a skops model file may hold: a fixed allow-list, never the list stored beside the model.

MLflow stores the "trusted types" of a skops model in its MLmodel file and loads with them, so whoever
wrote the file decides what gets trusted. Here trust is the code's: scikit-learn, NumPy, SciPy and this
package. A file that needs anything else is refused before it is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from airflow_mlops.core.errors import MlopsInputError

TRUSTED_MODULES = ("sklearn", "numpy", "scipy", "airflow_mlops")


def foreign_types(types: Iterable[str]) -> list[str]:
    """The types (``module.Name`` strings) whose top-level package is not in :data:`TRUSTED_MODULES`."""
    return sorted(t for t in types if t.partition(".")[0] not in TRUSTED_MODULES)


def trusted_types(path: str | Path, what: str) -> list[str]:
    """The types skops needs trusted to load ``path``, once each is checked against the allow-list.

    :param path: a ``.skops`` file.
    :param what: the model, for the message (e.g. ``models:/bc/3``).
    :raises MlopsInputError: the file holds a type outside the allow-list (named in the message).
    """
    import skops.io as sio

    needed = list(sio.get_untrusted_types(file=path))
    foreign = foreign_types(needed)
    if foreign:
        raise MlopsInputError(
            f"{what} holds types outside the trusted packages ({', '.join(TRUSTED_MODULES)}): "
            f"{', '.join(foreign)}. It is not loaded, since loading may run their code: build the model "
            "from scikit-learn components only, or log it with serialization='cloudpickle' from a "
            "source you trust."
        )
    return needed


def load(path: str | Path, what: str) -> Any:
    """Load a skops file whose types all pass :func:`trusted_types`.

    :param path: a ``.skops`` file.
    :param what: the model, for the message.
    :raises MlopsInputError: the file holds a type outside the allow-list.
    """
    import skops.io as sio

    return sio.load(path, trusted=trusted_types(path, what))
