"""The gateway's prediction log: rolling Parquet files that the DriftSensor reads as its current window.

Layout: ``<log_dir>/<model_name>/date=YYYY-MM-DD/part-<unix_ms>-<uuid8>.parquet``. Each file holds the
raw feature columns of the requests plus the columns below (names start with an underscore so that
they never collide with a feature).
"""

from __future__ import annotations

PREDICTION = "_prediction"
MODEL_NAME = "_model_name"
MODEL_VERSION = "_model_version"
REQUEST_ID = "_request_id"
TIMESTAMP = "_timestamp"  # timestamp[us, tz=UTC]
META_COLUMNS = (PREDICTION, MODEL_NAME, MODEL_VERSION, REQUEST_ID, TIMESTAMP)
