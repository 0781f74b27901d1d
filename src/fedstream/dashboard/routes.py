"""The dashboard's HTTP routes on FastAPI: the page, its script and Plotly (served from the
``plotly`` package, so nothing is fetched from the internet), and the JSON it polls."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from fedstream.dashboard.views import run_view, runs_view
from fedstream.errors import ConfigError
from fedstream.store.runs import RunStore

PREFIX = "/dashboard"


def plotly_script() -> Path:
    """Plotly's bundled ``plotly.min.js``, from the installed ``plotly`` package."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _static(name: str) -> str:
    return resources.files("fedstream.dashboard").joinpath("static", name).read_text()


def mount_dashboard(
    app: FastAPI, store_path: Path, serving: Callable[[], dict[str, Any]] | None = None
) -> None:
    """Add the dashboard under ``/dashboard`` to ``app``, reading the run store at
    ``store_path``; ``serving`` (on a serving process) returns its traffic and version."""
    store = RunStore(store_path)

    @app.get(PREFIX, response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return _static("index.html")

    @app.get(f"{PREFIX}/dashboard.js", include_in_schema=False)
    def script() -> HTMLResponse:
        return HTMLResponse(_static("dashboard.js"), media_type="text/javascript")

    @app.get(f"{PREFIX}/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(plotly_script(), media_type="text/javascript")

    @app.get(f"{PREFIX}/api/runs")
    def runs() -> list[dict[str, Any]]:
        return runs_view(store)

    @app.get(f"{PREFIX}/api/runs/{{run_id}}")
    def run(run_id: str) -> dict[str, Any]:
        try:
            return run_view(store, run_id)
        except ConfigError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    @app.get(f"{PREFIX}/api/serving")
    def serving_traffic() -> dict[str, Any]:
        return serving() if serving is not None else {}


def create_dashboard_app(store_path: Path) -> FastAPI:
    """A FastAPI app that is only the dashboard (``fedstream dashboard``); ``/`` leads to it."""
    app = FastAPI(title="fedstream dashboard")
    mount_dashboard(app, store_path)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(PREFIX)

    return app
