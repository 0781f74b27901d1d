from dataclasses import replace

import numpy as np
import pytest

from fedstream import ClientUpdate, FedAvg, Params, RoundConfig, ServerState
from fedstream.compression import Compression, decode_update, encode_update
from fedstream.compression.codecs import PAYLOAD
from fedstream.errors import ClientFailure
from fedstream.privacy import DifferentialPrivacy
from fedstream.rounds import InTaskOrder, check_update, collect_updates, plan_round
from fedstream.rounds.collect import Collected, _row_norms, lower_median, relative_rejections
from fedstream.rounds.config import UpdateBounds
from fedstream.secure.plain import PlainSum
from fedstream.secure.session import SecureSumResult
from fedstream.transport.base import Delivery, StackedDelivery
from fedstream.types import (
    WITHIN_CLIP,
    ClientPrivacy,
    FitConfig,
    SampleDP,
    UpdateBlock,
    WeightedSum,
)
from tests.rounds.scripted import CLIENTS, GLOBAL, honest

NO_BOUNDS = UpdateBounds()
BOUND_50 = UpdateBounds(max_norm=50.0)


def plan(count=4):
    state = ServerState.initial(GLOBAL, seed=1)
    return plan_round(
        state, FedAvg(), CLIENTS, RoundConfig(clients_per_round=count), state.generator()
    )


def delivered(update):
    return Delivery(update.client_id, update, 11, update.payload.wire_size())


def test_in_task_order_waits_only_for_the_outstanding():
    seen = []
    order = InTaskOrder(["a", "b", "c"], lambda u: seen.append(u.client_id))
    update = lambda c: ClientUpdate(c, 1, GLOBAL, 1.0)  # noqa: E731
    order.settle("c", update("c"))
    order.settle("a", update("a"))
    assert seen == ["a"]  # c waits for b
    order.settle("b", None)  # b failed
    assert seen == ["a", "c"]


def test_accepted_updates_are_passed_on_in_task_order_with_their_metrics():
    the_plan = plan()
    updates = [honest(GLOBAL, t) for t in the_plan.tasks]
    accepted = []
    collected = collect_updates(
        map(delivered, reversed(updates)), the_plan, GLOBAL, accepted.append, NO_BOUNDS, None, None
    )
    assert [u.client_id for u in accepted] == [t.client_id for t in the_plan.tasks]
    assert collected.completed == tuple(u.client_id for u in accepted)
    assert collected.failures == ()
    assert collected.bytes_down == 11 * 4
    assert collected.bytes_up == 4 * GLOBAL.wire_size()
    assert collected.train_metrics == tuple((u.weight, u.metrics) for u in accepted)


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        (lambda u: replace(u, round=0), "update is for round 0, expected round 1"),
        (lambda u: replace(u, weight=0.0), "weight=0.0 is invalid: expected a number in (0, 2^53]"),
        (lambda u: replace(u, weight=float("inf")), "weight=inf is invalid"),
        (lambda u: replace(u, weight=1e300), "weight=1e+300 is invalid"),
        (lambda u: replace(u, payload=u.payload * np.float32(1e19)), "payload norm overflows"),
        (lambda u: replace(u, payload=u.payload * np.nan), "payload contains NaN or Inf"),
        (
            lambda u: replace(u, payload=Params({"w": np.zeros(2, np.float32)})),
            "payload names do not match: missing ['b'], unexpected []",
        ),
        (lambda u: replace(u, payload=u.payload * 100), "exceeds max_update_norm=50"),
        (lambda u: replace(u, extras={"x": float("nan")}), "extras={'x': nan} is invalid"),
    ],
)
def test_a_bad_update_is_rejected_with_its_cause_and_the_rest_go_on(change, cause):
    the_plan = plan()
    updates = [honest(GLOBAL, t) for t in the_plan.tasks]
    victim = updates[1].client_id
    updates[1] = change(updates[1])
    accepted = []
    collected = collect_updates(
        map(delivered, updates),
        the_plan,
        GLOBAL,
        accepted.append,
        UpdateBounds(max_norm=50.0),
        None,
        None,
    )
    (failure,) = collected.failures
    assert failure.client_id == victim and failure.stage == "validate"
    assert cause in failure.cause
    assert victim not in collected.completed and len(accepted) == 3


