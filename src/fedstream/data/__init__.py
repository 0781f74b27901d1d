"""Data sets and partitioners."""

from fedstream.data.base import ClientData, FederatedDataset
from fedstream.data.datasets import federate, load_diabetes_arrays, load_digits_arrays
from fedstream.data.partition import dirichlet_partition, iid_partition

__all__ = [
    "ClientData",
    "FederatedDataset",
    "dirichlet_partition",
    "federate",
    "iid_partition",
    "load_diabetes_arrays",
    "load_digits_arrays",
]
