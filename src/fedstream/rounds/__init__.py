"""The round loop in named phases (docs/architecture.md, "The round loop").

- ``plan``: sample clients, give each its task (``plan_round``);
- ``broadcast``: the global params as clients receive them (``broadcast_params``);
- ``collect``: decode and validate the answers, in task order (``collect_updates``);
- ``aggregate``: the streaming or secure sum (``aggregate_updates``);
- ``server step``: the strategy's update (``server_step``);
- ``evaluate``: federated and central evaluation (``evaluate_model``);
- ``run_round`` composes them and reports; ``run_rounds`` repeats it.
"""

from fedstream.rounds.aggregate import Aggregation, aggregate_updates, aggregation_for
from fedstream.rounds.broadcast import broadcast_params
from fedstream.rounds.collect import Collected, InTaskOrder, check_update, collect_updates
from fedstream.rounds.config import RoundConfig
from fedstream.rounds.evaluate import CentralEvaluate, Evaluation, evaluate_model
from fedstream.rounds.loop import run_round, run_rounds, server_step
from fedstream.rounds.plan import RoundPlan, TaskPolicy, plan_round, sample_clients, sample_size

__all__ = [
    "Aggregation",
    "CentralEvaluate",
    "Collected",
    "Evaluation",
    "InTaskOrder",
    "RoundConfig",
    "RoundPlan",
    "TaskPolicy",
    "aggregate_updates",
    "aggregation_for",
    "broadcast_params",
    "check_update",
    "collect_updates",
    "evaluate_model",
    "plan_round",
    "run_round",
    "run_rounds",
    "sample_clients",
    "sample_size",
    "server_step",
]
