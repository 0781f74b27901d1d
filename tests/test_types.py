"""``UpdateBlock``: a cohort's updates stacked, split back and taken apart by rows."""

import numpy as np
import pytest

from fedstream import ClientUpdate, Params
from fedstream.types import UpdateBlock


def update(k: int, round_number: int = 3) -> ClientUpdate:
    payload = Params({"w": np.full((2, 2), k, np.float32), "b": np.array([k], np.float64)})
    return ClientUpdate(f"c{k}", round_number, payload, float(k + 1), {"loss": k / 10})


def same(a: ClientUpdate, b: ClientUpdate) -> bool:
    fields = ("client_id", "round", "weight", "metrics", "extras")
    return all(getattr(a, f) == getattr(b, f) for f in fields) and a.payload.bit_equal(b.payload)


def test_updates_stacked_come_back_as_they_went_in():
    updates = [update(k) for k in range(4)]
    block = UpdateBlock.stack(updates)
    assert len(block) == 4 and block.payload["w"].shape == (4, 2, 2)
    assert block.weights.dtype == np.float64 and block.weights.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert all(same(a, b) for a, b in zip(updates, block.rows(), strict=True))


def test_taking_rows_keeps_their_order_and_views_a_run():
    block = UpdateBlock.stack([update(k) for k in range(5)])
    assert block.take([0, 1, 2, 3, 4]) is block
    run = block.take([1, 2, 3])
    assert run.client_ids == ("c1", "c2", "c3") and np.shares_memory(
        run.payload["w"], block.payload["w"]
    )
    picked = block.take([4, 0, 2])
    assert picked.client_ids == ("c4", "c0", "c2")
    assert picked.weights.tolist() == [5.0, 1.0, 3.0]
    assert [m["loss"] for m in picked.metrics] == [0.4, 0.0, 0.2]
    assert picked.payload["b"][:, 0].tolist() == [4.0, 0.0, 2.0]


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        (
            [update(0), update(1, round_number=4)],
            r"update of 'c1' cannot join a block: round 4 \(the block's is 3\)",
        ),
        (
            [update(0), ClientUpdate("x", 3, update(1).payload, 1.0, extras={"e": 1.0})],
            r"update of 'x' cannot join a block: .*extras \['e'\] \(a block carries none\)",
        ),
        ([], r"^an UpdateBlock needs at least one update$"),
    ],
)
def test_updates_that_cannot_share_a_block_are_refused(updates, message):
    with pytest.raises(ValueError, match=message):
        UpdateBlock.stack(updates)


def test_a_block_whose_columns_disagree_on_its_rows_is_refused():
    block = UpdateBlock.stack([update(0), update(1)])
    with pytest.raises(ValueError, match=r"^UpdateBlock weights has \(3,\) rows, expected \(2,\)$"):
        UpdateBlock(block.client_ids, 3, block.payload, np.ones(3), block.metrics)
    short = Params({"w": block.payload["w"], "b": block.payload["b"][:1]})
    with pytest.raises(ValueError, match=r"^UpdateBlock payload\['b'\] has \(1,\) rows"):
        UpdateBlock(block.client_ids, 3, short, block.weights, block.metrics)
    with pytest.raises(ValueError, match=r"^UpdateBlock metrics has \(1,\) rows"):
        UpdateBlock(block.client_ids, 3, block.payload, block.weights, block.metrics[:1])


def test_rows_gathered_from_several_blocks_come_in_the_order_asked():
    first = UpdateBlock.stack([update(k) for k in (0, 1, 2)])
    second = UpdateBlock.stack([update(k) for k in (3, 4)])
    gathered = UpdateBlock.gather([(second, 1), (first, 0), (first, 2), (second, 0)])
    assert gathered.client_ids == ("c4", "c0", "c2", "c3")
    assert gathered.weights.tolist() == [5.0, 1.0, 3.0, 4.0]
    assert gathered.payload["w"][:, 0, 0].tolist() == [4.0, 0.0, 2.0, 3.0]
    assert [m["loss"] for m in gathered.metrics] == [0.4, 0.0, 0.2, 0.3]
    assert UpdateBlock.gather([(first, 1), (first, 2)]).client_ids == ("c1", "c2")
