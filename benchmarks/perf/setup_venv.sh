#!/usr/bin/env bash
# A comparison contender's own venv: `setup_venv.sh flower` or `setup_venv.sh pfl`.
# Flower pins protobuf < 7 (fedstream needs 7); pfl pins packaging and wheel ranges of its own.
# torch first and pinned, so nothing pulls a CUDA build.
set -euo pipefail
case "${1:-}" in
  flower) packages=("flwr[simulation]==1.41.0" numpy); check="import flwr, ray; print('flwr', flwr.__version__, 'ray', ray.__version__)" ;;
  pfl) packages=("pfl[pytorch]==0.6.0" numpy); check="import pfl, torch; print('pfl', pfl.__version__, 'torch', torch.__version__)" ;;
  *) echo "usage: $0 flower|pfl" >&2; exit 2 ;;
esac
venv="$(cd "$(dirname "$0")" && pwd)/.$1-venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q "${packages[@]}"
"$venv/bin/python" -c "$check"
