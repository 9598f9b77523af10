"""The nullable-repetition product of a GBNF grammar, counted before llama.cpp parses it.

A repetition of something that can match nothing (``("a"?){0,100}``) is cheap to parse and
ruinous to use: llama.cpp writes ``x{0,n}`` as n nested optional copies of ``x``, and when
``x`` may be empty a run of characters can be spread over those copies in combinatorially
many ways. Its grammar sampler follows every way for every token of the vocabulary, at the
first step and at each step after: ``("a"?){0,100}`` took 3 s per step on the default model,
``([a-z]?){0,32}`` 5 s, and nesting multiplies (``(("a"?){0,20}){0,20}`` never finished).

The count: a repetition (``{m,n}``, ``?``, ``*``, ``+``) of a nullable element costs its
count (n; ``*`` and ``{m,}`` are one recursive rule in llama.cpp: their minimum, at least 1)
times the element's own width (how many skippable slots it spreads a run over, at least 1).
Nesting multiplies, a sequence adds, alternatives take the largest, through rule references
(a reference cycle counts once). Repetitions of elements that cannot be empty cost nothing
here: each copy needs a character of its own (``[a-z]{0,2000}`` is bounded elsewhere).
Linear in the grammar; syntax errors are left to llama.cpp's parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A name, ::=, a literal, a character class, a group mark, an alternative, a postfix
# operator, or a {m,n} (comments and white space are skipped).
_TOKEN = re.compile(
    r"""(?P<skip>\s+|\#[^\n]*)
    |(?P<define>::=)
    |(?P<name>[A-Za-z0-9_-]+)
    |(?P<literal>"(?:\\.|[^"\\])*")
    |(?P<cls>\[(?:\\.|[^\]\\])*\])
    |(?P<mark>[()|?*+.])
    |(?P<braces>\{\s*\d*\s*(?:,\s*\d*\s*)?\})
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass
class _Element:
    """One item of a sequence: a terminal (``empty``: the literal ``""``) or a reference to a
    rule (named, or a group's), repeated ``low`` to ``high`` times (None: no bound)."""

    ref: str | None
    empty: bool = False
    low: int = 1
    high: int | None = 1


@dataclass
class _Rules:
    """Every rule (groups are rules too) as alternatives of sequences of elements."""

    alternatives: dict[str, list[list[_Element]]] = field(default_factory=dict)
    groups: int = 0


def nullable_repetition_product(gbnf: str) -> int:
    """The grammar's largest nullable-repetition product (0 when it repeats nothing that
    can be empty); -1 when it does not tokenize (llama.cpp's parser will say why)."""
    rules = _parse(gbnf)
    if rules is None:
        return -1
    nullable = _nullable(rules)
    return max((cost for cost, _ in _costs(rules, nullable).values()), default=0)


def _parse(gbnf: str) -> _Rules | None:
    tokens: list[tuple[str, str]] = []
    at = 0
    while at < len(gbnf):
        match = _TOKEN.match(gbnf, at)
        if match is None:
            return None
        kind = match.lastgroup or "skip"
        if kind != "skip":
            tokens.append((kind, match.group()))
        at = match.end()
    rules = _Rules()
    starts = [
        i for i in range(len(tokens) - 1) if tokens[i][0] == "name" and tokens[i + 1][0] == "define"
    ]
    for start, end in zip(starts, [*starts[1:], len(tokens)], strict=True):
        body = _Body(tokens[start + 2 : end], rules)
        rules.alternatives[tokens[start][1]] = body.alternatives()
    return rules


