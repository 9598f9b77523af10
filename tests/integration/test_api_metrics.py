"""``GET /metrics``: Prometheus text with engine state, slots, queue, tokens and HTTP counts."""

from __future__ import annotations

import re

from app.engine.types import OffloadInfo
from tests.support.api import app_client
from tests.support.fake_engine import FakeEngine

USER = [{"role": "user", "content": "Hello"}]


def samples(text: str) -> dict[str, float]:
    """Parse exposition lines ``name{labels} value`` into a dict (comments skipped)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_metrics_count_requests_tokens_and_report_the_engine() -> None:
    async with app_client(FakeEngine(n_slots=3, max_queue=5)) as (client, _):
        ok = await client.post("/v1/chat/completions", json={"messages": USER})
        bad = await client.post("/v1/chat/completions", json={"messages": []})
        response = await client.get("/metrics")
    assert ok.status_code == 200
    assert bad.status_code == 400
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = samples(response.text)
    assert values['cria_engine_state{state="ready"}'] == 1
    assert values['cria_engine_state{state="loading"}'] == 0
    assert values["cria_slots_total"] == 3
    assert values["cria_slots_busy"] == 0
    assert values["cria_queue_max"] == 5
    assert values["cria_requests_total"] == 1
    assert values["cria_generated_tokens_total"] == ok.json()["usage"]["completion_tokens"]
    route = "/{api_version}/chat/completions"  # the route template: bounded label values
    assert values[f'cria_http_requests_total{{method="POST",route="{route}",status="200"}}'] == 1
    assert values[f'cria_http_requests_total{{method="POST",route="{route}",status="400"}}'] == 1
    assert values[f'cria_http_request_duration_seconds_count{{route="{route}"}}'] == 2
    assert values["cria_http_completion_tokens_total"] == ok.json()["usage"]["completion_tokens"]
    # Every sample line belongs to a family declared with HELP and TYPE.
    declared = set(re.findall(r"^# TYPE (\S+) ", response.text, flags=re.M))
    for name in values:
        family = re.sub(r"(_bucket|_sum|_count)$", "", name.split("{")[0])
        assert family in declared or name.split("{")[0] in declared, name


async def test_metrics_while_loading_and_behind_the_api_key() -> None:
    engine = FakeEngine(start_delay_s=30)
    async with app_client(engine, wait_ready=False, api_key=["secret-key-123"]) as (client, _):
        denied = await client.get("/metrics")
        loading = await client.get("/metrics", headers={"Authorization": "Bearer secret-key-123"})
    assert denied.status_code == 401
    assert loading.status_code == 200
    assert samples(loading.text)['cria_engine_state{state="loading"}'] == 1


async def test_process_metrics_and_one_registry_per_app() -> None:
    """Two apps in one process count apart (each has its own registry); process_* is there."""
    async with app_client(FakeEngine()) as (first, _), app_client(FakeEngine()) as (second, _):
        await first.post("/v1/chat/completions", json={"messages": USER})
        one = samples((await first.get("/metrics")).text)
        other = samples((await second.get("/metrics")).text)
    route = "/{api_version}/chat/completions"
    key = f'cria_http_requests_total{{method="POST",route="{route}",status="200"}}'
    assert one[key] == 1
    assert key not in other
    assert one["process_resident_memory_bytes"] > 0
    assert one["process_cpu_seconds_total"] >= 0


async def test_offload_gauges_on_the_cpu() -> None:
    async with app_client(FakeEngine()) as (client, _):
        values = samples((await client.get("/metrics")).text)
    info = 'cria_offload_info{backend="cpu",device="Fake CPU",requested="auto"}'
    assert values[info] == 1
    assert values["cria_offload_gpu_layers"] == 0
    assert values["cria_offload_layers_total"] == 30
    assert values["cria_offload_fallback"] == 1
    assert not [name for name in values if name.startswith("cria_gpu_memory")]


async def test_offload_gauges_on_a_gpu() -> None:
    gib = 1024**3
    offload = OffloadInfo(
        backend="cuda",
        device_name="NVIDIA H100 80GB HBM3",
        layers_offloaded=15,
        layers_total=31,
        requested="all",
        reason="loading 31 layers failed; using 15 layers",
        fallback=True,
        device_total_bytes=80 * gib,
        device_free_bytes=3 * gib,
    )
    async with app_client(FakeEngine(offload=offload)) as (client, _):
        values = samples((await client.get("/metrics")).text)
    device = 'device="NVIDIA H100 80GB HBM3"'
    assert values[f'cria_offload_info{{backend="cuda",{device},requested="all"}}'] == 1
    assert values["cria_offload_gpu_layers"] == 15
    assert values["cria_offload_layers_total"] == 31
    assert values["cria_offload_fallback"] == 1
    assert values[f"cria_gpu_memory_total_bytes{{{device}}}"] == 80 * gib
    assert values[f"cria_gpu_memory_free_at_load_bytes{{{device}}}"] == 3 * gib


async def test_no_offload_gauges_while_loading() -> None:
    engine = FakeEngine(start_delay_s=30)
    async with app_client(engine, wait_ready=False) as (client, _):
        values = samples((await client.get("/metrics")).text)
    assert not [name for name in values if name.startswith("cria_offload")]


async def test_host_ram_prompt_cache_counters_and_cached_tokens_in_usage() -> None:
    """The real engine on a fake model, one slot: chat A is evicted by B, then restored."""
    from app.engine.service import LlamaEngine
    from app.engine.types import EngineConfig
    from tests.support.fake_backend import FakeBackend

    backend = FakeBackend(n_slots=1, n_ctx_slot=512, n_batch=64)
    config = EngineConfig(model_path="/models/fake.gguf", n_slots=1, cache_ram_mb=1)
    engine = LlamaEngine(config, backend_factory=lambda _: backend)
    chat_a = [{"role": "user", "content": "Tell me about the sea, please, in a few words."}]
    chat_b = [{"role": "user", "content": "Something else entirely: a city at night."}]
    body = {"max_tokens": 4, "temperature": 0}
    async with app_client(engine) as (client, _):
        first = await client.post("/v1/chat/completions", json={"messages": chat_a, **body})
        await client.post("/v1/chat/completions", json={"messages": chat_b, **body})
        reply = first.json()["choices"][0]["message"]["content"]
        turn2 = [
            *chat_a,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "Go on."},
        ]
        second = await client.post("/v1/chat/completions", json={"messages": turn2, **body})
        values = samples((await client.get("/metrics")).text)
    usage = second.json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] >= first.json()["usage"]["prompt_tokens"]
    assert values["cria_prompt_cache_ram_hits_total"] == 1
    assert values["cria_prompt_cache_ram_saves_total"] >= 1
    assert (
        values["cria_prompt_cache_ram_restored_tokens_total"]
        == usage["prompt_tokens_details"]["cached_tokens"]
    )
    assert values["cria_prompt_cache_ram_capacity_bytes"] == 1024 * 1024
    assert values["cria_prompt_cache_ram_bytes"] > 0