def test_unasked_repeated_missing_and_failed_clients_are_each_recorded():
    the_plan = plan()
    first, second, third, fourth = (honest(GLOBAL, t) for t in the_plan.tasks)
    stranger = replace(first, client_id="nobody")
    deliveries = [
        delivered(first),
        delivered(first),  # twice
        delivered(stranger),
        Delivery(second.client_id, ClientFailure(second.client_id, "train", "disk full"), 1, 0),
        delivered(fourth),
    ]  # third never answers
    collected = collect_updates(deliveries, the_plan, GLOBAL, lambda u: None, NO_BOUNDS, None, None)
    assert collected.completed == (first.client_id, fourth.client_id)
    assert [(f.client_id, f.stage, f.cause) for f in collected.failures] == [
        (first.client_id, "validate", "not asked in this round, or answered twice"),
        ("nobody", "validate", "not asked in this round, or answered twice"),
        (second.client_id, "train", "disk full"),
        (third.client_id, "train", "no answer"),
    ]


def test_under_a_secure_sum_only_the_round_is_checked_and_weights_count_once():
    the_plan = plan(2)
    held = [replace(honest(GLOBAL, t), payload=Params({}), weight=0.0) for t in the_plan.tasks]
    held[1] = replace(held[1], round=7)
    collected = collect_updates(map(delivered, held), the_plan, GLOBAL, None, NO_BOUNDS, None, None)
    assert collected.completed == (held[0].client_id,)
    assert collected.failures[0].cause == "answer is for round 7, expected round 1"
    assert collected.train_metrics == ((1.0, held[0].metrics),)


def test_under_client_level_dp_the_weight_must_be_one_and_the_norm_within_the_clip():
    fit = FitConfig(privacy=ClientPrivacy(clip=1.0))
    update = ClientUpdate("c0", 1, GLOBAL.map(lambda a: np.full_like(a, 0.5)), 1.0)
    assert check_update(update, GLOBAL, 1, None, fit) is None
    assert "expected 1 under client-level DP" in check_update(
        replace(update, weight=2.0), GLOBAL, 1, None, fit
    )
    assert "exceeds the DP clip bound" in check_update(
        replace(update, payload=update.payload * 2), GLOBAL, 1, None, fit
    )


def test_an_update_under_dp_sgd_must_not_carry_its_example_count():
    fit = FitConfig(sample_dp=SampleDP(clip=1.0, noise_multiplier=1.0, sampling_rate=0.1, steps=2))
    like = Params({"w": np.zeros(2)})
    counted = ClientUpdate("a", 1, Params({"w": np.array([0.6, 0.8])}), 37.0)
    assert check_update(counted, like, 1, None, fit) == (
        "weight=37.0 is invalid: expected 1 under sample-level DP "
        "(a client's example count is private)"
    )
    assert check_update(replace(counted, weight=1.0), like, 1, None, fit) is None


def collect_with(bounds, change, count=5):
    """Five honest updates (weights 1..6, norms 2..) with ``change`` made to the second."""
    the_plan = plan(count)
    updates = [honest(GLOBAL, t) for t in the_plan.tasks]
    updates[1] = change(updates[1])
    accepted = []
    collected = collect_updates(
        map(delivered, updates), the_plan, GLOBAL, accepted.append, bounds, None, None
    )
    return updates[1].client_id, collected, accepted


def test_a_huge_weight_cannot_carry_a_small_update_past_the_norm_bound():
    # the attack of issue 18: a huge weight on minus the global model, whose norm is small
    # (above 2^53 the weight is refused outright, as a parametrised case above shows)
    def liar(u):
        return replace(u, weight=1e15, payload=GLOBAL.map(np.negative))

    victim, collected, accepted = collect_with(UpdateBounds(max_norm=25.0), liar)
    (failure,) = collected.failures
    assert failure.client_id == victim
    assert "weight × norm" in failure.cause and "above max_update_norm=25" in failure.cause
    assert [u.client_id for u in accepted] == list(collected.completed)
    assert victim not in collected.completed and len(accepted) == 4


