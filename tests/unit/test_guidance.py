"""The llguidance grammar stage on the default model's real vocabulary (no weights loaded).

The central check: on the same GBNF, every token llguidance's mask allows is one llama.cpp's
grammar sampler allows, at every step of a text; where llama.cpp allows more, it is another
split of text the grammar forces (llguidance keeps the tokenizer's own spelling).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.engine.llama import _lib
from app.engine.llama.grammar import GrammarCache
from app.engine.llama.grammar_state import GrammarState, NativeConstraint
from app.engine.llama.guidance import GuidanceConstraint, GuidanceVocab
from app.engine.llama.guidance_schema import gbnf_to_lark, guidance_schema
from app.engine.llama.sampler import Candidates
from app.engine.llama.vocab import LlamaVocabulary, load_vocabulary
from app.engine.types import Grammar, JsonRule
from app.errors import InvalidRequest
from app.schemas.tools import ToolDefinition
from app.serving.reasoning import ReasoningPlan, after_reasoning
from app.serving.structured import json_grammar
from app.serving.tool_formats import FORMATS, ToolSpec


@pytest.fixture(scope="module")
def vocabulary(model_path: Path) -> Iterator[LlamaVocabulary]:
    vocabulary = load_vocabulary(str(model_path))
    yield vocabulary
    vocabulary.close()


@pytest.fixture(scope="module")
def vocab(vocabulary: LlamaVocabulary) -> int:
    return vocabulary._vocab  # the handle the backend's grammar cache is built on


@pytest.fixture(scope="module")
def guidance(vocab: int) -> GuidanceVocab:
    return GuidanceVocab(vocab)


@pytest.fixture
def cache(vocab: int) -> Iterator[GrammarCache]:
    cache = GrammarCache(vocab)
    yield cache
    cache.close()


def _tokens(vocab: int, text: str) -> list[int]:
    return _lib.tokenize(vocab, text.encode("utf-8"), False, False)


def _native_allowed(vocab: int, gbnf: str, path: list[int]) -> Iterator[np.ndarray]:
    """llama.cpp's allowed tokens before each token of ``path`` and after the last."""
    handle = _lib.sampler_grammar(vocab, gbnf)
    assert handle is not None
    constraint = NativeConstraint(handle)
    cand = Candidates(_lib.vocab_n_tokens(vocab))
    try:
        for token in [*path, None]:
            cand.data["id"] = np.arange(cand.n_vocab, dtype=np.int32)
            cand.data["logit"] = 0.0
            constraint.mask(cand)
            yield np.isfinite(cand.data["logit"])
            if token is not None:
                constraint.accept(token)
    finally:
        constraint.close()


def _guided_allowed(guidance: GuidanceVocab, lark: str, path: list[int]) -> Iterator[np.ndarray]:
    constraint = GuidanceConstraint(guidance.compile(lark), guidance)
    for token in [*path, None]:
        yield constraint.allowed().astype(bool)
        if token is not None:
            assert constraint.allows(token)
            constraint.accept(token)


SAME_GRAMMARS = [
    # A tool-call wrapper: markers (control-token text included), free text up to a literal.
    (
        'root ::= "<tool_call>" "\\n<function=f>\\n" text "\\n</parameter>\\n" "</tool_call>"\n'
        "text ::= [^<]*",
        "<tool_call>\n<function=f>\nsome text\nwith lines\n</parameter>\n</tool_call>",
    ),
    # A reasoning block first (as ``after_reasoning`` writes it), non-ASCII text.
    (
        'root ::= ([^<] | "<" [^/])* "</think>" [ \\t\\n]* "déjà " [a-z]{1,4} " ✓"',
        "hm <b> ça</think>\n déjà vu ✓",
    ),
    # Repetitions and alternatives.
    ('root ::= ("ab" | "a" [0-9]{2,3})+ ("," [A-Z])?', "a12aba345,Q"),
    # A control token's text in a literal: the token itself (or the text spelled out).
    ('root ::= "<|im_start|>assistant\\n" [a-z ]+', "<|im_start|>assistant\nhello there"),
]


