"""Pure parts of the llama backend: cpuinfo parsing, the AMX guard decision, GGUF checks."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from app.engine.errors import ModelLoadError, ModelNotFound
from app.engine.llama.cpu import CpuFacts, decide_amx_guard, parse_cpuinfo, read_cpu_facts
from app.engine.llama.gguf import check_gguf_file

CPUINFO_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme avx512f avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme
"""

CPUINFO_PLAIN = """processor\t: 0
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu vme avx2 avx512f
"""


def test_parse_cpuinfo_finds_name_and_amx_flags() -> None:
    facts = parse_cpuinfo(CPUINFO_AMX)
    assert facts.name == "Intel(R) Xeon(R) Platinum 8480+"
    assert facts.amx_flags == {"amx_bf16", "amx_tile", "amx_int8"}
    assert facts.has_amx


def test_parse_cpuinfo_without_amx() -> None:
    facts = parse_cpuinfo(CPUINFO_PLAIN)
    assert facts.name == "AMD EPYC 7763 64-Core Processor"
    assert not facts.has_amx


def test_read_cpu_facts_agrees_with_this_machine() -> None:
    text = Path("/proc/cpuinfo").read_text()
    facts = read_cpu_facts()
    assert facts.has_amx == (" amx_int8" in text or " amx_tile" in text or " amx_bf16" in text)
    assert facts.name


def test_read_cpu_facts_without_cpuinfo(tmp_path: Path) -> None:
    facts = read_cpu_facts(tmp_path / "missing")
    assert facts.name  # falls back to platform information
    assert not facts.has_amx


AMX_CPU = CpuFacts(name="x", amx_flags=frozenset({"amx_int8"}))
PLAIN_CPU = CpuFacts(name="x", amx_flags=frozenset())


def test_amx_guard_decision() -> None:
    on = decide_amx_guard(AMX_CPU, False, None)
    assert on.guard
    assert on.reason == "the CPU reports Intel AMX (amx_int8)"
    built = decide_amx_guard(PLAIN_CPU, True, None)
    assert built.guard
    assert built.reason is not None
    assert "build has AMX" in built.reason
    assert decide_amx_guard(PLAIN_CPU, False, None).guard is False
    assert decide_amx_guard(AMX_CPU, True, False).guard is False
    assert decide_amx_guard(PLAIN_CPU, False, True).guard is True


def gguf_header(version: int = 3, n_tensors: int = 5, n_kv: int = 2) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def test_gguf_check_accepts_a_header(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_header() + b"\0" * 100)
    assert check_gguf_file(path) == 124


def test_gguf_check_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="Model file not found"):
        check_gguf_file(tmp_path / "nope.gguf")


def test_gguf_check_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a file"):
        check_gguf_file(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<html>not found</html>", "is not a GGUF model file"),
        (b"", "is not a GGUF model file"),
        (b"GGUF\x03\x00", "truncated"),
        (gguf_header(version=99), "GGUF version 99"),
        (gguf_header(n_tensors=0), "holds no tensors"),
    ],
)
def test_gguf_check_rejects_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        check_gguf_file(path)
