"""Data sets and partitioners."""

from fedstream.data.base import ClientData, FederatedDataset
from fedstream.data.datasets import DATASETS, PARTITIONS, SOURCES, Source, federate
from fedstream.data.partition import (
    dirichlet_partition,
    iid_partition,
    natural_partition,
    quantity_skew_partition,
    shard_partition,
)

__all__ = [
    "DATASETS",
    "PARTITIONS",
    "SOURCES",
    "ClientData",
    "FederatedDataset",
    "Source",
    "dirichlet_partition",
    "federate",
    "iid_partition",
    "natural_partition",
    "quantity_skew_partition",
    "shard_partition",
]
