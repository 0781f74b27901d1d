"""Micro-batching: concurrent prediction requests joined into one forward pass.

Requests wait at most ``max_wait_s`` for company, up to ``max_batch`` rows; the pass runs
in ``torch.inference_mode`` on one worker thread with ``threads`` torch threads. The model
is taken once per batch, so a whole batch is answered by one version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from fedstream.serving.registry import LoadedModel
from fedstream.serving.stats import Stats


class MicroBatcher:
    """Answers ``predict`` calls in batches from the model ``current()`` gives."""

    def __init__(
        self,
        current: Callable[[], LoadedModel | None],
        stats: Stats,
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.002,
        threads: int = 1,
    ) -> None:
        self.current = current
        self.stats = stats
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[Any]]] | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, initializer=torch.set_num_threads,
                                          initargs=(threads,))  # fmt: skip

    def stop(self) -> None:
        self._worker.shutdown(wait=False)

    async def predict(self, inputs: np.ndarray) -> tuple[int, np.ndarray]:
        if self._queue is None:
            self._queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self._batcher())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((inputs, future))
        result: tuple[int, np.ndarray] = await future
        return result

    async def _batcher(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            rows = first[0].shape[0]
            deadline = loop.time() + self.max_wait_s
            while rows < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
                batch.append(item)
                rows += item[0].shape[0]
            model = self.current()  # taken once: the whole batch is answered by one version
            try:
                if model is None:
                    raise RuntimeError("no model is loaded yet")
                stacked = np.concatenate([x for x, _ in batch])
                outputs = await loop.run_in_executor(self._worker, _forward, model, stacked)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.batched_rows += stacked.shape[0]
            start = 0
            for x, future in batch:
                if not future.done():
                    future.set_result((model.version, outputs[start : start + x.shape[0]]))
                start += x.shape[0]


def _forward(model: LoadedModel, inputs: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = model.module(torch.from_numpy(inputs)).numpy()
    return out
