"""Quick start: federated training from Python, then a look at what each round did.

python examples/quickstart.py
"""

import fedstream

# The default job (digits, 100 clients, Dirichlet(0.5) label skew, MLP, FedAvg), but with
# FedProx and fewer rounds. Settings go by section, as in a run file's tables and in the
# flags of `fedstream run --help` (--strategy.mu, --run.rounds).
result = fedstream.simulate(
    strategy={"name": "fedprox", "mu": 0.01},
    run={"rounds": 10},
    output_dir="runs/quickstart",
    overwrite=True,  # a rerun replaces the last one's outputs
)

for report in result.reports:
    print(
        f"round {report.round:2d}: {len(report.completed)} of {len(report.sampled)} clients, "
        f"accuracy {report.metrics['central_accuracy']:.3f}, "
        f"{report.bytes_up / 1e3:.0f} kB up"
    )
print("outputs in", result.output_dir)
