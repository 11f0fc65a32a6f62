#!/usr/bin/env bash
# Seeds the git + DVC repository that the stack's example DAGs train from (connection dvc_default):
#   <root>/repo         git repo, DVC initialised, data/breast_cancer.csv tracked by DVC
#   <root>/dvc-remote   its DVC remote "local" (a folder on the same volume)
# Run by the airflow-init service; does nothing when the repository already exists.
#
# Usage: init-dvc-repo.sh ROOT
# Env:   PYTHON (default: python), DATASET (default: breast_cancer, one that scikit-learn ships)
set -euo pipefail

ROOT="${1:?usage: init-dvc-repo.sh ROOT}"
PYTHON="${PYTHON:-python}"
DATASET="${DATASET:-breast_cancer}"
REPO="$ROOT/repo"
REMOTE="$ROOT/dvc-remote"

if [ -d "$REPO/.dvc" ]; then
    echo "DVC repository already at $REPO"
    exit 0
fi
case "$DATASET" in
    breast_cancer|wine|diabetes) ;;
    *) echo "DATASET=$DATASET is not one of breast_cancer, wine, diabetes" >&2; exit 2 ;;
esac

mkdir -p "$REPO/data" "$REMOTE"
cd "$REPO"
git init -q -b main
git config user.email "airflow@mlops.local"
git config user.name "airflow-mlops stack"
"$PYTHON" -m dvc init -q
"$PYTHON" -m dvc remote add -d local "$REMOTE"
# scikit-learn ships the data: nothing is downloaded.
"$PYTHON" - "$DATASET" "data/$DATASET.csv" <<'PY'
import sys

from sklearn import datasets

name, out = sys.argv[1], sys.argv[2]
getattr(datasets, f"load_{name}")(as_frame=True).frame.to_csv(out, index=False)
PY
"$PYTHON" -m dvc add -q "data/$DATASET.csv"
git add -A
git commit -q -m "Seed data/$DATASET.csv (DVC-tracked)"
"$PYTHON" -m dvc push -q
echo "DVC repository seeded at $REPO (data/$DATASET.csv, remote $REMOTE)"