def test_max_client_weight_is_a_plain_cap():
    victim, collected, _ = collect_with(
        UpdateBounds(max_weight=100.0), lambda u: replace(u, weight=101.0)
    )
    assert collected.failures[0].client_id == victim
    assert collected.failures[0].cause == "weight=101.0 exceeds max_client_weight=100"


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        (lambda u: replace(u, weight=1e12), "weight=1e+12 is an outlier"),
        (lambda u: replace(u, payload=u.payload * 1e6), "is an outlier: above outlier_factor=10"),
    ],
)
def test_outliers_against_the_round_median_are_left_out(change, cause):
    victim, collected, accepted = collect_with(UpdateBounds(outlier_factor=10.0), change)
    (failure,) = collected.failures
    assert failure.client_id == victim and cause in failure.cause
    assert failure.stage == "validate"
    assert len(accepted) == 4 and victim not in collected.completed
    # the rest still arrive in task order, each with its pull (weight × norm)
    assert [c for c, _ in collected.pulls] == list(collected.completed)


def test_honest_updates_pass_the_outlier_screen_unchanged():
    _, screened, kept = collect_with(UpdateBounds(outlier_factor=10.0), lambda u: u)
    _, plain, passed = collect_with(NO_BOUNDS, lambda u: u)
    assert screened.failures == () and screened.completed == plain.completed
    assert [u.client_id for u in kept] == [u.client_id for u in passed]


def test_relative_rejections_use_the_lower_median():
    bounds = UpdateBounds(max_norm=None, outlier_factor=10.0)
    # lower median weight is 2, lower median norm is 1
    assert relative_rejections([1, 2, 20, 21], [1, 1, 1, 1], bounds) == [
        None,
        None,
        None,
        "weight=21 is an outlier: above outlier_factor=10 × the round's median weight 2",
    ]
    pull = relative_rejections([1, 3], [2.0, 2.0], UpdateBounds(max_norm=5.0))
    assert pull[0] is None and "pulls 6, above max_update_norm=5" in pull[1]
    # all-zero updates: a norm screen against a zero median would refuse any honest step
    assert relative_rejections([1, 1, 1], [0.0, 0.0, 3.0], bounds) == [None, None, None]


def test_check_update_applies_the_bounds_it_is_given():
    # the public check takes the same bounds as a round (mutation testing found them unused
    # by every test that called it)
    update = ClientUpdate("c0", 1, GLOBAL.map(lambda a: np.full_like(a, 10.0)), 50.0)
    assert check_update(update, GLOBAL, 1, None) is None
    assert "exceeds max_update_norm=5" in check_update(update, GLOBAL, 1, 5.0)
    assert check_update(update, GLOBAL, 1, None, max_weight=49.0) == (
        "weight=50.0 exceeds max_client_weight=49"
    )


@pytest.mark.parametrize(
    ("values", "median"),
    [
        ([7.0], 7.0),
        ([4.0, 1.0], 1.0),
        ([5.0, 1.0, 3.0], 3.0),
        ([9, 1, 5, 3, 7], 5),
        ([4, 1, 3, 2], 2),
    ],
)
def test_the_lower_median(values, median):
    assert lower_median(values) == median


def test_the_bounds_themselves_are_allowed():
    # a pull of exactly max_update_norm, a norm of exactly factor × the median norm
    assert relative_rejections([2, 2], [5.0, 5.0], UpdateBounds(max_norm=5.0)) == [None, None]
    bounds = UpdateBounds(max_norm=None, outlier_factor=10.0)
    assert relative_rejections([1, 1, 1], [0.5, 0.5, 5.0], bounds) == [None, None, None]


