"""A new project's files: a ``pyproject.toml`` whose ``[tool.fedstream]`` table holds the
run's settings, a package with the model, each site's data and (in its ``__init__``) the
``App`` that joins them, and a README. It runs as written (on scikit-learn's digits, split
over eight sites), and each file says what to replace with the user's own."""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from fedstream.errors import ConfigError

PYPROJECT = """\
[project]
name = "{name}"
version = "0.1.0"
description = "A federated learning project made with fedstream new"
requires-python = ">=3.11"
dependencies = ["fedstream"]

# The settings fedstream run reads in this folder; a flag overrides any of them
# (fedstream run --run.rounds 40), and fedstream run --help lists them all.
[tool.fedstream.model]
app = "{package}:app"

[tool.fedstream.run]
rounds = 20
clients_per_round = 4

[tool.fedstream.client]
local_epochs = 2
batch_size = 16
lr = 0.1
"""

MODEL = '''\
"""The model every site trains: an ordinary PyTorch module. Replace it with your own; batch
norm, dropout and any layer torch has work."""

from torch import nn


class Net(nn.Module):
    """8×8 digit images as 64 features in, scores for the 10 classes out."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.layers(x)
'''

DATA = '''\
"""Each site's data. Replace ``load_site`` with code that reads one site's own files: in a
deployment each client process calls it for its own id only, so no site reads another's
data. Here every site takes its share of scikit-learn's digits."""

import numpy as np
from sklearn.datasets import load_digits

SITES = [f"site-{{k}}" for k in range(8)]
HELDOUT = 200  # examples kept back for the server's central evaluation


def _digits():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    return (x[order] / 16.0).astype(np.float32), y[order]


def load_site(site: str):
    """One site's ((x_train, y_train), (x_test, y_test))."""
    x, y = _digits()
    rows = np.array_split(np.arange(len(y) - HELDOUT), len(SITES))[SITES.index(site)]
    cut = int(0.8 * len(rows))
    return (x[rows[:cut]], y[rows[:cut]]), (x[rows[cut:]], y[rows[cut:]])


def heldout():
    """The server's held-out set, (x, y): optional, for central evaluation."""
    x, y = _digits()
    return x[-HELDOUT:], y[-HELDOUT:]
'''

APP = '''\
"""{name}: the model, the sites' data and (optionally) the training, joined in one
``fedstream.App`` that fedstream run, client and serve all read."""

import fedstream

from {package}.data import SITES, heldout, load_site
from {package}.model import Net

app = fedstream.App(
    model=Net,
    data=load_site,
    client_ids=SITES,
    heldout=heldout(),
    name="{name}",
)
'''

README = """\
# {name}

A federated learning project made with `fedstream new`. Eight sites each hold a share of
scikit-learn's digits and train one model together without pooling their data.

```bash
fedstream run                      # the settings in pyproject.toml's [tool.fedstream]
fedstream run --run.rounds 40      # a flag overrides one
fedstream runs list                # this folder's runs (runs/store.sqlite)
```

Each run writes `results.json`, `metrics.csv` and `curves.png` under `runs/`.

To make it yours:
- `{package}/model.py`: your PyTorch model;
- `{package}/data.py`: `load_site(site)` reading one site's own data, and `SITES`;
- `{package}/__init__.py`: optionally your own loss, optimiser, metrics or training loop
  (`fedstream.App`'s `loss=`, `optimizer=`, `metrics=`, `train=`, `evaluate=`);
- `pyproject.toml`: rounds, clients a round, local training, and any other setting
  (differential privacy `[tool.fedstream.privacy]`, secure aggregation
  `[tool.fedstream.secure]`, compression `[tool.fedstream.compression]`).
"""


def check_project_name(name: str) -> str:
    """The package name for project ``name`` (``my-study`` → ``my_study``); a name that
    cannot be a Python package is an error naming it."""
    package = name.replace("-", "_")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", package) or keyword.iskeyword(package):
        raise ConfigError(
            "name",
            name,
            "letters, digits, '-' and '_', starting with a letter (a Python package name)",
        )
    return package


def project_files(name: str) -> dict[str, str]:
    """Each file of project ``name``: its path inside the project folder and its text."""
    package = check_project_name(name)
    fill = {"name": name, "package": package}
    return {
        "pyproject.toml": PYPROJECT.format(**fill),
        "README.md": README.format(**fill),
        f"{package}/model.py": MODEL,
        f"{package}/data.py": DATA.format(**fill),
        f"{package}/__init__.py": APP.format(**fill),
    }


def write_project(folder: Path, name: str) -> list[Path]:
    """Write project ``name`` into ``folder`` (made if needed) and return the files. A
    folder that already holds anything is refused, so nothing of the user's is
    overwritten."""
    files = project_files(name)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError("folder", str(folder), "a new or empty folder for the project")
    written = []
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
