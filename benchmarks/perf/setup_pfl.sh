#!/usr/bin/env bash
# pfl-research's own venv for the comparison (pfl pins packaging and wheel ranges of its own).
# torch first and pinned, so nothing pulls a CUDA build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.pfl-venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q "pfl[pytorch]==0.6.0" numpy
"$venv/bin/python" -c "import pfl, torch; print('pfl', pfl.__version__, 'torch', torch.__version__)"
