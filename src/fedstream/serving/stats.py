"""Serving counters, and their Prometheus text for ``/metrics``."""

from __future__ import annotations

from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class Stats:
    """Counters for ``/metrics``."""

    requests: dict[int, int] = field(default_factory=dict)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_S))
    latency_sum: float = 0.0
    latency_count: int = 0
    swaps: int = 0
    batches: int = 0
    batched_rows: int = 0

    def observe(self, status: int, seconds: float) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1
        if status == 200:
            self.latency_sum += seconds
            self.latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                if seconds <= bound:
                    self.latency_buckets[i] += 1


def prometheus_text(stats: Stats, version: int | None, broken: int = 0) -> str:
    """The counters, the served ``version`` and the number of ``broken`` versions (ones
    that failed to load and were passed over), in Prometheus' text format."""
    lines = [
        "# HELP fedstream_requests_total Prediction requests by HTTP status.",
        "# TYPE fedstream_requests_total counter",
    ]
    lines += [
        f'fedstream_requests_total{{status="{s}"}} {n}' for s, n in sorted(stats.requests.items())
    ]
    lines += [
        "# HELP fedstream_request_seconds Latency of successful predictions.",
        "# TYPE fedstream_request_seconds histogram",
    ]
    lines += [
        f'fedstream_request_seconds_bucket{{le="{bound}"}} {count}'
        for bound, count in zip(LATENCY_BUCKETS_S, stats.latency_buckets, strict=True)
    ]
    lines += [
        f'fedstream_request_seconds_bucket{{le="+Inf"}} {stats.latency_count}',
        f"fedstream_request_seconds_sum {stats.latency_sum}",
        f"fedstream_request_seconds_count {stats.latency_count}",
        "# HELP fedstream_model_version The model version being served.",
        "# TYPE fedstream_model_version gauge",
        f"fedstream_model_version {version if version is not None else -1}",
        "# HELP fedstream_model_swaps_total Model swaps since start.",
        "# TYPE fedstream_model_swaps_total counter",
        f"fedstream_model_swaps_total {stats.swaps}",
        "# HELP fedstream_broken_versions Published versions that failed to load.",
        "# TYPE fedstream_broken_versions gauge",
        f"fedstream_broken_versions {broken}",
        "# HELP fedstream_batches_total Forward passes (micro-batches).",
        "# TYPE fedstream_batches_total counter",
        f"fedstream_batches_total {stats.batches}",
        f"fedstream_batched_rows_total {stats.batched_rows}",
    ]
    return "\n".join(lines) + "\n"
