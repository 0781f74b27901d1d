"""Breast cancer across 5 hospitals: federated logistic regression against the centralised one.

sklearn's Wisconsin breast cancer data (569 patients, 30 features, standardised). 20 % is
held out; the rest is split over 5 hospitals with Dirichlet(1.0) label skew (hospitals see
different shares of malignant cases). Logistic regression (one linear layer, softmax over
the two classes), FedAvg with every hospital every round, 1 local epoch, batch 10, lr 0.05,
50 rounds; the centralised model trains 50 epochs on the pooled data with the same lr and
batch. The target: federated within 1 point of centralised accuracy.

    python benchmarks/quality/breast_cancer_hospitals.py [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import statistics

from common import print_table, run_arms, save

from fedstream.simulation import SimulationConfig, centralised_baseline, preset


def hospitals(seed: int) -> SimulationConfig:
    return preset("breast_cancer_hospitals", execution={"seed": seed})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    runs = run_arms([(f"seed {s}", hospitals(s), "heldout") for s in args.seeds], workers=2)
    rows = []
    for seed, run in zip(args.seeds, runs, strict=True):
        central = centralised_baseline(hospitals(seed), epochs=50)["accuracy"]
        federated = run["final"]["central_accuracy"]
        rows.append(
            {
                "seed": seed,
                "federated": federated,
                "centralised": central,
                "gap (points)": 100 * (central - federated),
            }
        )
    rows.append(
        {
            "seed": "median",
            **{
                k: statistics.median(float(r[k]) for r in rows)
                for k in ("federated", "centralised", "gap (points)")
            },
        }
    )
    print_table(rows, ["seed", "federated", "centralised", "gap (points)"])
    save("breast_cancer_hospitals", {"rows": rows, "runs": runs})


if __name__ == "__main__":
    main()
