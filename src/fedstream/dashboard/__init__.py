"""The live dashboard: the run store's runs, their curves, client outcomes, model versions
and serving traffic, in a browser page that follows runs as they train."""

from fedstream.dashboard.routes import create_dashboard_app, mount_dashboard
from fedstream.dashboard.views import run_view, runs_view

__all__ = ["create_dashboard_app", "mount_dashboard", "run_view", "runs_view"]
