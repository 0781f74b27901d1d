"""The serving process's state: the model registry, the micro-batcher and the counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedstream.serving.batcher import MicroBatcher
from fedstream.serving.personal import PersonalSource
from fedstream.serving.registry import LoadedModel, ModelRegistry
from fedstream.serving.stats import Stats
from fedstream.store.runs import RunStore


class Server:
    """What the HTTP app serves from: run ``run_id``'s models (``registry``; with
    ``personal``, one client's model over each), answered in micro-batches (``batcher``),
    with request limits and an optional publish token."""

    def __init__(
        self,
        store_path: str | Path,
        run_id: str,
        *,
        version: int | None = None,
        follow: bool = True,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        max_body_bytes: int = 1 << 20,
        threads: int = 1,
        poll_s: float = 0.2,
        publish_token: str | None = None,
        max_publish_bytes: int = 1 << 30,
        app: str | None = None,
        personal: PersonalSource | None = None,
    ) -> None:
        self.store = RunStore(store_path)
        self.run_id = run_id
        self.publish_token = publish_token
        self.max_publish_bytes = max_publish_bytes
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.stats = Stats()
        self.registry = ModelRegistry(
            self.store, run_id, pinned=version, follow=follow, poll_s=poll_s, app=app,
            on_swap=self._count_swap, personal=personal,
        )  # fmt: skip
        self.batcher = MicroBatcher(
            lambda: self.registry.current, self.stats, max_batch=max_batch,
            max_wait_s=max_wait_ms / 1000, threads=threads,
        )  # fmt: skip

    def _count_swap(self) -> None:
        self.stats.swaps += 1

    @property
    def current(self) -> LoadedModel | None:
        return self.registry.current

    def swap_to(self, version: int | None) -> LoadedModel:
        return self.registry.swap_to(version)

    async def predict(self, inputs: np.ndarray) -> tuple[int, np.ndarray]:
        return await self.batcher.predict(inputs)

    def start(self) -> None:
        self.registry.start()

    def stop(self) -> None:
        self.registry.stop()
        self.batcher.stop()

    def pin(self, version: int | None) -> Any:
        """Serve ``version`` only (``None``: follow the newest again)."""
        self.registry.pinned, self.registry.follow = version, version is None
