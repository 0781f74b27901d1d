"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver, driven
by Selenium), against a real ``fedstream dashboard`` process and a run training in this
one: the run appears, its curve gains points as rounds finish, a failed client shows its
cause, a second run can be overlaid in the compare view, and HTML that a hostile client or
run name carries is shown as text, never run."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fedstream
from fedstream.tracking import RunCallback

pytestmark = pytest.mark.slow  # a browser, a server process and whole runs

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = os.environ.get("FEDSTREAM_SCREENSHOTS")  # set to docs/images to refresh them


class Gate(RunCallback):
    """Holds the run after the rounds the test names until the test lets it go, so the
    page is checked while the run is still training."""

    def __init__(self, stops: set[int]) -> None:
        self.stops = stops
        self.reached = threading.Event()
        self.go_on = threading.Event()

    def on_round_end(self, report) -> None:
        if report.round in self.stops:
            self.reached.set()
            assert self.go_on.wait(120), "the test never let the run go on"
            self.go_on.clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def browser():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def dashboard(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fedstream.cli", "dashboard", "--runs", str(tmp_path),
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/dashboard"
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=20)


def wait_for(driver, script: str, expected, timeout: float = 30.0):
    """Poll ``script`` in the page until it returns ``expected``; the last value otherwise."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value == expected:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{script!r} gave {value!r}, expected {expected!r}")


POINTS = "const d = document.getElementById('chart-quality').data; return d ? d[0].x.length : 0"
STATUS = (
    "const r = document.querySelector('tr[data-run=\"{}\"] td:nth-child(3)');"
    "return r && r.textContent"
)


def screenshot(driver, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if SCREENSHOTS:
        shutil.copy(path, Path(SCREENSHOTS) / name)


def test_a_person_watches_a_run_train_and_sees_a_failed_client_and_its_cause(
    tmp_path, browser, dashboard
):
    gate = Gate({2, 4})
    outcome: dict[str, object] = {}

    def train() -> None:
        outcome["result"] = fedstream.simulate(
            app="tests.dashboard.broken_site:app", output_dir=tmp_path / "live",
            run={"rounds": 6, "clients_per_round": 4}, callbacks=[gate],
        )  # fmt: skip

    trainer = threading.Thread(target=train)
    trainer.start()
    try:
        assert gate.reached.wait(120)
        browser.get(dashboard)
        assert browser.title == "fedstream dashboard"
        wait_for(browser, STATUS.format("live"), "running")  # the run appears, still training
        wait_for(browser, POINTS, 2)  # two rounds done: two points on the accuracy curve
        causes = browser.execute_script(
            "return [...document.querySelectorAll('#outcomes .cause')].map(e => e.textContent)"
        )
        assert causes == ["site-2 (validate): payload contains NaN or Inf"] * 2
        gate.reached.clear()
        gate.go_on.set()
        assert gate.reached.wait(120)
        wait_for(browser, POINTS, 4)  # the curve gained the points of rounds 3 and 4
        screenshot(browser, tmp_path, "dashboard-live.png")
        gate.go_on.set()
    finally:
        gate.go_on.set()
        trainer.join(timeout=300)
    assert "result" in outcome
    wait_for(browser, STATUS.format("live"), "finished")
    wait_for(browser, POINTS, 6)
    status = "return document.getElementById('run-status').textContent"
    wait_for(browser, status, "finished, 6 of 6 rounds")


def test_two_runs_overlay_in_the_compare_view(tmp_path, browser, dashboard):
    small = {"data": {"num_clients": 6}, "run": {"clients_per_round": 3}}
    fedstream.simulate(
        output_dir=tmp_path / "three", **small | {"run": {"rounds": 3, "clients_per_round": 3}}
    )
    fedstream.simulate(
        output_dir=tmp_path / "five", **small | {"run": {"rounds": 5, "clients_per_round": 3}}
    )
    browser.get(dashboard)
    wait_for(browser, "return document.querySelectorAll('#runs tbody tr').length", 2)
    for run in ("three", "five"):  # as a person ticks them (in one step: the table redraws)
        browser.execute_script(
            f"document.querySelector('tr[data-run=\"{run}\"] input.compare').click()"
        )
    script = (
        "const d = document.getElementById('chart-compare').data;"
        "return d ? d.map(t => [t.name, t.x.length]).sort() : null"
    )
    wait_for(browser, script, [["five (central_accuracy)", 5], ["three (central_accuracy)", 3]])
    screenshot(browser, tmp_path, "dashboard-compare.png")


def test_hostile_html_in_run_names_and_failure_causes_is_shown_as_text(
    tmp_path, browser, dashboard
):
    # a client's error message, the app's name and the run's folder name are HTML meant to
    # run script in the reader's browser; the page shows them as text and runs nothing
    from tests.dashboard.hostile_site import PAYLOAD

    run = tmp_path / PAYLOAD.replace("/", "")
    fedstream.simulate(
        app="tests.dashboard.hostile_site:app", output_dir=run,
        run={"rounds": 2, "clients_per_round": 4},
    )  # fmt: skip
    browser.get(dashboard)
    wait_for(browser, "return document.querySelectorAll('#runs tbody tr').length", 1)
    browser.execute_script("document.querySelector('#runs tbody input.compare').click()")
    causes = (
        "return [...document.querySelectorAll('#outcomes .cause')]"
        ".map(e => e.textContent.split(' (at ')[0])"
    )
    wait_for(browser, causes, [f"site-2 (train): RuntimeError: {PAYLOAD}"] * 2)
    title = "return document.getElementById('run-title').textContent"
    assert browser.execute_script(title) == run.name
    legend = "const d = document.getElementById('chart-compare').data; return d && d.length"
    wait_for(browser, legend, 1)
    time.sleep(1.0)  # time for an injected image's onerror to fire, were there one
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