def test_reasons_give_the_weight_ratio_and_screen_small_norms_too():
    pull = relative_rejections([2, 2, 8], [1.0, 1.0, 1.0], UpdateBounds(max_norm=3.0))
    assert pull[2] == (
        "weight × norm: norm 1 at weight 8 (4× the round's median weight) pulls 4, above "
        "max_update_norm=3"
    )
    # a median norm below 1 still screens
    bounds = UpdateBounds(max_norm=None, outlier_factor=10.0)
    assert relative_rejections([1, 1, 1], [0.5, 0.5, 5.01], bounds)[2] == (
        "payload norm 5.01 is an outlier: above outlier_factor=10 × the round's median norm 0.5"
    )


def test_joining_a_secure_sum_keeps_its_members_and_adds_its_failures_and_traffic():
    before = Collected(
        ("c0", "c1", "c2"), (ClientFailure("c3", "train", "x"),), bytes_down=100, bytes_up=40
    )
    late = ClientFailure("c2", "unmask", "gone")
    outcome = SecureSumResult(
        WeightedSum(GLOBAL, 2.0, 2), ("c0", "c1"), (late,), bytes_down=7, bytes_up=5
    )
    after = before.joined(outcome)
    assert after.completed == ("c0", "c1")
    assert after.failures == (ClientFailure("c3", "train", "x"), late)
    assert (after.bytes_down, after.bytes_up) == (107, 45)


def test_the_edges_of_each_check_are_allowed_and_the_messages_are_whole():
    update = ClientUpdate("c0", 1, GLOBAL.map(lambda a: np.full_like(a, 0.5)), 2.0**53)
    assert check_update(update, GLOBAL, 1, None) is None  # 2^53 itself
    assert check_update(update, GLOBAL, 1, None, max_weight=2.0**53) is None
    norm = update.payload.norm()
    assert check_update(update, GLOBAL, 1, norm) is None  # a norm exactly at the bound
    nan = replace(update, payload=update.payload * np.nan)
    assert check_update(nan, GLOBAL, 1, None) == "payload contains NaN or Inf"
    huge = replace(update, payload=update.payload * np.float32(1e20))
    assert check_update(huge, GLOBAL, 1, None) == (
        "payload norm overflows: entries beyond any model's range"
    )


def test_the_dp_clip_allows_float_rounding_and_the_clip_bit_is_a_centred_half():
    fit = FitConfig(privacy=ClientPrivacy(clip=1.0))
    unit = Params({"w": np.array([0.6, 0.8]), "b": np.zeros(1)})  # norm 1
    like = unit.zeros_like()
    within = ClientUpdate("c0", 1, unit * (1 + 5e-7), 1.0)
    assert check_update(within, like, 1, None, fit) is None
    assert "exceeds the DP clip bound" in check_update(
        replace(within, payload=unit * (1 + 2e-6)), like, 1, None, fit
    )
    for bit in (-0.5, 0.5):
        assert check_update(replace(within, extras={WITHIN_CLIP: bit}), like, 1, None, fit) is None
    reason = check_update(replace(within, extras={WITHIN_CLIP: 0.25}), like, 1, None, fit)
    assert reason is not None and "0.25" in reason


def test_compressed_answers_are_decoded_and_a_malformed_one_is_left_out_with_its_reason():
    the_plan = plan()
    codec = Compression.parse("topk:0.5+q8")
    sent = []
    for task in the_plan.tasks:
        update = honest(GLOBAL, task)
        encoded, _ = encode_update(update.payload, codec, None, task.config.seed)
        sent.append(replace(update, payload=encoded))
    broken = sent[2].client_id
    sent[2] = replace(sent[2], payload=Params({PAYLOAD: np.zeros(3, np.uint8)}))
    accepted = []
    collected = collect_updates(
        map(delivered, sent), the_plan, GLOBAL, accepted.append, NO_BOUNDS, codec, None
    )
    answered = [t for t in the_plan.tasks if t.client_id != broken]
    for update, task in zip(accepted, answered, strict=True):
        expected = decode_update(
            encode_update(honest(GLOBAL, task).payload, codec, None, task.config.seed)[0],
            GLOBAL, codec, task.config.seed,
        )  # fmt: skip
        assert update.payload.bit_equal(expected)
    (failure,) = collected.failures
    assert failure.client_id == broken and failure.stage == "validate"
    assert failure.cause.startswith("compressed update: the count needs 4 bytes at offset 0")


