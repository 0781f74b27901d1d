"""A deployed streaming client reads its window at the start the server names, and bounds
that number before it uses it: a lying or broken server's time is refused, not trusted."""

import json

import numpy as np
import pytest

from fedstream import FitConfig, Params, TorchTrainer
from fedstream.data.base import ClientData
from fedstream.data.stream import Stream
from fedstream.models import build_model
from fedstream.transport.grpc import fedstream_pb2 as pb
from fedstream.transport.grpc.client import _Device
from fedstream.transport.grpc.codec import fit_config_to_dict
from fedstream.transport.grpc.framing import ProtocolError


def device() -> tuple[_Device, Params]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    data = ClientData(x, rng.integers(0, 3, 40), x[:4], np.zeros(4, dtype=np.int64))
    model = build_model("mlp", 4, 3, 0, (8,))
    params = Params({k: v.detach().numpy() for k, v in model.state_dict().items()})
    stream = Stream({"c": data}, horizon_s=40.0, window=5)
    return _Device("c", data, TorchTrainer(model), stream=stream), params


def fit_request(data_time: object) -> pb.Request:
    header = {"config": fit_config_to_dict(FitConfig(batch_size=5)), "data_time": data_time}
    return pb.Request(task_id="t", run_id="r", round=1, kind="fit", header_json=json.dumps(header))


def test_a_task_trains_on_the_window_at_the_start_the_server_names():
    client, params = device()
    early, _ = client.handle(fit_request(0.5), params.to_bytes())
    assert early["weight"] == 1.0  # one example has arrived by 0.5 s
    late, _ = client.handle(fit_request(30.0), params.to_bytes())
    assert late["weight"] == 5.0  # 31 have: the newest 5


@pytest.mark.parametrize("lie", [-1.0, float("nan"), 1e300, "soon", True, None])
def test_a_start_time_out_of_bounds_or_not_a_number_is_refused(lie):
    client, params = device()
    with pytest.raises(ProtocolError, match=r"^data_time=.* is invalid: expected the task's"):
        client.handle(fit_request(lie), params.to_bytes())
