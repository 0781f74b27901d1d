"""Real-time inference that follows training (docs/serving.md).

- ``registry``: model versions from the run store, rebuilt and swapped in;
- ``batcher``: concurrent requests joined into one forward pass;
- ``server``: the serving process's state (registry, batcher, counters, limits);
- ``http``: the ASGI app (``/v1/predict`` and the FastAPI routes);
- ``publish``: pushing models to a serving process on another machine;
- ``stats``: counters and their Prometheus text.
"""

from fedstream.serving.http import create_app
from fedstream.serving.publish import PublishTarget, publish
from fedstream.serving.registry import LoadedModel, load_model
from fedstream.serving.server import Server

__all__ = ["LoadedModel", "PublishTarget", "Server", "create_app", "load_model", "publish"]
