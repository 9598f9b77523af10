"""Each family's call syntax parsed out of recorded replies, in any chunking, whole or streamed.

The replies are the shapes the families' model cards and llama.cpp's chat tests show.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from app.serving.tool_formats import CallDelta, CallSplitter, ParsedCall, ToolFormat, choose_format
from app.serving.tool_formats.qwen3_coder import Qwen3CoderFormat

TEMPLATES = Path(__file__).parents[1] / "fixtures" / "templates"
NAMES = frozenset({"get_weather", "get_time"})
DS_CALLS, DS_CALL, DS_END, DS_CALLS_END, DS_SEP = (
    "<\uff5ctool\u2581calls\u2581begin\uff5c>",
    "<\uff5ctool\u2581call\u2581begin\uff5c>",
    "<\uff5ctool\u2581call\u2581end\uff5c>",
    "<\uff5ctool\u2581calls\u2581end\uff5c>",
    "<\uff5ctool\u2581sep\uff5c>",
)


def _hermes(city: str) -> str:
    call = f'{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}'
    return f"<tool_call>\n{call}\n</tool_call>"


def _coder(city: str) -> str:
    return (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\n"
        f"{city}\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"
    )


def _deepseek(city: str) -> str:
    return f'{DS_CALL}function{DS_SEP}get_weather\n```json\n{{"city": "{city}"}}\n```{DS_END}'


# template file, one call (as a function of the city), how two calls are joined
FAMILIES = {
    "hermes": ("Qwen-Qwen3-0.6B", _hermes, "{}\n{}"),
    "llama3": (
        "meta-llama-Llama-3.1-8B-Instruct",
        lambda c: f'{{"name": "get_weather", "parameters": {{"city": "{c}"}}}}',
        "{}; {}",
    ),
    "mistral": (
        "mistralai-Mistral-Nemo-Instruct-2407",
        lambda c: (
            f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {{"city": "{c}"}}, '
            '"id": "a1b2c3d4e"}]'
        ),
        "{}{}",
    ),
    "mistral-args": (
        "Mistral-Small-3.2-24B-Instruct-2506",
        lambda c: f'[TOOL_CALLS]get_weather[ARGS]{{"city": "{c}"}}',
        "{}{}",
    ),
    "qwen3-coder": ("Qwen3-Coder", _coder, "{}\n{}"),
    "deepseek": (
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
        _deepseek,
        DS_CALLS + "{}{}" + DS_CALLS_END,
    ),
    "deepseek-v3.1": (
        "deepseek-ai-DeepSeek-V3.1",
        lambda c: f'{DS_CALL}get_weather{DS_SEP}{{"city": "{c}"}}{DS_END}',
        DS_CALLS + "{}{}" + DS_CALLS_END,
    ),
    "harmony": (  # after HarmonyChannels: the call text of a commentary message
        "openai-gpt-oss-120b",
        lambda c: f'to=functions.get_weather<|message|>{{"city": "{c}"}}',
        "{}{}",
    ),
}


def _format(family: str) -> ToolFormat:
    fmt = choose_format((TEMPLATES / f"{FAMILIES[family][0]}.jinja").read_text())
    assert fmt.name == family
    if isinstance(fmt, Qwen3CoderFormat):
        return Qwen3CoderFormat({"get_weather": frozenset({"city"})})
    return fmt


def _run(fmt: ToolFormat, text: str, seed: int, *, cut: bool = False) -> list[object]:
    rng = random.Random(seed)
    splitter, out, at = CallSplitter(fmt, NAMES), [], 0
    while at < len(text):
        size = rng.randint(1, 9)
        out.extend(splitter.push(text[at : at + size]))
        at += size
    return out + list(splitter.flush(cut=cut))


def _parts(out: list[object]) -> tuple[str, list[ParsedCall], list[CallDelta]]:
    text = "".join(i for i in out if isinstance(i, str))
    return (
        text,
        [i for i in out if isinstance(i, ParsedCall)],
        [i for i in out if isinstance(i, CallDelta)],
    )


def _args(call: ParsedCall) -> dict[str, object]:
    data = json.loads(call.arguments)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", range(6))
def test_one_call_whole_and_streamed(family: str, seed: int) -> None:
    fmt = _format(family)
    text, calls, deltas = _parts(_run(fmt, FAMILIES[family][1]("Paris"), seed))
    assert text == ""
    assert [c.name for c in calls] == ["get_weather"]
    assert _args(calls[0])["city"] == "Paris"
    if deltas:  # streamed pieces: the name first, then arguments adding up to the call's
        assert deltas[0].arguments == ""
        assert deltas[0].name == "get_weather"
        assert {d.id for d in deltas} == {calls[0].id}
        assert "".join(d.arguments for d in deltas) == calls[0].arguments


@pytest.mark.parametrize("family", FAMILIES)
def test_parallel_calls(family: str) -> None:
    _, one, joined = FAMILIES[family]
    fmt = _format(family)
    for seed in range(4):
        _, calls, _ = _parts(_run(fmt, joined.format(one("Paris"), one("Rome")), seed))
        assert [_args(c)["city"] for c in calls] == ["Paris", "Rome"]
        assert len({c.id for c in calls}) == 2


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "llama3"])
def test_call_after_text(family: str) -> None:
    fmt = _format(family)
    for seed in range(4):
        text, calls, _ = _parts(_run(fmt, "Let me check.\n" + FAMILIES[family][1]("Oslo"), seed))
        assert text == "Let me check."
        assert _args(calls[0])["city"] == "Oslo"


def test_llama3_python_tag_opens_a_call() -> None:
    fmt = _format("llama3")
    reply = '<|python_tag|>{"name": "get_time", "parameters": {}}'
    _, calls, _ = _parts(_run(fmt, reply, 1))
    assert [(c.name, c.arguments) for c in calls] == [("get_time", "{}")]


@pytest.mark.parametrize("family", FAMILIES)
def test_malformed_or_unknown_calls_stay_text(family: str) -> None:
    fmt = _format(family)
    reply = FAMILIES[family][1]("Paris").replace("get_weather", "rm_rf")
    for seed in range(3):
        text, calls, _ = _parts(_run(fmt, reply, seed))
        assert calls == []
        assert text == reply.replace(DS_CALLS, "").replace(DS_CALLS_END, "")


@pytest.mark.parametrize("family", FAMILIES)
def test_an_unclosed_call_at_the_token_cap_is_not_content(family: str) -> None:
    fmt = _format(family)
    reply = FAMILIES[family][1]("Paris")
    cut = "Sure. " + reply[: len(reply) * 2 // 3]
    text, calls, _ = _parts(_run(fmt, cut, 2, cut=True))
    assert text == "Sure."
    assert calls == []


def test_qwen3_coder_reads_values_by_schema_type() -> None:
    fmt = _format("qwen3-coder")
    _, calls, _ = _parts(_run(fmt, _coder("1234"), 0))
    assert _args(calls[0]) == {"city": "1234", "days": 3}


def test_control_tokens_are_shown_only_when_asked() -> None:
    from app.engine.output import SequenceOutput, TokenTable
    from app.engine.types import SamplingParams
    from tests.support.fake_backend import BOS, FakeBackend

    table = TokenTable(FakeBackend())
    texts = []
    for special in (False, True):
        output = SequenceOutput("r", SamplingParams(special_text=special), table, n_ctx=64)
        event, _ = output.on_token(BOS, n_generated=1, n_past=1, logprob=None)
        texts.append(event.text if event else None)
    assert texts == ["", "<s>"]  # a control token: its marker text only with special_text
