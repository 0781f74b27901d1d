"""The asynchronous (FedBuff) loop over gRPC: a real server process and client processes
of different speeds that train and upload continuously; clients killed and restarted,
and the server killed and resumed, lose nothing but the work in flight."""

import json
import re
import time

import pytest

from fedstream.store import RunStore, latest_checkpoint, load_checkpoint
from tests.deploy.harness import (
    client_ids,
    restart_server,
    start_client,
    start_server_process,
    write_run,
)

pytestmark = pytest.mark.slow  # real processes and whole runs

ASYNC = {"mode": "async", "buffer_size": 2, "concurrency": 4, "evaluate_every": 0}
# seconds per example: a task of 231 examples takes about 0.3 s on a fast device and
# 2 s on a slow one
FAST, SLOW = 0.0013, 0.009


def start_fleet(toml, tokens, port, ids, slow):
    """A client process per id; those in ``slow`` play a slower device."""
    return {c: start_device(toml, tokens, port, c, SLOW if c in slow else FAST) for c in ids}


def start_device(toml, tokens, port, client_id, slowdown):
    return start_client(toml, tokens, port, client_id, "--slowdown", str(slowdown))


def rounds_done(store) -> int:
    runs = RunStore(store).runs() if store.exists() else []
    return int(runs[0]["rounds_done"]) if runs else 0


def wait_for_steps(store, count, server, timeout=120.0):
    deadline = time.monotonic() + timeout
    while rounds_done(store) < count:
        assert time.monotonic() < deadline and server.popen.poll() is None, "".join(server.lines)
        time.sleep(0.05)


def test_clients_of_different_speeds_train_continuously_and_a_restarted_one_rejoins(tmp_path):
    toml, tokens, config = write_run(tmp_path, rounds=30, **ASYNC)
    ids = client_ids(config)
    server, port = start_server_process(toml, tokens, tmp_path / "run", "--round-timeout", "60")
    slow = {ids[3], ids[4]}
    clients = start_fleet(toml, tokens, port, ids, slow)
    store = tmp_path / "store.sqlite"
    wait_for_steps(store, 3, server)
    clients[ids[0]].kill()  # a fast client dies mid-run, perhaps mid-task
    killed_at = rounds_done(store)
    clients[ids[0]] = start_device(toml, tokens, port, ids[0], FAST)  # and comes back
    assert server.wait(timeout=180) == 0, "".join(server.lines)
    for client in clients.values():
        assert client.wait() == 0, "".join(client.lines)
    run = RunStore(store).run("run")
    assert run["status"] == "finished" and len(run["rounds"]) == 30
    steps = run["rounds"]
    assert all(len(step["completed"]) == 2 for step in steps)  # a step every K = 2 updates
    times = [step["metrics"]["sim_time_s"] for step in steps]
    assert times == sorted(times) and times[0] > 0
    # no client waits for a round: the fast ones bring more updates than the slow ones,
    # and updates from older model versions are taken, scaled down
    counts = {c: sum(c in step["completed"] for step in steps) for c in ids}
    assert min(counts[c] for c in ids[1:3]) > max(counts[c] for c in slow), counts
    assert max(step["metrics"]["staleness_max"] for step in steps) >= 1
    # the killed client's task is a recorded failure; once back it trains again
    lost = [f for step in steps for f in step["failures"] if f["client_id"] == ids[0]]
    assert lost and {f["cause"] for f in lost} <= {"disconnected", "not connected"}
    later = [s for s in steps if s["round"] > killed_at + 1]
    assert any(ids[0] in step["completed"] for step in later)
    final, _ = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert final.round == 30 and final.params.is_finite()


def test_the_async_server_killed_mid_run_resumes_from_its_last_step(tmp_path):
    # with federated evaluation every 4 steps, while other clients' fit answers arrive:
    # each call gets its own answers
    toml, tokens, config = write_run(tmp_path, rounds=12, **ASYNC | {"evaluate_every": 4})
    out, store = tmp_path / "run", tmp_path / "store.sqlite"
    server, port = start_server_process(toml, tokens, out)
    ids = client_ids(config)
    clients = start_fleet(toml, tokens, port, ids, slow={ids[4]})
    wait_for_steps(store, 4, server)
    _, before = restart_server(server, tokens, port, out, clients)
    assert 4 <= before.round < 12 and before.in_flight is not None
    run = RunStore(store).run("run")
    assert run["status"] == "finished"
    assert [step["round"] for step in run["rounds"]] == list(range(1, 13))
    times = [step["metrics"]["sim_time_s"] for step in run["rounds"]]
    # the clock goes on from the checkpoint: the run's seconds, not the new process's
    assert times == sorted(times)
    evaluated = [s["round"] for s in run["rounds"] if "fed_accuracy" in s["metrics"]]
    assert evaluated == [4, 8, 12]
    causes = [f["cause"] for step in run["rounds"] for f in step["failures"]]
    assert not [c for c in causes if "no answer" in c], causes
    final, _ = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert final.round == 12 and final.params.is_finite()
    assert not final.params.bit_equal(before.params)


