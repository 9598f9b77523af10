"""A non-recursive GBNF grammar as a Python regular expression, to test what it accepts.

Tests use it to check converted grammars against example values without a model: each rule
is inlined where it is used (a recursive grammar is refused). Only the GBNF that our
converter writes is understood: literals, character classes, groups, rule names, ``|`` and
the ``? * + {m,n}`` operators.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r'\s+|"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|[A-Za-z0-9-]+|\{[0-9,]*\}|[()|?*+.]'
)


def rules_of(gbnf: str) -> dict[str, str]:
    """``name ::= body`` lines as a dict (one rule per line, as our converter writes them)."""
    found: dict[str, str] = {}
    for line in gbnf.splitlines():
        if "::=" in line and not line.lstrip().startswith("#"):
            name, body = line.split("::=", 1)
            found[name.strip()] = body.strip()
    return found


def to_regex(gbnf: str, start: str = "root", *, unroll: int = 0) -> re.Pattern[str]:
    """The language of rule ``start`` as a compiled, fully anchored regex.

    A recursive grammar is refused, unless ``unroll`` > 0: then each rule may recur that
    many times (the regex matches the grammar's strings that need no deeper recursion).
    """
    rules = rules_of(gbnf)
    return re.compile("(?:" + _body(rules, start, (), unroll) + r")\Z", re.DOTALL)


def _body(rules: dict[str, str], name: str, seen: tuple[str, ...], unroll: int) -> str:
    if seen.count(name) > unroll:
        if not unroll:
            raise ValueError(f"recursive rule {name}")
        return "(?!)"  # deeper than unrolled: matches nothing
    out: list[str] = []
    pos, text = 0, rules[name]
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"cannot read {text[pos:]!r}")
        token, pos = match.group(0), match.end()
        if not token.isspace():
            out.append(_piece(token) or "(?:" + _body(rules, token, (*seen, name), unroll) + ")")
    return "".join(out)


def _piece(token: str) -> str | None:
    """The regex of a token that is not a rule name (None for a rule name)."""
    if token.startswith('"'):
        return "(?:" + re.escape(_unescape(token[1:-1])) + ")"
    if token.startswith("["):
        return _char_class(token)
    if token == "(":
        return "(?:"
    if token in ").|?*+" or token.startswith("{"):
        return token
    return None


def _unescape(text: str) -> str:
    return re.sub(
        r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)",
        lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) > 1 else _simple(m.group(1)),
        text,
    )


def _simple(char: str) -> str:
    return {"n": "\n", "r": "\r", "t": "\t"}.get(char, char)


def _char_class(token: str) -> str:
    inner = token[1:-1]
    negate = inner.startswith("^")
    inner = inner[1:] if negate else inner
    chars = _unescape(inner.replace("\\-", "\x00HYPHEN\x00"))
    body = "".join(
        "\\-" if part == "\x00HYPHEN\x00" else "".join(_class_char(c) for c in part)
        for part in re.split("(\x00HYPHEN\x00)", chars)
    )
    return "[" + ("^" if negate else "") + body + "]"


def _class_char(char: str) -> str:
    return "\\" + char if char in "\\]^[" else char
