"""/proc/cpuinfo texts of the two kinds of x86-64 hosts we run on, for faking the CPU facts.

Tests that care about the CPU (the AMX guard, the CPU name the server reports) run with both,
so the suite's result never depends on the machine that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FakeHost:
    """A host's cpuinfo text and what the server should make of it."""

    id: str
    cpuinfo: str
    name: str
    amx_flags: frozenset[str]


INTEL_AMX = FakeHost(
    id="intel-amx",
    cpuinfo=(
        "processor\t: 0\nvendor_id\t: GenuineIntel\n"
        "model name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu vme avx512f avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu vme\n"
    ),
    name="Intel(R) Xeon(R) Platinum 8480+",
    amx_flags=frozenset({"amx_bf16", "amx_tile", "amx_int8"}),
)
AMD_EPYC = FakeHost(
    id="amd-epyc",
    cpuinfo=(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\n"
        "model name\t: AMD EPYC 7763 64-Core Processor\n"
        "flags\t\t: fpu vme avx2 avx512f avx512_bf16 sha_ni\n"
    ),
    name="AMD EPYC 7763 64-Core Processor",
    amx_flags=frozenset(),
)
FAKE_HOSTS = (INTEL_AMX, AMD_EPYC)
