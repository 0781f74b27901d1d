"""The suite's own rules (tests/conftest.py): under CI a skipped test fails the session."""

import os
import subprocess
import sys

import pytest

PROBE = f"{__file__}::test_a_probe_that_skips_when_asked"


def test_a_probe_that_skips_when_asked():
    if os.environ.get("FEDSTREAM_PROBE_SKIP") == "1":
        pytest.skip("asked to, by test_a_skip_fails_the_session_under_ci")


@pytest.mark.parametrize(("ci", "status"), [("true", 1), ("", 0)])
def test_a_skip_fails_the_session_under_ci(ci, status):
    env = {**os.environ, "CI": ci, "FEDSTREAM_PROBE_SKIP": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", PROBE],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == status, done.stdout
    assert ("skipped under CI: each must run here" in done.stdout) == (status == 1)
    assert "asked to, by test_a_skip_fails" in done.stdout
