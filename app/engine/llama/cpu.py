"""Facts about the host CPU: its model name and whether it has Intel AMX.

Why AMX matters: llama.cpp's AMX matmul (``ggml_backend_amx_mul_mat``, an "extra buffer
type" of the CPU backend) segfaults on the first decode on some AMX CPUs (llama.cpp
#20824). The loader disables extra buffer types (``use_extra_bufts = False``) wherever AMX
could be used. The parsing is pure (it takes the text of /proc/cpuinfo) so it is unit-tested.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

AMX_FLAGS = frozenset({"amx_int8", "amx_tile", "amx_bf16", "amx_fp16", "amx_complex"})
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuFacts:
    """The CPU's model name and the AMX feature flags it reports."""

    name: str
    amx_flags: frozenset[str]

    @property
    def has_amx(self) -> bool:
        return bool(self.amx_flags)


def parse_cpuinfo(text: str) -> CpuFacts:
    """Read the model name and AMX flags from /proc/cpuinfo text (first processor block)."""
    name = ""
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split()) & AMX_FLAGS
        if name and flags:
            break
    return CpuFacts(name=name, amx_flags=flags)


def read_cpu_facts(path: Path = CPUINFO) -> CpuFacts:
    """CpuFacts of this machine; empty flags and ``platform.processor()`` off Linux."""
    try:
        facts = parse_cpuinfo(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        facts = CpuFacts(name="", amx_flags=frozenset())
    if not facts.name:
        facts = CpuFacts(
            name=platform.processor() or platform.machine() or "CPU", amx_flags=facts.amx_flags
        )
    return facts


def amx_guard_reason(cpu: CpuFacts, build_has_amx: bool) -> str | None:
    """Why the AMX guard is needed, or None when it is not.

    The guard is on when the CPU reports AMX (cpuinfo flags) or ggml was built with AMX
    kernels: either way llama.cpp could place weights in the AMX buffer type.
    """
    if cpu.has_amx:
        flags = ", ".join(sorted(cpu.amx_flags))
        return f"the CPU reports Intel AMX ({flags})"
    if build_has_amx:
        return "this llama.cpp build has AMX kernels"
    return None


@dataclass(frozen=True)
class AmxDecision:
    """Whether extra buffer types are disabled at load, and why."""

    guard: bool
    reason: str | None


def decide_amx_guard(cpu: CpuFacts, build_has_amx: bool, force: bool | None) -> AmxDecision:
    """The guard is on when AMX could be used, unless ``force`` says otherwise."""
    reason = amx_guard_reason(cpu, build_has_amx)
    if force is None:
        return AmxDecision(reason is not None, reason)
    if force:
        return AmxDecision(True, reason or "forced on")
    return AmxDecision(False, None)


def count_physical_cores(cpuinfo: str, allowed: int) -> int:
    """Physical cores among the CPUs this process may use, from /proc/cpuinfo text.

    llama.cpp's own tools default to physical cores: two threads on the hyperthreads of one
    core share its vector units and mostly wait on each other at ggml's barriers. Each
    ``physical id``/``core id`` pair is one core; without those fields (some VMs), every
    listed processor counts. Never more than ``allowed`` (the affinity mask: containers).
    """
    cores: set[tuple[str, str]] = set()
    processors = 0
    physical = core = ""
    for line in [*cpuinfo.splitlines(), ""]:
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:  # a blank line ends one processor block
            if physical or core:
                cores.add((physical, core))
            physical = core = ""
            continue
        if key == "processor":
            processors += 1
        elif key == "physical id":
            physical = value.strip()
        elif key == "core id":
            core = value.strip()
    found = len(cores) or processors
    return max(1, min(found, allowed)) if found else max(1, allowed)


def default_threads(path: Path = CPUINFO) -> int:
    """Decode threads when none are configured: the physical cores this process may use."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        allowed = os.cpu_count() or 1
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return allowed
    return count_physical_cores(text, allowed)
