"""Every script in examples/ runs as a new user would run it, and says what it promises."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.slow  # real processes and whole runs


@pytest.mark.parametrize(
    ("script", "args", "says"),
    [
        ("quickstart.py", [], "round 10: 20 of 20 clients"),
        ("own_cnn.py", ["--rounds", "3"], "held-out accuracy"),
        ("own_training_loop.py", ["--rounds", "3"], "balanced accuracy"),
        ("keras_diabetes.py", ["--rounds", "2"], "round  2: client-test MSE"),
    ],
)
def test_an_example_runs_from_a_fresh_folder(tmp_path, script, args, says):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert says in done.stdout