@pytest.mark.parametrize(("gbnf", "text"), SAME_GRAMMARS)
def test_llguidance_allows_what_llama_cpp_allows(
    vocab: int, guidance: GuidanceVocab, gbnf: str, text: str
) -> None:
    """Same tokens, except where the grammar forces text (llguidance then keeps only the
    tokenizer's own spelling of it: "tool", not "t" "oo" "l"; the text is the same) and
    control tokens inside free text (llguidance lets them through where a literal spells
    them only)."""
    path = _lib.tokenize(vocab, text.encode("utf-8"), False, True)  # control tokens parsed
    lark = gbnf_to_lark(gbnf, {}, guidance.markers)
    steps = zip(
        _native_allowed(vocab, gbnf, path), _guided_allowed(guidance, lark, path), strict=True
    )
    for step, (native, guided) in enumerate(steps):
        extra = np.nonzero(guided & ~native)[0]
        assert not extra.size, f"step {step}: llama.cpp refuses {extra[:5].tolist()}"
        kept = [_lib.token_piece(vocab, int(t), special=True) for t in np.nonzero(guided)[0]]
        for token in np.nonzero(native & ~guided)[0]:  # dropped: a split of forced text,
            piece = _lib.token_piece(vocab, int(token), special=True)  # or a control token in
            # free text
            forced_split = any(k.startswith(piece) or piece.startswith(k) for k in kept)
            assert forced_split or _lib.vocab_is_control(vocab, int(token)), (step, piece)
    # Every text is complete at its end: end-of-generation tokens pass there, in both.
    eog = [t for t in range(native.size) if _lib.vocab_is_eog(vocab, t)]
    assert native[eog].all()
    assert guided[eog].all()


def test_a_literal_spelling_a_control_token_takes_the_token(
    vocab: int, guidance: GuidanceVocab
) -> None:
    (start,) = _lib.tokenize(vocab, b"<|im_start|>", False, True)
    assert guidance.markers["<|im_start|>"] == start
    lark = gbnf_to_lark('root ::= "x<|im_start|>" [a-z]', {}, guidance.markers)
    constraint = GuidanceConstraint(guidance.compile(lark), guidance)
    constraint.accept(_tokens(vocab, "x")[0])
    assert constraint.allows(start)
    assert constraint.allows(_tokens(vocab, "<")[0])  # or spelled out, as llama.cpp allows


def test_end_of_generation_tokens_pass_only_where_the_grammar_is_complete(
    vocab: int, guidance: GuidanceVocab
) -> None:
    eog = [t for t in range(_lib.vocab_n_tokens(vocab)) if _lib.vocab_is_eog(vocab, t)]
    constraint = GuidanceConstraint(
        guidance.compile(gbnf_to_lark('root ::= "ab"', {}, {})), guidance
    )
    assert set(eog) == guidance.eog
    assert not any(constraint.allows(t) for t in eog)
    for token in _tokens(vocab, "ab"):
        constraint.accept(token)
    assert all(constraint.allows(t) for t in eog)


def test_allows_agrees_with_the_mask_over_the_whole_vocabulary(
    vocab: int, guidance: GuidanceVocab
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 50}}}
    lark = gbnf_to_lark("root ::= answer", {"answer": json.dumps(schema)}, {})
    constraint = GuidanceConstraint(guidance.compile(lark), guidance)
    for token in [None, *_tokens(vocab, '{"n": 4')]:
        if token is not None:
            constraint.accept(token)
        allowed = constraint.allowed()
        asked = np.array([constraint.allows(t) for t in range(allowed.size)])
        assert (asked == allowed.astype(bool)).all()


def test_mask_sets_disallowed_logits_to_minus_infinity(vocab: int, guidance: GuidanceVocab) -> None:
    constraint = GuidanceConstraint(
        guidance.compile(gbnf_to_lark('root ::= "{"', {}, {})), guidance
    )
    cand = Candidates(_lib.vocab_n_tokens(vocab))
    cand.data["id"] = np.arange(cand.n_vocab, dtype=np.int32)
    cand.data["logit"] = 1.0
    constraint.mask(cand)
    finite = np.nonzero(np.isfinite(cand.data["logit"]))[0]
    assert [_lib.token_piece(vocab, int(t)) for t in finite] == [b"{"]


