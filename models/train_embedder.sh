#!/usr/bin/env bash
# Trains the ingest task's ONNX embedder (models/embedder.md): uses the virtualenv of
# models/train.sh (models/.venv, the pinned models/requirements.txt; created or updated by
# train.sh when needed), then runs models/train_embedder.py with any arguments given, e.g.
#
#   models/train_embedder.sh                          # data/lab -> models/embedder.{onnx,json}
#   models/train_embedder.sh --out /tmp/m --dimensions 32
#
# Runs from the repository root, so relative paths are relative to it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$(dirname "$here")"
venv=models/.venv

say() { echo "train_embedder.sh: $*" >&2; }

want=$(sha256sum models/requirements.txt | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
    # train.sh owns the virtualenv: let it create or update it (its --help stops after setup).
    say "setting up $venv with models/train.sh"
    models/train.sh --help >/dev/null
fi

# Fixed hash seed and one BLAS thread: the SVD is then computed in one order, byte for byte.
export PYTHONHASHSEED=0 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec "$venv/bin/python" models/train_embedder.py "$@"
