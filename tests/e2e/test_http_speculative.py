"""``--speculative ngram`` through the CLI server, with the engine in its worker process:
the setting reaches the worker, the draft counters come back to /metrics, and a reply is
the same with ``speculative: false``."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.e2e.test_engine_speculative import STORY
from tests.support.server import real_model_env, running_server


def test_ngram_drafts_are_counted_in_metrics_and_change_no_reply(model_path: Path) -> None:
    env = real_model_env(
        model_path, parallel="2", speculative="ngram", draft_min_accept="0", cache_ram="0"
    )
    body = {
        "messages": [{"role": "user", "content": f"Repeat this story exactly:\n\n{STORY}"}],
        "max_tokens": 96,
        "temperature": 0,
    }
    with running_server(env, cli=True) as server:
        url = server.base_url
        spec = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300).json()
        plain = httpx.post(
            f"{url}/v1/chat/completions", json={**body, "speculative": False}, timeout=300
        ).json()
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
    assert spec["choices"][0]["message"] == plain["choices"][0]["message"]
    drafted = re.search(r'^cria_spec_draft_tokens_total\{method="ngram"\} (\S+)$', metrics, re.M)
    assert drafted is not None
    assert float(drafted.group(1)) > 0
    assert 'cria_spec_accepted_tokens_total{method="ngram"}' in metrics
    assert 'cria_spec_acceptance_rate{method="ngram"}' in metrics