def test_a_round_under_client_level_dp_checks_each_answer_against_its_plan():
    state = ServerState.initial(GLOBAL, seed=1)
    strategy = DifferentialPrivacy(FedAvg(), clip=100.0, noise_multiplier=0.0)
    the_plan = plan_round(
        state, strategy, CLIENTS, RoundConfig(clients_per_round=3), state.generator()
    )
    updates = [replace(honest(GLOBAL, t), weight=1.0) for t in the_plan.tasks]
    updates[0] = replace(updates[0], weight=5.0)  # a client that claims its example count
    collected = collect_updates(
        map(delivered, updates), the_plan, GLOBAL, [].append, NO_BOUNDS, None, None
    )
    (failure,) = collected.failures
    assert failure.client_id == updates[0].client_id
    assert "expected 1 under client-level DP" in failure.cause


def stacked(updates, rows):
    return StackedDelivery(UpdateBlock.stack([updates[k] for k in rows]), 11, GLOBAL.wire_size())


def both_ways(updates, the_plan, bounds=NO_BOUNDS, blocks=None):
    """``collect_updates`` over ``updates`` one delivery each, and stacked into ``blocks``
    (lists of indices, delivered in that order; default: one block of all): for each,
    the outcome, the plain sum of what was accepted and the order it was accepted in."""
    outcomes = []
    for as_blocks in (False, True):
        total, order = PlainSum(GLOBAL), []

        def one(update, total=total, order=order):
            total.add(update.payload, update.weight, update.extras)
            order.append(update.client_id)

        def many(block, total=total, order=order):
            total.add_block(block.payload, block.weights)
            order.extend(block.client_ids)

        deliveries = (
            [stacked(updates, rows) for rows in blocks or [range(len(updates))]]
            if as_blocks
            else map(delivered, updates)
        )
        collected = collect_updates(
            deliveries, the_plan, GLOBAL, one, bounds, None, None, many if as_blocks else None
        )
        summed = total.result(the_plan.round) if order else None
        outcomes.append((collected, summed, order))
    return outcomes


def assert_same(outcomes):
    (rows, rows_sum, rows_order), (block, block_sum, block_order) = outcomes
    assert block == rows  # completed, failures and their causes, metrics, pulls, bytes
    assert block_order == rows_order
    assert block_sum.total.bit_equal(rows_sum.total) and block_sum.weight == rows_sum.weight


@pytest.mark.parametrize(
    "change",
    [
        lambda u: replace(u, weight=0.0),
        lambda u: replace(u, weight=float("nan")),
        lambda u: replace(u, weight=float("inf")),
        lambda u: replace(u, weight=1e300),
        lambda u: replace(u, weight=101.0),  # above max_client_weight
        lambda u: replace(u, payload=u.payload * np.float32(1e19)),
        lambda u: replace(u, payload=u.payload * np.nan),
        lambda u: replace(u, payload=u.payload.map(lambda a: np.where(a > 0, np.inf, a))),
    ],
)
def test_a_bad_row_of_a_block_is_rejected_as_the_same_update_alone_would_be(change):
    the_plan = plan(5)
    updates = [honest(GLOBAL, t) for t in the_plan.tasks]
    updates[1] = change(updates[1])
    outcomes = both_ways(updates, the_plan, UpdateBounds(max_weight=100.0))
    assert_same(outcomes)
    (failure,) = outcomes[1][0].failures
    assert failure.client_id == updates[1].client_id and failure.stage == "validate"
    assert len(outcomes[1][0].completed) == 4