def test_secagg_and_client_dp_run_over_each_buffer_of_an_async_deployment(tmp_path):
    # each step's SecAgg+ runs over the K clients whose updates wait in the buffer, on
    # their devices; a held client gets no new task before the step
    toml, tokens, config = write_run(
        tmp_path, rounds=6, num_clients=6, clients_per_round=6, mode="async", buffer_size=3,
        concurrency=3, staleness="constant", evaluate_every=3, secure_aggregation="secagg+",
        dp="client", dp_noise=0.3, dp_clip=0.05,
    )  # fmt: skip
    server, port = start_server_process(toml, tokens, tmp_path / "run", "--round-timeout", "60")
    ids = client_ids(config)
    clients = start_fleet(toml, tokens, port, ids, slow={ids[0]})
    assert server.wait(timeout=240) == 0, "".join(server.lines)
    for client in clients.values():
        assert client.wait() == 0, "".join(client.lines)
    run = RunStore(tmp_path / "store.sqlite").run("run")
    assert run["status"] == "finished" and len(run["rounds"]) == 6
    for step in run["rounds"]:
        assert len(step["completed"]) == 3 and len(set(step["completed"])) == 3
        assert not step["failures"], step["failures"]
        assert step["metrics"]["dp_epsilon"] > 0
    epsilons = [step["metrics"]["dp_epsilon"] for step in run["rounds"]]
    assert epsilons == sorted(epsilons) and epsilons[0] < epsilons[-1]  # one release a step
    final, _ = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert final.round == 6 and final.params.is_finite()


def test_deployed_clients_stream_their_data_and_the_served_model_follows_the_drift(tmp_path):
    # each client's ~290 examples arrive over the run's first 16 s and its tasks train on
    # the newest 32, read at the start the server names; labels shift at 8 s. A client
    # that ignored the stream would never see a shifted label, and the model would stay
    # wrong after the drift
    toml, tokens, config = write_run(
        tmp_path, rounds=160, local_epochs=2, window=32, horizon_s=16.0, drift="shift",
        drift_at_s=8.0, **ASYNC | {"evaluate_every": 0},
    )  # fmt: skip
    server, port = start_server_process(toml, tokens, tmp_path / "run", "--round-timeout", "60")
    ids = client_ids(config)
    clients = {c: start_device(toml, tokens, port, c, 0.005) for c in ids}
    assert server.wait(timeout=300) == 0, "".join(server.lines)
    for client in clients.values():
        assert client.wait() == 0, "".join(client.lines)
    steps = RunStore(tmp_path / "store.sqlite").run("run")["rounds"]
    served = [(s["metrics"]["sim_time_s"], s["metrics"]["stream_accuracy"]) for s in steps]
    assert served[-1][0] > 14.0  # the pace the slowdown sets: past the horizon
    after = [accuracy for t, accuracy in served if 8.0 <= t < 8.5]
    late = [accuracy for t, accuracy in served if t >= 13.0]
    assert after and late and max(late) > max(after) + 0.3, served
    for step in steps:  # each update's data was read at its task's start, before the step
        assert set(step["data_times"]) == set(step["completed"])
        assert all(0 <= t <= step["metrics"]["sim_time_s"] for t in step["data_times"].values())
    stream = json.loads((tmp_path / "run" / "results.json").read_text())["data"]["stream"]
    assert 0 < stream["freshness_p50_s"] < stream["freshness_p99_s"] < 10


def test_an_async_deployment_takes_its_large_updates_by_the_bulk_lane(tmp_path):
    # MLP 512-512 on digits: 1.2 MB updates, above the lane's 1 MiB threshold
    toml, tokens, config = write_run(tmp_path, rounds=4, hidden=(512, 512), **ASYNC)
    ids = client_ids(config)
    server, port = start_server_process(toml, tokens, tmp_path / "run", "--bulk-port", "0")
    clients = start_fleet(toml, tokens, port, ids, slow=set())
    assert server.wait(timeout=180) == 0, "".join(server.lines)
    said = {}
    for client_id, client in clients.items():
        assert client.wait() == 0, "".join(client.lines)
        said[client_id] = client.stdout()
    run = RunStore(tmp_path / "store.sqlite").run("run")
    assert run["status"] == "finished" and len(run["rounds"]) == 4
    taken = [c for step in run["rounds"] for c in step["completed"]]
    # every update the server took came by the lane: no client fell back to the stream,
    # and each counts at least as many lane uploads as the server took from it (a task
    # in flight when the run ended may add one)
    for client_id, client in clients.items():
        assert "goes by the stream" not in "".join(client.lines), "".join(client.lines)
        count = re.search(r"(\d+) update\(s\) by the bulk lane", said[client_id])
        assert count is not None, said[client_id]
        assert int(count.group(1)) >= taken.count(client_id), (said[client_id], taken)
    assert len(taken) == 8  # 4 steps of K = 2
    final, _ = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert final.round == 4 and final.params.is_finite()
