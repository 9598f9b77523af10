"""``GET /metrics``: Prometheus text exposition of the engine and HTTP counters.

The engine part is read from the engine's non-blocking stats snapshot (never the engine
thread); the HTTP part is counted by the request-log middleware as each request ends.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from app.engine.types import EngineHealth, EngineStats

# Upper bounds (seconds) of the request-duration histogram buckets.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    count: int = 0
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        for i, bound in enumerate(DURATION_BUCKETS):
            if value <= bound:
                self.buckets[i] += 1


class HttpMetrics:
    """Per-route request counts, durations and token totals (thread-safe, in process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._durations: dict[str, _Histogram] = {}
        self._prompt_tokens = 0
        self._completion_tokens = 0

    def observe(
        self,
        method: str,
        route: str,
        status: int,
        duration_s: float,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Count one finished request."""
        with self._lock:
            self._requests[(method, route, status)] += 1
            self._durations.setdefault(route, _Histogram()).observe(duration_s)
            self._prompt_tokens += prompt_tokens
            self._completion_tokens += completion_tokens

    def render(self) -> list[str]:
        """The HTTP metric families as exposition lines."""
        with self._lock:
            requests = sorted(self._requests.items())
            durations = sorted(self._durations.items())
            prompt, completion = self._prompt_tokens, self._completion_tokens
        lines = _family("cria_http_requests_total", "counter", "HTTP requests by route/status.")
        for (method, route, status), count in requests:
            labels = _labels(method=method, route=route, status=str(status))
            lines.append(f"cria_http_requests_total{labels} {count}")
        name = "cria_http_request_duration_seconds"
        lines += _family(name, "histogram", "HTTP request duration, streams included.")
        for route, hist in durations:
            for bound, count in zip(DURATION_BUCKETS, hist.buckets, strict=True):
                lines.append(f"{name}_bucket{_labels(route=route, le=repr(bound))} {count}")
            lines.append(f"{name}_bucket{_labels(route=route, le='+Inf')} {hist.count}")
            lines.append(f"{name}_sum{_labels(route=route)} {hist.total:.6f}")
            lines.append(f"{name}_count{_labels(route=route)} {hist.count}")
        lines += _counter("cria_http_prompt_tokens_total", "Prompt tokens of answered requests.")
        lines.append(f"cria_http_prompt_tokens_total {prompt}")
        lines += _counter("cria_http_completion_tokens_total", "Tokens sent to clients.")
        lines.append(f"cria_http_completion_tokens_total {completion}")
        return lines


_ENGINE_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("slots_busy", "cria_slots_busy", "Slots generating now."),
    ("slots_total", "cria_slots_total", "Slots (parallel sequences)."),
    ("queue_length", "cria_queue_length", "Requests waiting for a slot."),
    ("max_queue", "cria_queue_max", "Requests allowed to wait before 429."),
    ("kv_cells_used", "cria_kv_cells_used", "KV cache cells holding tokens."),
    ("kv_cells_total", "cria_kv_cells_total", "KV cache cells in all slots."),
    ("requests_active", "cria_requests_active", "Requests queued or running."),
)
_ENGINE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("prompt_tokens_total", "cria_prompt_tokens_total", "Prompt tokens admitted."),
    (
        "cached_prompt_tokens_total",
        "cria_prompt_tokens_cached_total",
        "Prompt tokens served from a slot's KV cache (not prefilled).",
    ),
    ("generated_tokens_total", "cria_generated_tokens_total", "Tokens generated."),
    ("requests_total", "cria_requests_total", "Requests accepted by the engine."),
)
_STATES = ("loading", "ready", "dead", "stopped")


def render_metrics(health: EngineHealth, stats: EngineStats | None, http: HttpMetrics) -> str:
    """The whole exposition document (text format 0.0.4)."""
    lines = _family("cria_engine_state", "gauge", "1 for the engine's current state.")
    for state in _STATES:
        lines.append(f"cria_engine_state{_labels(state=state)} {int(health.state == state)}")
    if stats is not None:
        for attr, name, text in _ENGINE_GAUGES:
            lines += _family(name, "gauge", text)
            lines.append(f"{name} {getattr(stats, attr)}")
        for attr, name, text in _ENGINE_COUNTERS:
            lines += _counter(name, text)
            lines.append(f"{name} {getattr(stats, attr)}")
    lines += http.render()
    return "\n".join(lines) + "\n"


def _family(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _counter(name: str, text: str) -> list[str]:
    return _family(name, "counter", text)


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
