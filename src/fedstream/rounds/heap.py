"""Keep the objects alive when a run starts out of the garbage collector's full passes.

Python's cyclic garbage collector now and then walks every tracked object alive. A
process that has imported torch holds about 200,000 of them before it trains anything,
and a round of a thousand clients makes enough short-lived objects (tasks, configs,
metrics) to set off one such pass every fifteen rounds or so: about 80 ms each time,
14 % of a W3 round on average (``benchmarks/RESULTS.md``). ``gc.freeze`` moves the
objects alive now into a generation the collector never walks; they are still freed by
reference counting as always, and only cyclic garbage among them waits until the run
ends and ``gc.unfreeze`` hands them back.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


@contextmanager
def settled_heap() -> Iterator[None]:
    """Freeze the objects alive now for the block's length, then unfreeze them. If
    something has frozen objects already (a server that froze its start-up, another run
    in progress) that is left as it is: the freezing is theirs to undo."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def settled(steps: Iterator[T]) -> Iterator[T]:
    """``steps``, run inside ``settled_heap`` from the first step to the last (or until the
    caller drops the iterator)."""
    with settled_heap():
        yield from steps
