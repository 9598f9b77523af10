"""``GET /metrics``: Prometheus exposition of the engine, HTTP and process metrics.

Exposition, counters and histograms come from ``prometheus-client``. Each app has its own
``CollectorRegistry`` (never the global one), so several apps in one process do not
collide. The HTTP part is counted by the request-log middleware as each request ends; the
engine part is read at scrape time from the engine's non-blocking stats snapshot (never
the engine thread), through the tables below: a new engine number is one table row.

The same observations keep a running mean of generation times, from which the 429
answer's ``Retry-After`` is estimated (see ``retry_after_estimate``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.engine.router import ModelStatus
from app.engine.types import EngineHealth, EngineStats, LoraAdapter, OffloadInfo

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Upper bounds (seconds) of the request-duration histogram buckets.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# (EngineStats attribute, metric name, help text). Counter names end in _total.
ENGINE_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("slots_busy", "cria_slots_busy", "Slots generating now."),
    ("slots_total", "cria_slots_total", "Slots (parallel sequences)."),
    ("queue_length", "cria_queue_length", "Requests waiting for a slot."),
    ("max_queue", "cria_queue_max", "Requests allowed to wait before 429."),
    ("kv_cells_used", "cria_kv_cells_used", "KV cache cells holding tokens."),
    ("kv_cells_total", "cria_kv_cells_total", "KV cache cells in all slots."),
    ("requests_active", "cria_requests_active", "Requests queued or running."),
)
ENGINE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("prompt_tokens_total", "cria_prompt_tokens_total", "Prompt tokens admitted."),
    (
        "cached_prompt_tokens_total",
        "cria_prompt_tokens_cached_total",
        "Prompt tokens served from a slot's KV cache (not prefilled).",
    ),
    ("generated_tokens_total", "cria_generated_tokens_total", "Tokens generated."),
    ("requests_total", "cria_requests_total", "Requests accepted by the engine."),
)
# The host-RAM prompt cache (HostCacheStats attribute, metric name, help text, is counter).
HOST_CACHE_METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("entries", "cria_prompt_cache_ram_entries", "Conversations saved in host RAM.", False),
    ("bytes_used", "cria_prompt_cache_ram_bytes", "Host RAM held by saved KV states.", False),
    ("capacity_bytes", "cria_prompt_cache_ram_capacity_bytes", "The --cache-ram bound.", False),
    ("saves", "cria_prompt_cache_ram_saves_total", "KV states saved to host RAM.", True),
    ("hits", "cria_prompt_cache_ram_hits_total", "Prompts restored from host RAM.", True),
    (
        "restored_tokens",
        "cria_prompt_cache_ram_restored_tokens_total",
        "Prompt tokens restored from host RAM instead of prefilled.",
        True,
    ),
    (
        "restored_bytes",
        "cria_prompt_cache_ram_restored_bytes_total",
        "Bytes of KV state restored from host RAM.",
        True,
    ),
)
ENGINE_STATES = ("loading", "ready", "restarting", "failed", "dead", "stopped")
# The same load under the vLLM names the Gateway API Inference Extension's endpoint picker
# scrapes by default (its --total-queued-requests-metric, --total-running-requests-metric and
# --kv-cache-usage-percentage-metric flags), so a replica can sit in an InferencePool as it is.
# (EngineStats attribute, metric name, help text); the KV fraction is computed below.
GATEWAY_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("queue_length", "vllm:num_requests_waiting", "Requests waiting for a slot."),
    ("slots_busy", "vllm:num_requests_running", "Requests generating in a slot."),
)
# vLLM >= 0.10 and the picker's default (first), and the name older pickers read.
KV_USAGE_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
# llama.cpp's KV cells hold one token each; the cache size is told in blocks of vLLM's default
# 16 tokens, so the picker's prefix-cache scorer (which sizes its hashed prompt blocks from
# block_size when it autotunes) hashes blocks of the usual size, not single tokens.
GATEWAY_BLOCK_TOKENS = 16

# Retry-After bounds (seconds) and the weight of the newest generation time in the mean.
RETRY_AFTER_MIN_S = 1
RETRY_AFTER_MAX_S = 120
MEAN_WEIGHT = 0.1


class RunningMean:
    """An exponentially weighted mean (thread-safe); None until the first value."""

    def __init__(self, weight: float = MEAN_WEIGHT) -> None:
        self._weight = weight
        self._lock = threading.Lock()
        self._value: float | None = None

    def add(self, value: float) -> None:
        """Fold one value into the mean."""
        with self._lock:
            old = self._value
            self._value = value if old is None else old + self._weight * (value - old)

    @property
    def value(self) -> float | None:
        return self._value


def retry_after_estimate(position: int, slots: int, mean_request_s: float | None) -> int:
    """Seconds until a slot is likely free for the request at queue ``position`` (1-based).

    ``position`` requests must start before it; ``slots`` run at once, each taking about
    ``mean_request_s``. Bounded to [1, 120]; 1 s before any request has finished.
    """
    if mean_request_s is None or slots <= 0:
        return RETRY_AFTER_MIN_S
    wait = math.ceil(max(position, 1) * mean_request_s / slots)
    return min(max(wait, RETRY_AFTER_MIN_S), RETRY_AFTER_MAX_S)


class HttpMetrics:
    """One app's metrics: a registry with the HTTP and process collectors, and the mean
    generation time (for Retry-After)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cria_http_requests_total",
            "HTTP requests by route/status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "cria_http_request_duration_seconds",
            "HTTP request duration, streams included.",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "cria_http_prompt_tokens_total",
            "Prompt tokens of answered requests.",
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "cria_http_completion_tokens_total", "Tokens sent to clients.", registry=self.registry
        )
        ProcessCollector(registry=self.registry)  # process_* (memory, CPU, open files)
        PlatformCollector(registry=self.registry)  # python_info
        self.generation_s = RunningMean()

    def observe(
        self,
        method: str,
        route: str,
        status: int,
        duration_s: float,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Count one finished request (a generation also feeds the mean generation time)."""
        self.requests.labels(method, route, str(status)).inc()
        self.durations.labels(route).observe(duration_s)
        self.prompt_tokens.inc(prompt_tokens)
        self.completion_tokens.inc(completion_tokens)
        if status == 200 and (prompt_tokens or completion_tokens):
            self.generation_s.add(duration_s)


class EngineCollector(Collector):
    """The engine's state and stats snapshot as metric families (built per scrape)."""

    def __init__(self, health: EngineHealth, stats: EngineStats | None) -> None:
        self.health = health
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "cria_engine_state", "1 for the engine's current state.", labels=["state"]
        )
        for name in ENGINE_STATES:
            state.add_metric([name], int(self.health.state == name))
        yield state
        yield CounterMetricFamily(
            "cria_engine_restarts",
            "Times the engine process was restarted after it died.",
            value=self.health.restarts,
        )
        if self.health.reason and not self.health.ready:
            why = GaugeMetricFamily(
                "cria_engine_state_reason",
                "1, labelled with why the engine is not ready (loading, restarting, failed).",
                labels=["state", "reason"],
            )
            why.add_metric([self.health.state, self.health.reason], 1)
            yield why
        if self.stats is None:
            return
        for attr, name, text in ENGINE_GAUGES:
            yield GaugeMetricFamily(name, text, value=getattr(self.stats, attr))
        for attr, name, text in ENGINE_COUNTERS:
            yield CounterMetricFamily(name, text, value=getattr(self.stats, attr))
        yield from gateway_metrics(self.stats)
        yield from speculative_metrics(self.stats)
        host = self.stats.host_cache
        if host is None:
            return
        for attr, name, text, counter in HOST_CACHE_METRICS:
            family = CounterMetricFamily if counter else GaugeMetricFamily
            yield family(name, text, value=getattr(host, attr))