class _Body:
    """A rule's tokens read into alternatives; each group becomes a rule of its own."""

    def __init__(self, tokens: list[tuple[str, str]], rules: _Rules) -> None:
        self.tokens = tokens
        self.at = 0
        self.rules = rules

    def alternatives(self) -> list[list[_Element]]:
        found = [self.sequence()]
        while self.at < len(self.tokens) and self.tokens[self.at] == ("mark", "|"):
            self.at += 1
            found.append(self.sequence())
        return found

    def sequence(self) -> list[_Element]:
        items: list[_Element] = []
        while self.at < len(self.tokens):
            kind, text = self.tokens[self.at]
            if (kind, text) in (("mark", "|"), ("mark", ")")):
                break
            self.at += 1
            if kind == "mark" and text == "(":
                self.rules.groups += 1
                name = f"({self.rules.groups}"
                self.rules.alternatives[name] = self.alternatives()
                self.at += 1  # the ")" (a missing one is llama.cpp's to report)
                items.append(_Element(name))
            elif kind == "name":
                items.append(_Element(text))
            elif kind in ("literal", "cls") or text == ".":
                items.append(_Element(None, empty=text == '""'))
            elif items:  # a postfix operator on the item before it
                if (items[-1].low, items[-1].high) != (1, 1):  # x?{3}: repeats the x? rule
                    self.rules.groups += 1
                    name = f"({self.rules.groups}"
                    self.rules.alternatives[name] = [[items[-1]]]
                    items[-1] = _Element(name)
                _repeat(items[-1], text)
        return items


def _repeat(item: _Element, op: str) -> None:
    """Apply a postfix operator to an item not repeated yet."""
    if op == "?":
        low, high = 0, 1
    elif op == "*":
        low, high = 0, None
    elif op == "+":
        low, high = 1, None
    else:
        parts = [part.strip() for part in op[1:-1].split(",")]
        low = int(parts[0]) if parts[0] else 0
        high = int(parts[-1]) if parts[-1] else None
        if len(parts) == 1:
            high = low
    item.low, item.high = low, high


def _nullable(rules: _Rules) -> set[str]:
    """The rules that can match nothing (a worklist, linear in the grammar)."""
    waiting: dict[str, list[tuple[str, int]]] = {}
    missing: dict[tuple[str, int], int] = {}
    found: set[str] = set()
    queue: list[str] = []
    for name, alternatives in rules.alternatives.items():
        for index, sequence in enumerate(alternatives):
            needs = [e.ref for e in sequence if e.low > 0 and not e.empty]
            if any(ref is None for ref in needs):
                continue  # a terminal that must match: never empty
            missing[(name, index)] = len(needs)
            for ref in needs:
                waiting.setdefault(str(ref), []).append((name, index))
            if not needs and name not in found:
                found.add(name)
                queue.append(name)
    while queue:
        for key in waiting.get(queue.pop(), []):
            missing[key] -= 1
            if missing[key] == 0 and key[0] not in found:
                found.add(key[0])
                queue.append(key[0])
    return found


def _costs(rules: _Rules, nullable: set[str]) -> dict[str, tuple[int, int]]:
    """(cost, width) of every rule, children first (an explicit stack: reference chains may
    be long); a reference back into a rule being counted counts nothing."""
    done: dict[str, tuple[int, int]] = {}
    active: set[str] = set()
    for root in rules.alternatives:
        stack = [root]
        while stack:
            name = stack[-1]
            if name in done:
                stack.pop()
                continue
            if name not in active:
                active.add(name)
                refs = {e.ref for seq in rules.alternatives[name] for e in seq if e.ref}
                stack.extend(
                    r for r in refs if r in rules.alternatives and r not in done and r not in active
                )
                continue
            stack.pop()
            active.discard(name)
            done[name] = _rule_cost(rules.alternatives[name], done, nullable)
    return done


def _rule_cost(
    alternatives: list[list[_Element]], done: dict[str, tuple[int, int]], nullable: set[str]
) -> tuple[int, int]:
    cost = width = 0
    for sequence in alternatives:
        seq_cost = seq_width = 0
        all_empty = True
        for element in sequence:
            inner_cost, inner_width = done.get(element.ref or "", (0, 0))
            empty = element.empty if element.ref is None else element.ref in nullable
            if empty and (element.low, element.high) != (1, 1):
                count = element.high if element.high is not None else max(element.low, 1)
                inner_width = count * max(inner_width, 1)
                inner_cost = max(inner_cost, inner_width)
            elif element.low == 0:  # x? or x{0,n} of an x that cannot be empty: one slot
                inner_width, empty = 1, True
            seq_cost += inner_cost
            seq_width += inner_width if empty else 0
            all_empty = all_empty and empty
        cost = max(cost, seq_cost)
        width = max(width, seq_width if all_empty else 0)
    return cost, width
