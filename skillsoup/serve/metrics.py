"""Prometheus metrics, in the text format at ``GET /metrics``.

Per server (one registry per app, so several servers in a process never mix their numbers):
    skillsoup_requests_total{endpoint,status}        answered requests by HTTP status (429s included)
    skillsoup_request_duration_seconds{endpoint}     arrival to last byte (histogram)
    skillsoup_time_to_first_token_seconds{endpoint}  arrival to the first text (histogram)
    skillsoup_prompt_tokens_total, skillsoup_completion_tokens_total
    skillsoup_requests_cancelled_total                clients that left before the end (their rows freed)
    skillsoup_requests_timed_out_total
Read from the engine(s) at scrape time (summed over Ray replicas):
    skillsoup_batch_rows, skillsoup_queue_waiting, skillsoup_engine_steps_total,
    skillsoup_engine_row_steps_total, skillsoup_engine_prefill_passes_total, skillsoup_generated_tokens_total,
    skillsoup_state_cache_hits_total, skillsoup_state_cache_misses_total, skillsoup_state_cache_bytes,
    skillsoup_replica_retries_total (Ray only)
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_GAUGES = {"rows": ("batch_rows", "rows decoding now"), "waiting": ("queue_waiting", "requests waiting for a row"),
           "cache_bytes": ("state_cache_bytes", "bytes of skill states held in memory")}
_COUNTERS = {"steps": ("engine_steps", "batched model steps"),
             "row_steps": ("engine_row_steps", "batch rows summed over steps (row_steps / steps = mean batch)"),
             "prefill_passes": ("engine_prefill_passes", "parallel prompt passes (one padded pass reads several)"),
             "tokens": ("generated_tokens", "answer tokens sampled, cancelled requests included"),
             "cache_hits": ("state_cache_hits", "skill states served from memory"),
             "cache_misses": ("state_cache_misses", "skill states read from the store (or recaptured)"),
             "retries": ("replica_retries", "requests sent again because their Ray replica died")}


class Metrics:
    def __init__(self, snapshot: Callable[[], dict]):
        disable_created_metrics()  # the *_created series only repeat the start time
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("skillsoup_requests", "answered requests", ["endpoint", "status"],
                                registry=self.registry)
        self.duration = Histogram("skillsoup_request_duration_seconds", "arrival to last byte", ["endpoint"],
                                  buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("skillsoup_time_to_first_token_seconds", "arrival to first text", ["endpoint"],
                              buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.prompt_tokens = Counter("skillsoup_prompt_tokens", "prompt tokens read", registry=self.registry)
        self.completion_tokens = Counter("skillsoup_completion_tokens", "answer tokens sent", registry=self.registry)
        self.cancelled = Counter("skillsoup_requests_cancelled", "clients that left mid-answer", registry=self.registry)
        self.timed_out = Counter("skillsoup_requests_timed_out", "requests past the time limit", registry=self.registry)
        self.registry.register(_EngineCollector(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector:
    def __init__(self, snapshot: Callable[[], dict]):
        self.snapshot = snapshot

    def collect(self):
        values = self.snapshot()
        for key, (name, doc) in _GAUGES.items():
            yield GaugeMetricFamily(f"skillsoup_{name}", doc, value=float(values.get(key, 0)))
        for key, (name, doc) in _COUNTERS.items():
            yield CounterMetricFamily(f"skillsoup_{name}", doc, value=float(values.get(key, 0)))

    def describe(self):
        return []
