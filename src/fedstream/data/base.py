"""Client data and federated data sets as plain numpy arrays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fedstream.errors import ConfigError

Array = npt.NDArray[Any]
Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class ClientData:
    """One client's local data: features ``x_*`` of shape (n, …) and targets ``y_*`` of shape
    (n,) (int64 class labels for classification, float for regression)."""

    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array

    def check(self, client_id: str) -> None:
        """Raise ``ConfigError`` naming the client if its data cannot be trained on."""
        field = f"clients[{client_id!r}]"
        if self.x_train.shape[0] == 0:
            raise ConfigError(field, "0 training examples", "at least one training example")
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.shape[0] != y.shape[0]:
                raise ConfigError(
                    f"{field}.y_{split}",
                    f"{y.shape[0]} targets",
                    f"one per example of x_{split} ({x.shape[0]})",
                )
        if self.x_test.shape[0] and self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise ConfigError(
                f"{field}.x_test",
                f"examples of shape {self.x_test.shape[1:]}",
                f"the shape of x_train's examples, {self.x_train.shape[1:]}",
            )

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])


@dataclass(frozen=True)
class FederatedDataset:
    """Clients' local data plus a held-out set the server may use for centralised
    evaluation (data no client holds)."""

    name: str
    task: Task
    clients: Mapping[str, ClientData]
    x_heldout: Array
    y_heldout: Array
    num_features: int
    num_outputs: int  # classes for classification, 1 for regression

    def describe(self) -> dict[str, Any]:
        sizes = np.array([c.num_train for c in self.clients.values()])
        return {
            "dataset": self.name,
            "clients": len(self.clients),
            "train_examples": int(sizes.sum()),
            "heldout_examples": int(self.x_heldout.shape[0]),
            "client_train_min": int(sizes.min()),
            "client_train_median": float(np.median(sizes)),
            "client_train_max": int(sizes.max()),
        }
