"""Real-time inference that follows training: a FastAPI server over the model registry."""

from fedstream.serving.app import PublishTarget, Server, create_app, load_model

__all__ = ["PublishTarget", "Server", "create_app", "load_model"]
