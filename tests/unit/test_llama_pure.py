"""Pure parts of the llama backend: cpuinfo parsing, the AMX guard decision, GGUF checks.

The CPU facts are faked both ways (an Intel host with AMX, an AMD host without), so these
tests say the same on any machine.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from app.engine.llama.cpu import CpuFacts, decide_amx_guard, parse_cpuinfo, read_cpu_facts
from app.engine.llama.grammar import repetition_problem
from app.engine.llama.offload import ModelFootprint, offload_info, plan_offload
from app.engine.types import EngineHealth
from app.serving.cria.health import health, model_card
from tests.support.cpuinfo import FAKE_HOSTS, FakeHost
from tests.support.fake_engine import fake_model_info


@pytest.mark.parametrize("host", FAKE_HOSTS, ids=lambda h: h.id)
def test_parse_cpuinfo_finds_the_name_and_amx_flags(host: FakeHost) -> None:
    facts = parse_cpuinfo(host.cpuinfo)
    assert facts.name == host.name
    assert facts.amx_flags == host.amx_flags
    assert facts.has_amx is bool(host.amx_flags)


@pytest.mark.parametrize("host", FAKE_HOSTS, ids=lambda h: h.id)
def test_read_cpu_facts_from_a_cpuinfo_file(host: FakeHost, tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(host.cpuinfo)
    assert read_cpu_facts(path) == CpuFacts(host.name, host.amx_flags)


def test_read_cpu_facts_of_this_machine_gives_a_name() -> None:
    facts = read_cpu_facts()  # whatever the host is, it has a name and an answer about AMX
    assert facts.name
    assert facts.has_amx in (True, False)


def test_read_cpu_facts_without_cpuinfo(tmp_path: Path) -> None:
    facts = read_cpu_facts(tmp_path / "missing")
    assert facts.name  # falls back to platform information
    assert not facts.has_amx


@pytest.mark.parametrize("build_has_amx", [False, True], ids=["plain-build", "amx-build"])
@pytest.mark.parametrize("host", FAKE_HOSTS, ids=lambda h: h.id)
def test_amx_guard_decision_on_each_host(host: FakeHost, build_has_amx: bool) -> None:
    decision = decide_amx_guard(parse_cpuinfo(host.cpuinfo), build_has_amx, None)
    if host.amx_flags:
        assert decision.guard
        assert decision.reason == f"the CPU reports Intel AMX ({', '.join(sorted(host.amx_flags))})"
    elif build_has_amx:
        assert decision.guard
        assert decision.reason == "this llama.cpp build has AMX kernels"
    else:
        assert (decision.guard, decision.reason) == (False, None)
    # Forcing wins either way (load_backend(amx_guard=...)).
    assert decide_amx_guard(parse_cpuinfo(host.cpuinfo), build_has_amx, False).guard is False
    assert decide_amx_guard(parse_cpuinfo(host.cpuinfo), build_has_amx, True).guard is True


@pytest.mark.parametrize("host", FAKE_HOSTS, ids=lambda h: h.id)
def test_health_and_model_card_report_the_cpu_and_the_guard(host: FakeHost) -> None:
    """cpuinfo -> guard -> offload info -> what /health and /model-card show."""
    cpu = parse_cpuinfo(host.cpuinfo)
    amx = decide_amx_guard(cpu, False, None)
    plan = plan_offload(
        "auto",
        gpu_supported=False,
        devices=[],
        footprint=ModelFootprint(0, 1000, 0),
        margin_bytes=0,
    )
    offload = offload_info(plan, cpu_name=cpu.name, amx_guard_reason=amx.reason)
    info = replace(fake_model_info(), offload=offload)
    for state in (model_card(info).offload, health(EngineHealth("ready"), None, info).offload):
        assert state is not None
        assert (state.backend, state.device, state.amx_guard) == ("cpu", host.name, amx.guard)
        assert ("AMX guard on" in state.reason) is bool(host.amx_flags)


@pytest.mark.parametrize(
    ("gbnf", "problem"),
    [
        ('root ::= "a"{5,2}', "maximum below its minimum"),  # llama.cpp loops until OOM
        ('root ::= x{ 7 , 3 }\nx ::= "b"', "maximum below its minimum"),
        ('root ::= "a"{0,1000000}', "larger than"),
        ('root ::= "a"{2000000}', "larger than"),
        ('root ::= "a"{2,5}', None),
        ('root ::= "a"{3,}', None),
        ('root ::= "a"{4}', None),
        ('root ::= "{5,2}"', None),  # inside a string literal
        ('root ::= "\\"{5,2}"', None),  # an escaped quote does not end the literal
        ("root ::= [{}5,2]", None),  # inside a character class
        ('# {5,2} in a comment\nroot ::= "a"', None),
        ('root ::= "a"{x}', None),  # not a repetition: llama.cpp's parser reports it
        ("root ::= " + "(" * 300 + '"a"' + ")" * 300, "nest deeper"),  # native stack
        ("root ::= " + "(" * 200 + '"a"' + ")" * 200, None),
        ('root ::= "((((" [(((] "a"', None),
    ],
)
def test_grammar_repetition_bounds_are_checked_before_llama_cpp(
    gbnf: str, problem: str | None
) -> None:
    found = repetition_problem(gbnf)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def _cpuinfo(pairs: list[tuple[int, int]]) -> str:
    blocks = [
        f"processor\t: {i}\nmodel name\t: X\nphysical id\t: {p}\ncore id\t\t: {c}\n"
        for i, (p, c) in enumerate(pairs)
    ]
    return "\n".join(blocks) + "\n"


def test_physical_cores_count_hyperthread_siblings_once() -> None:
    from app.engine.llama.cpu import count_physical_cores

    # 2 sockets x 2 cores x 2 threads: 8 logical CPUs, 4 cores.
    pairs = [(p, c) for p in (0, 1) for c in (0, 1) for _ in range(2)]
    assert count_physical_cores(_cpuinfo(pairs), allowed=8) == 4
    assert count_physical_cores(_cpuinfo(pairs), allowed=2) == 2  # a container's cpuset
    # A VM without topology fields: every processor is a core.
    assert count_physical_cores("processor\t: 0\n\nprocessor\t: 1\n", allowed=2) == 2
    assert count_physical_cores("", allowed=3) == 3