def speculative_metrics(stats: EngineStats) -> Iterator[Metric]:
    """Draft tokens verified and accepted, and the acceptance rate, labelled by the draft
    method (the counterparts of llama-server's ``llamacpp:spec_decode_*``); none while
    speculative decoding is off."""
    if stats.draft_method == "off":
        return
    method = [stats.draft_method]
    proposed = CounterMetricFamily(
        "cria_spec_draft_tokens", "Draft tokens verified.", labels=["method"]
    )
    proposed.add_metric(method, stats.draft_tokens_total)
    accepted = CounterMetricFamily(
        "cria_spec_accepted_tokens",
        "Draft tokens accepted (each one a decode step saved).",
        labels=["method"],
    )
    accepted.add_metric(method, stats.draft_accepted_total)
    rate = GaugeMetricFamily(
        "cria_spec_acceptance_rate",
        "Accepted over verified draft tokens since the engine started (0 before any).",
        labels=["method"],
    )
    total = stats.draft_tokens_total
    rate.add_metric(method, stats.draft_accepted_total / total if total else 0.0)
    yield from (proposed, accepted, rate)


def gateway_metrics(stats: EngineStats) -> Iterator[Metric]:
    """The load in vLLM's names (see ``GATEWAY_GAUGES``). KV usage is cells holding tokens
    over all cells (from 0 to 1): idle slots' cached conversations count as used.

    ``vllm:cache_config_info`` tells the picker the cache size (see ``GATEWAY_BLOCK_TOKENS``).
    """
    for attr, name, text in GATEWAY_GAUGES:
        yield GaugeMetricFamily(name, text, value=getattr(stats, attr))
    total = stats.kv_cells_total
    usage = stats.kv_cells_used / total if total > 0 else 0.0
    for name in KV_USAGE_NAMES:
        yield GaugeMetricFamily(name, "KV cache cells in use (1 means 100 percent).", value=usage)
    info = GaugeMetricFamily(
        "vllm:cache_config_info",
        "KV cache size: block_size tokens per block, num_gpu_blocks blocks.",
        labels=["block_size", "num_gpu_blocks"],
    )
    info.add_metric([str(GATEWAY_BLOCK_TOKENS), str(total // GATEWAY_BLOCK_TOKENS)], 1)
    yield info


class OffloadCollector(Collector):
    """Where the model runs (the loader's offload decision) as gauges, once it is loaded."""

    def __init__(self, offload: OffloadInfo | None) -> None:
        self.offload = offload

    def collect(self) -> Iterator[Metric]:
        o = self.offload
        if o is None:
            return
        device = o.device_name or ""
        info = GaugeMetricFamily(
            "cria_offload_info",
            "1, labelled with the backend the model runs on, its device and the request.",
            labels=["backend", "device", "requested"],
        )
        info.add_metric([o.backend, device, o.requested], 1)
        yield info
        yield GaugeMetricFamily(
            "cria_offload_gpu_layers", "Layers offloaded to the GPU.", value=o.layers_offloaded
        )
        yield GaugeMetricFamily(
            "cria_offload_layers_total", "Offloadable layers of the model.", value=o.layers_total
        )
        yield GaugeMetricFamily(
            "cria_offload_fallback",
            "1 when loading backed off from what was requested.",
            value=int(o.fallback),
        )
        for value, name, text in (
            (o.device_total_bytes, "cria_gpu_memory_total_bytes", "Memory of the GPU in use."),
            (
                o.device_free_bytes,
                "cria_gpu_memory_free_at_load_bytes",
                "Free memory of the GPU in use when the model was loaded.",
            ),
        ):
            if value is not None:
                family = GaugeMetricFamily(name, text, labels=["device"])
                family.add_metric([device], value)
                yield family


class LoraCollector(Collector):
    """The loaded LoRA adapters: one series each, its current scale, labelled id and name."""

    def __init__(self, adapters: Sequence[LoraAdapter]) -> None:
        self.adapters = adapters

    def collect(self) -> Iterator[Metric]:
        if not self.adapters:
            return
        family = GaugeMetricFamily(
            "cria_lora_adapter_scale",
            "Scale of each loaded LoRA adapter (requests naming it get this scale).",
            labels=["id", "name"],
        )
        for adapter in self.adapters:
            family.add_metric([str(adapter.id), adapter.name], adapter.scale)
        yield family


MODEL_STATES = ("unloaded", "loading", "ready", "restarting", "failed")


class ModelsCollector(Collector):
    """Each library model's state, restarts and estimates, labelled by model."""

    def __init__(self, models: Sequence[ModelStatus]) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        if not self.models:
            return
        state = GaugeMetricFamily(
            "cria_model_state", "1 for each model's current state.", labels=["model", "state"]
        )
        restarts = CounterMetricFamily(
            "cria_model_restarts",
            "Times the model's engine process was restarted after it died.",
            labels=["model"],
        )
        ram = GaugeMetricFamily(
            "cria_model_memory_estimate_bytes", "RAM the model takes loaded.", labels=["model"]
        )
        vram = GaugeMetricFamily(
            "cria_model_vram_estimate_bytes", "GPU memory the model takes loaded.", labels=["model"]
        )
        why = GaugeMetricFamily(
            "cria_model_last_error",
            "1, labelled with the model's last load or engine error.",
            labels=["model", "error"],
        )
        for status in self.models:
            model = status.entry.id
            for name in MODEL_STATES:
                state.add_metric([model, name], int(status.state == name))
            restarts.add_metric([model], status.restarts)
            ram.add_metric([model], status.entry.memory_bytes)
            vram.add_metric([model], status.entry.vram_bytes)
            if status.last_error:
                why.add_metric([model, status.last_error], 1)
        yield from (state, restarts, ram, vram, why)


class _Joined(Collector):
    """Several collectors exposed as one (what generate_latest reads)."""

    def __init__(self, parts: Iterable[Collector]) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


def render_metrics(
    health: EngineHealth,
    stats: EngineStats | None,
    http: HttpMetrics,
    offload: OffloadInfo | None = None,
    adapters: Sequence[LoraAdapter] = (),
    models: Sequence[ModelStatus] = (),
) -> bytes:
    """The whole exposition document (text format 0.0.4)."""
    parts = (
        EngineCollector(health, stats),
        ModelsCollector(models),
        OffloadCollector(offload),
        LoraCollector(adapters),
        http.registry,
    )
    return generate_latest(_Joined(parts))
