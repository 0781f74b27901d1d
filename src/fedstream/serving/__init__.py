"""Real-time inference that follows training: a FastAPI server over the model registry."""

from fedstream.serving.app import Server, create_app, load_model

__all__ = ["Server", "create_app", "load_model"]
