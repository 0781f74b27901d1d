"""The public API is what ``__all__`` lists, and every listed name exists."""

import importlib

import pytest

import fedstream

PACKAGES = [
    "fedstream",
    "fedstream.client",
    "fedstream.compression",
    "fedstream.dashboard",
    "fedstream.data",
    "fedstream.models",
    "fedstream.privacy",
    "fedstream.project",
    "fedstream.secure",
    "fedstream.serving",
    "fedstream.simulation",
    "fedstream.store",
    "fedstream.strategies",
    "fedstream.sweep",
    "fedstream.tracking",
    "fedstream.transport",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_unique_and_importable(name):
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported))
    for symbol in exported:
        assert hasattr(module, symbol), f"{name}.__all__ lists missing {symbol}"


def test_top_level_exports_the_documented_entry_points():
    for symbol in (
        "simulate",
        "Params",
        "ServerState",
        "ClientUpdate",
        "RoundReport",
        "FedAvg",
        "FedSGD",
        "FedProx",
        "FedAvgM",
        "FedAdam",
        "FedYogi",
        "FedAdagrad",
        "TorchTrainer",
        "VectorizedTrainer",
        "run_round",
        "ConfigError",
    ):
        assert symbol in fedstream.__all__


def test_public_classes_and_functions_have_docstrings():
    for symbol in fedstream.__all__:
        value = getattr(fedstream, symbol)
        if callable(value) and not isinstance(value, type(fedstream)):
            assert value.__doc__, f"fedstream.{symbol} has no docstring"
