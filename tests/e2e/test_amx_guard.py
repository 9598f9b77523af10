"""The AMX guard: a default load decodes without crashing, on this host and on faked ones.

llama.cpp's AMX matmul crashes on the first decode on some AMX CPUs (llama.cpp #20824; on an
AMX host the process dies with SIGILL when the guard is forced off). The child runs in a
subprocess so a crash fails this test instead of killing pytest.

The load runs three ways: with this host's real CPU facts (whatever it is), and with the
facts faked as an Intel host with AMX and as an AMD host without it (the child replaces the
loader's cpuinfo reader). Faking AMD on a real AMX host is safe: a build that has AMX kernels
keeps the guard on for that reason alone, and a build without them cannot take the AMX path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.engine.llama.cpu import AMX_FLAGS, read_cpu_facts
from tests.support.cpuinfo import AMD_EPYC, INTEL_AMX, FakeHost

REPO_ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
from app.engine.backend import BatchToken
from app.engine.llama import _lib, load_backend, loader
from app.engine.llama.cpu import parse_cpuinfo
from app.engine.types import EngineConfig, SamplingParams

if sys.argv[2]:  # fake this host's CPU facts
    loader.read_cpu_facts = lambda: parse_cpuinfo(sys.argv[2])
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
                  "backend": offload.backend, "device": offload.device_name,
                  "build_has_amx": _lib.build_has_amx()}))
"""


def cpu_reports_amx() -> bool:
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    return bool(flags & AMX_FLAGS)


def load_and_decode(model_path: Path, cpuinfo: str) -> dict[str, object]:
    """Run the child; ``cpuinfo`` '' keeps the host's real facts."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_path), cpuinfo],
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
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    tokens = result["tokens"]
    assert isinstance(tokens, list)
    assert [len(t) for t in tokens] == [16, 16]
    assert tokens[0] == tokens[1]  # same prompt, greedy: same continuation in one batch
    if result["amx_guard"]:
        assert "AMX guard on" in str(result["reason"])
    return result


def test_default_load_on_this_host_decodes_without_crashing(model_path: Path) -> None:
    result = load_and_decode(model_path, "")
    assert read_cpu_facts().has_amx is cpu_reports_amx()  # detection agrees with cpuinfo
    if cpu_reports_amx() or result["build_has_amx"]:
        assert result["amx_guard"] is True


@pytest.mark.parametrize("host", [INTEL_AMX, AMD_EPYC], ids=lambda h: h.id)
def test_load_with_faked_cpu_facts(model_path: Path, host: FakeHost) -> None:
    result = load_and_decode(model_path, host.cpuinfo)
    if host.amx_flags:
        assert result["amx_guard"] is True
        assert "the CPU reports Intel AMX" in str(result["reason"])
    else:  # no AMX on the CPU: the guard is on only if the build has AMX kernels
        assert result["amx_guard"] is result["build_has_amx"]
    if result["backend"] == "cpu":
        assert result["device"] == host.name  # the reported CPU is the (faked) one