ISSUE_SCHEMAS: list[tuple[dict[str, Any], str, str]] = [
    ({"type": "integer", "minimum": 18, "maximum": 99}, "42", "100"),
    ({"type": "integer", "exclusiveMinimum": 0}, "7", "0"),
    ({"type": "number", "minimum": 0.5}, "0.75", "0.4"),
    ({"type": "integer", "multipleOf": 5}, "35", "12"),
    ({"type": "string", "format": "email"}, '"ann@example.com"', '"http://example.com"'),
    (
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]},
            ]
        },
        '{"a": "x", "b": 10}',
        '{"a": "x"}',
    ),
    (
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 5},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
            },
            "required": ["name", "age"],
        },
        '{"age": 30, "name": "Ann"}',  # serving's canonical schema sorts the keys
        '{"age": 30, "name": "Annabel"}',
    ),
    (
        {
            "$defs": {
                "t": {
                    "type": "object",
                    "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/t"}}},
                }
            },
            "$ref": "#/$defs/t",
        },
        '{"kids": [{"kids": []}]}',
        '{"kids": [{"other": 1}]}',
    ),
]


def _walk(constraint: Any, vocab: int, text: str) -> bool:
    """Whether the constraint takes every token of ``text`` (taking them)."""
    for token in _tokens(vocab, text):
        if not constraint.allows(token):
            return False
        constraint.accept(token)
    return True


def _takes(constraint: Any, vocab: int, text: str) -> bool:
    """Whether ``text`` is a whole reply: every token, then an end-of-generation token."""
    eog = _lib.vocab_eos(vocab)
    return _walk(constraint, vocab, text) and bool(constraint.allows(eog))


@pytest.mark.parametrize(("schema", "good", "bad"), ISSUE_SCHEMAS)
def test_issue_schemas_go_to_llguidance_and_are_enforced(
    cache: GrammarCache, vocab: int, schema: dict[str, Any], good: str, bad: str
) -> None:
    grammar = json_grammar(schema, param="response_format")
    assert isinstance(cache.new_constraint(grammar), GuidanceConstraint)
    assert _takes(cache.new_constraint(grammar), vocab, good)
    assert not _takes(cache.new_constraint(grammar), vocab, bad)


def test_objects_take_no_other_keys_and_at_most_one_space(vocab: int, cache: GrammarCache) -> None:
    grammar = json_grammar({"type": "object", "properties": {"a": {"type": "integer"}}}, param="x")
    assert _takes(cache.new_constraint(grammar), vocab, '{"a": 1}')
    assert not _takes(cache.new_constraint(grammar), vocab, '{"a": 1, "b": 2}')
    assert not _takes(cache.new_constraint(grammar), vocab, '{\n  "a": 1}')
    assert guidance_schema('{"allOf": [{"properties": {}}]}') == {
        "allOf": [{"properties": {}}],
        "x-guidance": {"whitespace_pattern": " ?"},
    }


@pytest.mark.parametrize(
    ("schema", "finished", "runaway"),
    [
        ({"type": "integer", "exclusiveMinimum": 0}, "9" * 16, "9" * 17),
        ({"type": "integer"}, "-" + "9" * 16, "-" + "9" * 17),
        ({"type": "number", "minimum": 0.5}, "0.987654321", "0.5" + "1" * 9),
        ({"type": "string", "format": "time"}, '"12:00:00.123456Z"', '"12:00:00.1234567890123Z"'),
        ({"type": "string", "format": "email"}, '"ada@example.com"', '"' + "a" * 60 + '@b.co"'),
    ],
)
def test_numbers_and_formats_are_bounded_so_a_small_model_finishes(
    vocab: int, cache: GrammarCache, schema: dict[str, Any], finished: str, runaway: str
) -> None:
    grammar = json_grammar(schema, param="response_format")
    assert _takes(cache.new_constraint(grammar), vocab, finished)
    assert not _takes(cache.new_constraint(grammar), vocab, runaway)


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("email", "ada.l@example.co.uk", "n/com/x@n"),  # llguidance's own email takes it
        ("date", "2024-02-28", "2024-02-30"),
        ("date-time", "2024-01-31T23:59:59.5+01:00", "2024-01-31T24:00:00Z"),
        ("uuid", "123e4567-e89b-12d3-a456-426614174000", "123e4567"),
        ("ipv4", "192.168.0.1", "192.168.0.01"),
        ("hostname", "api.example.com", "-bad.example"),
    ],
)
def test_string_formats_are_ours(
    vocab: int, cache: GrammarCache, fmt: str, good: str, bad: str
) -> None:
    grammar = json_grammar({"type": "string", "format": fmt}, param="response_format")
    assert isinstance(cache.new_constraint(grammar), GuidanceConstraint)
    assert _takes(cache.new_constraint(grammar), vocab, json.dumps(good))
    assert not _takes(cache.new_constraint(grammar), vocab, json.dumps(bad))