@pytest.mark.parametrize("dtype", ["f2", "f4", "f8", "i8", "u1", "?"])
@pytest.mark.parametrize("count", [1, 2, 7])
def test_a_blocks_row_norms_are_each_rows_params_norm_to_the_bit(dtype, count):
    # eleven entries of like sizes (past the eight where a pairwise sum would start, and
    # close enough that the order of adding them shows in the last bits), from empty to
    # three-dimensional, values that overflow float32's square and a NaN among them
    rng = np.random.default_rng(count)
    shapes = [(0,), (5,), (3, 2), (2, 3), (6,), (1, 5), (4,), (7,), (2, 2, 2), (5, 1), (6,)]
    for draw in range(20):
        entries = {}
        for k, shape in enumerate(shapes):
            values = rng.standard_normal((count, *shape)) * 10.0 ** rng.uniform(-1, 1)
            if draw == 1 and k == 3:
                values[-1] *= 1e30  # its float32 square overflows; in float64 it does not
            if draw == 2 and k == 4:
                values[0, 0] = np.nan
            with np.errstate(over="ignore", invalid="ignore"):  # casts of huge values
                entries[f"e{k}"] = values.astype(dtype) if dtype != "?" else values > 0
        block = Params(entries)
        got = _row_norms(block, count)
        for row in range(count):
            alone = Params({n: a[row] for n, a in block.items()}).norm()
            assert np.float64(alone).tobytes() == got[row].tobytes(), (draw, row, alone, got[row])


def test_a_whole_block_for_another_round_or_layout_is_rejected_row_by_row():
    the_plan = plan(3)
    stale = [replace(honest(GLOBAL, t), round=0) for t in the_plan.tasks]
    outcomes = both_ways(stale, the_plan)
    assert [f.cause for f in outcomes[1][0].failures] == [
        "update is for round 0, expected round 1"
    ] * 3
    other = Params({"w": np.zeros(2, np.float32)})
    shaped = [replace(honest(GLOBAL, t), payload=other) for t in the_plan.tasks]
    (_, rows_sum, _), (block, block_sum, order) = both_ways(shaped, the_plan)
    assert rows_sum is block_sum is None and order == [] and block.completed == ()
    assert all("payload names do not match" in f.cause for f in block.failures)


def test_blocks_arriving_out_of_task_order_are_summed_in_task_order():
    # a cohort is grouped by client size, so its rows need not follow the task order
    the_plan = plan(6)
    updates = [honest(GLOBAL, t) for t in the_plan.tasks]
    outcomes = both_ways(updates, the_plan, blocks=[[4, 1, 5], [2, 0, 3]])
    assert_same(outcomes)
    assert outcomes[1][2] == [t.client_id for t in the_plan.tasks]


def test_a_block_with_a_stranger_or_a_repeat_goes_through_row_by_row():
    the_plan = plan(4)
    updates = [honest(GLOBAL, t) for t in the_plan.tasks]
    stranger = replace(updates[0], client_id="nobody")
    for extra in (stranger, updates[2]):
        rows = [*updates, extra]
        deliveries = [stacked(rows, [0, 1, 4]), stacked(rows, [2, 3])]
        accepted: list = []
        collected = collect_updates(
            deliveries, the_plan, GLOBAL, accepted.append, NO_BOUNDS, None, None,
            lambda block, accepted=accepted: accepted.extend(block.rows()),
        )  # fmt: skip
        assert collected.completed == tuple(t.client_id for t in the_plan.tasks)
        assert [u.client_id for u in accepted] == list(collected.completed)
        (failure,) = collected.failures
        assert (failure.client_id, failure.cause) == (
            extra.client_id,
            "not asked in this round, or answered twice",
        )


def test_blocks_under_bounds_relative_to_the_round_are_screened_row_by_row():
    the_plan = plan(5)
    updates = [honest(GLOBAL, t) for t in the_plan.tasks]
    updates[1] = replace(updates[1], weight=1e12)
    outcomes = both_ways(updates, the_plan, UpdateBounds(outlier_factor=10.0))
    assert_same(outcomes)
    assert "is an outlier" in outcomes[1][0].failures[0].cause
