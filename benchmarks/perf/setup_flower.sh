#!/usr/bin/env bash
# Flower's own venv for the comparison (Flower pins protobuf < 7; fedstream needs 7).
# torch first and pinned, so nothing pulls a CUDA build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.flower-venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q "flwr[simulation]==1.41.0" numpy
"$venv/bin/python" -c "import flwr, ray; print('flwr', flwr.__version__, 'ray', ray.__version__)"