def test_what_llguidance_refuses_falls_back_to_llama_cpp(vocab: int, cache: GrammarCache) -> None:
    unique = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    grammar = json_grammar(unique, param="response_format")
    constraint = cache.new_constraint(grammar)
    assert isinstance(constraint, NativeConstraint)
    assert _takes(constraint, vocab, "[1, 2]")
    constraint.close()
    raw = Grammar('root ::= "yes" | "no"', param="grammar")  # raw GBNF: always llama.cpp
    assert isinstance(cache.new_constraint(raw), NativeConstraint)
    with pytest.raises(InvalidRequest):
        cache.check(Grammar("root ::= answer", (JsonRule("answer", '{"type": "nope"}'),)))


WEATHER = ToolDefinition.model_validate(
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                },
                "required": ["city", "days"],
            },
        },
    }
)


ARGS = '{"city": "Paris", "days": 3}'


def _ds(name: str) -> str:
    """A DeepSeek marker such as ``tool calls begin`` (full-width bars, lower blocks)."""
    return "<\uff5ctool\u2581" + name.replace("_", "\u2581") + "\uff5c>"


CALLS = {  # one call of get_weather as each format writes it
    "qwen3-coder": "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
    "hermes": f'<tool_call>\n{{"name": "get_weather", "arguments": {ARGS}}}\n</tool_call>',
    "generic": f'<tool_call>\n{{"name": "get_weather", "arguments": {ARGS}}}\n</tool_call>',
    "mistral-args": f"[TOOL_CALLS]get_weather[ARGS]{ARGS}",
    "mistral": f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {ARGS}}}]',
    "deepseek": f"{_ds('calls_begin')}{_ds('call_begin')}function{_ds('sep')}get_weather\n"
    f"```json\n{ARGS}\n```{_ds('call_end')}{_ds('calls_end')}",
    "deepseek-v3.1": f"{_ds('calls_begin')}{_ds('call_begin')}get_weather{_ds('sep')}"
    f"{ARGS}{_ds('call_end')}{_ds('calls_end')}",
    "harmony": f"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{ARGS}",
    "llama3": f'{{"name": "get_weather", "parameters": {ARGS}}}',
}


def test_every_tool_format_has_a_sample_call() -> None:
    assert set(CALLS) == set(FORMATS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_tool_format_s_forced_call_goes_through_llguidance(
    vocab: int, cache: GrammarCache, name: str
) -> None:
    spec = ToolSpec((WEATHER,), forced=True, parallel=False)
    grammar = FORMATS[name]().bind(spec).grammar(spec)
    assert grammar is not None
    text = CALLS[name]
    thinking = after_reasoning(grammar, ReasoningPlan(("<think>", "</think>"), True))
    for built, reply in ((grammar, text), (thinking, "hm, <b>?</think>\n" + text)):
        constraint = cache.new_constraint(built)
        assert isinstance(constraint, GuidanceConstraint)
        assert _takes(constraint, vocab, reply), reply
    assert not _takes(cache.new_constraint(grammar), vocab, text.replace("3", "9"))  # days <= 7


def test_a_lazy_tool_grammar_engages_on_its_trigger(vocab: int, cache: GrammarCache) -> None:
    spec = ToolSpec((WEATHER,), forced=False, parallel=False)
    grammar = FORMATS["hermes"]().grammar(spec)
    assert grammar is not None
    assert grammar.trigger == "<tool_call>"
    state = GrammarState(
        lambda: cache.new_constraint(grammar),
        grammar.trigger,
        lambda t: _lib.token_piece(vocab, t, special=True),
        lambda text: _lib.tokenize(vocab, text, False),
    )
    for token in _tokens(vocab, "Let me check. "):
        state.accept(token)
    assert not state.active
    for token in _tokens(vocab, '<tool_call>\n{"na'):
        state.accept(token)
    assert state.active
    assert isinstance(state.constraint, GuidanceConstraint)
    assert _walk(state.constraint, vocab, 'me": "get_weather", "arguments": {"city": "Oslo", ')
    state.close()
