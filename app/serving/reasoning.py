"""Reasoning split from the answer: ``<think>...</think>`` and ``[THINK]...[/THINK]``.

DeepSeek R1, Qwen3, QwQ and SmolLM3 think between ``<think>`` tags, Magistral between
``[THINK]`` tags; the syntax is found in the chat template. A reply's reasoning is the block
it starts with (or, when the template's generation prompt already opened the block, all
text up to its close); it comes out as ``Reasoning`` pieces, the rest as content. A block
never closed (the reply hit its token cap) is all reasoning, as in llama-server.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

from app.engine.types import Grammar, SamplingParams
from app.serving.generation import Finished
from app.serving.tool_formats.base import ToolFormat
from app.serving.tool_formats.harmony import HarmonyChannels, HarmonyFormat

SYNTAXES = (("<think>", "</think>"), ("[THINK]", "[/THINK]"))
HARMONY = ("<|channel|>analysis<|message|>", "<|end|>")  # gpt-oss: the analysis channel


@dataclass(frozen=True)
class Reasoning:
    """A piece of the model's reasoning (``reasoning_content``)."""

    text: str


def reasoning_syntax(
    template: str | None, reasoning_format: str = "auto"
) -> tuple[str, str] | None:
    """(open, close) of the template's thinking block; None when it has none or it is off."""
    if reasoning_format == "none" or not template:
        return None
    if HarmonyFormat.detect(template):
        return HARMONY
    return next((pair for pair in SYNTAXES if pair[1] in template), None)


def opened_by_prompt(prompt: str, syntax: tuple[str, str]) -> bool:
    """Whether the rendered prompt ends inside an open thinking block (DeepSeek R1, QwQ)."""
    return prompt.rstrip().endswith(syntax[0])


class ReasoningSplitter:
    """Text in, ``Reasoning`` and content pieces out (partial markers held back)."""

    def __init__(self, syntax: tuple[str, str], *, inside: bool = False) -> None:
        self._open, self._close = syntax
        self._state = "inside" if inside else "start"  # start -> inside -> after
        self._buffer = ""
        self._fresh = False  # just after the block: leading whitespace is dropped

    def push(self, text: str) -> Iterator[str | Reasoning]:
        """Pieces ``text`` completes."""
        if self._state == "after":
            yield from self._after(text)
            return
        self._buffer += text
        if self._state == "start":
            head = self._buffer.lstrip()
            if head.startswith(self._open):
                self._state, self._buffer = "inside", head[len(self._open) :]
            elif not self._open.startswith(head):  # no thinking block: all content
                self._state, rest, self._buffer = "after", self._buffer, ""
                yield rest
                return
            else:
                return
        at = self._buffer.find(self._close)
        if at >= 0:
            thought, rest = self._buffer[:at], self._buffer[at + len(self._close) :].lstrip()
            self._state, self._buffer, self._fresh = "after", "", not rest
            if thought:
                yield Reasoning(thought)
            if rest:
                yield rest
            return
        keep = _partial_suffix(self._buffer, self._close)
        ready, self._buffer = (
            self._buffer[: len(self._buffer) - keep],
            self._buffer[-keep:] if keep else "",
        )
        if ready:
            yield Reasoning(ready)

    def _after(self, text: str) -> Iterator[str]:
        if self._fresh:  # the whitespace right after the block is not content
            text = text.lstrip()
            self._fresh = not text
        if text:
            yield text

    def flush(self) -> Iterator[str | Reasoning]:
        """What is left at the end."""
        rest, self._buffer = self._buffer, ""
        if rest:
            yield Reasoning(rest) if self._state == "inside" else rest


async def split_reasoning(
    stream: AsyncIterator[Any], syntax: tuple[str, str] | None, *, inside: bool = False
) -> AsyncIterator[Any]:
    """``stream`` with its reasoning as ``Reasoning`` pieces (unchanged when ``syntax`` is None).

    Content pieces that pass whole keep their logprobs (they are the engine's own items).
    """
    if syntax is None:
        async for item in stream:
            yield item
        return
    splitter = ReasoningSplitter(syntax, inside=inside)
    async for item in stream:
        if isinstance(item, Finished):
            for piece in splitter.flush():
                yield piece
            yield item
            continue
        for piece in splitter.push(item):
            yield item if piece is item else piece


async def split_harmony(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A Harmony reply as ``Reasoning`` (analysis) and content (final, calls as call text)."""
    channels = HarmonyChannels()
    async for item in stream:
        done = isinstance(item, Finished)
        pieces = list(channels.flush() if done else channels.push(item))
        for kind, text in pieces:
            yield Reasoning(text) if kind == "reasoning" else text
        if done:
            yield item


def _partial_suffix(text: str, mark: str) -> int:
    for n in range(min(len(text), len(mark) - 1), 0, -1):
        if mark.startswith(text[-n:]):
            return n
    return 0


@dataclass(frozen=True)
class ReasoningPlan:
    """How a reply's reasoning is marked, and whether the prompt already opened the block."""

    syntax: tuple[str, str]
    inside: bool

    def split(self, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """``stream`` with its reasoning as ``Reasoning`` pieces."""
        if self.syntax == HARMONY:
            return split_harmony(stream)
        return split_reasoning(stream, self.syntax, inside=self.inside)


def budgeted(
    sampling: SamplingParams, plan: ReasoningPlan | None, budget: int | None
) -> SamplingParams:
    """``sampling`` with the reasoning budget (when there is a block to close, not Harmony's)."""
    if plan is None or budget is None or plan.syntax == HARMONY:
        return sampling
    return replace(
        sampling, reasoning_budget=budget, reasoning_markers=plan.syntax, reasoning_open=plan.inside
    )


def needs_special_text(fmt: ToolFormat | None, plan: ReasoningPlan | None) -> bool:
    """Whether the reply's markers are control tokens the engine must show as text
    (Mistral's, Llama's ``<|python_tag|>``, DeepSeek's, Harmony's; ``<think>`` is plain)."""
    if fmt is not None and fmt.special_markers:
        return True
    return plan is not None and plan.syntax != SYNTAXES[0]


def plan_reasoning(prompt: str, syntax: tuple[str, str] | None) -> ReasoningPlan | None:
    """The reasoning plan for a rendered prompt (None: no reasoning to split)."""
    if syntax is None:
        return None
    return ReasoningPlan(syntax, opened_by_prompt(prompt, syntax))


def after_reasoning(grammar: Grammar, plan: ReasoningPlan | None) -> Grammar:
    """``grammar`` constraining only what follows the reasoning block (when there is one).

    The reply may start with the block (or, when the prompt opened it, must first close it);
    the grammar's own ``root`` then constrains the answer. A lazy grammar is left as it is.
    """
    if plan is None or grammar.trigger:
        return grammar
    start, end = plan.syntax
    gbnf = re.sub(r"(?m)^root(\s*::=)", r"cria-answer\1", grammar.gbnf)
    gbnf = re.sub(r"(?<![\w-])root(?![\w-])", "cria-answer", gbnf)
    think = f"cria-thought {_literal(end)} cria-ws"
    root = think if plan.inside else f"({_literal(start)} {think})?"
    rules = (
        f"root ::= {root} cria-answer\n"
        f"cria-thought ::= ([^{_char(end[0])}] | {_literal(end[0])} [^{_char(end[1])}])*\n"
        "cria-ws ::= [ \\t\\n]*\n"
    )
    return replace(grammar, gbnf=rules + gbnf)


def _literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _char(char: str) -> str:
    return {"\\": "\\\\", "]": "\\]", "^": "\\^", "-": "\\-"}.get(char, char)
