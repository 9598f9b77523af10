"""The AMX guard: a default load decodes without crashing on this (AMX) machine.

llama.cpp's AMX matmul crashes on the first decode on some AMX CPUs (llama.cpp #20824; here
the process dies with SIGILL when the guard is forced off). The child runs in a subprocess so a
crash fails this test instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.engine.llama.cpu import AMX_FLAGS, read_cpu_facts

REPO_ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
from app.engine.backend import BatchToken
from app.engine.llama import load_backend
from app.engine.types import EngineConfig, SamplingParams

backend = load_backend(EngineConfig(model_path=sys.argv[1]))
prompt = backend.tokenize(
    "<|im_start|>user\\nHi! Who are you?<|im_end|>\\n<|im_start|>assistant\\n", add_special=True
)
n = len(prompt)
backend.decode([BatchToken(t, i, s, i == n - 1) for s in (0, 1) for i, t in enumerate(prompt)])
samplers = [backend.new_sampler(SamplingParams(temperature=0.0), 0) for _ in (0, 1)]
tokens = [[samplers[0].sample(n - 1)], [samplers[1].sample(2 * n - 1)]]
for k in range(15):
    backend.decode([BatchToken(tokens[s][-1], n + k, s, True) for s in (0, 1)])
    for s in (0, 1):
        tokens[s].append(samplers[s].sample(s))
offload = backend.info().offload
for sampler in samplers:
    sampler.close()
backend.close()
print(json.dumps({"tokens": tokens, "amx_guard": offload.amx_guard, "reason": offload.reason,
                  "backend": offload.backend}))
"""


def cpu_reports_amx() -> bool:
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    return bool(flags & AMX_FLAGS)


def test_default_load_decodes_two_sequences_without_crashing(model_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-2000:]}"
    # llama.cpp's log goes to Python logging, not stderr.
    assert "llama_model_load" not in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    tokens = result["tokens"]
    assert [len(t) for t in tokens] == [16, 16]
    assert tokens[0] == tokens[1]  # same prompt, greedy: same continuation in one batch
    assert read_cpu_facts().has_amx is cpu_reports_amx()  # detection agrees with cpuinfo
    if cpu_reports_amx():
        assert result["amx_guard"] is True
    if result["amx_guard"]:
        assert "AMX guard on" in result["reason"]
