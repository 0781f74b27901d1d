"""Fixtures of the deployment tests."""

import pytest

from fedstream.transport.grpc.server import FedstreamService, start_server


@pytest.fixture
def live_service():
    """A gRPC server in this process, on a free port of 127.0.0.1, that knows two clients:
    alice (token ``a-token``) and bob (``b-token``)."""
    service = FedstreamService({"alice": "a-token", "bob": "b-token"}, run_id="run-x")
    server, port = start_server(service, "127.0.0.1:0", None)
    yield service, port
    service.finish()
    server.stop(grace=None)
