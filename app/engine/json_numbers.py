"""GBNF for JSON numbers within bounds: integer ranges digit by digit, number ranges, multiples.

Pure functions over decimal strings; the schema converter (``engine/llama/schema_grammar``)
puts their output after a JSON value's ``space``. Every grammar here accepts a subset of the
JSON numbers that satisfy the bound, and most accept exactly that set:

- integer ``minimum``/``maximum``/``exclusive*``: exact (no leading zeros, no ``-0``);
- number bounds: the sign and the integer part are constrained, the fraction is free where
  that is exact, and bounded digit by digit at a boundary's integer part; exponents are left
  out (a subset). When both bounds share their integer part and both have fractions, only
  the integer part is constrained (``number_range`` says it is not exact);
- integer ``multipleOf`` k for k up to ``MAX_MODULUS``: a remainder automaton over digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

MAX_MODULUS = 100  # a divisor of 100, or any k up to MAX_AUTOMATON
MAX_AUTOMATON = 12  # the remainder automaton has about k x 16 rules (27 KB of GBNF at 12)
UNBOUNDED_DIGITS = 15  # an unbounded side allows this many digits more (int64 range)
_FREE_FRACTION = "[0-9]{1,15}"  # fraction digits are bounded too: no runaway numbers
_MORE = "[0-9]{0,15}"


@dataclass(frozen=True)
class Bound:
    """One side of a range: a value and whether it is excluded."""

    value: Decimal
    exclusive: bool = False


def bounds(schema: dict[str, object]) -> tuple[Bound | None, Bound | None]:
    """The lower and upper bounds of a numeric schema (draft 4 and 2020 spellings)."""
    low = _bound(schema, "minimum", "exclusiveMinimum", True)
    high = _bound(schema, "maximum", "exclusiveMaximum", False)
    return low, high


def _bound(schema: dict[str, object], inclusive: str, exclusive: str, lower: bool) -> Bound | None:
    found: list[Bound] = []
    if _is_number(schema.get(inclusive)):
        value = _decimal(schema[inclusive])
        found.append(Bound(value, schema.get(exclusive) is True))  # draft 4's boolean form
    if _is_number(schema.get(exclusive)):
        found.append(Bound(_decimal(schema[exclusive]), True))
    if not found:
        return None
    # The tighter bound wins; at equal values the exclusive one is tighter.
    if lower:
        return max(found, key=lambda b: (b.value, b.exclusive))
    return min(found, key=lambda b: (b.value, not b.exclusive))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _decimal(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:  # pragma: no cover - JSON numbers always parse
        raise ValueError(f"not a number: {value!r}") from exc


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding="ROUND_FLOOR"))


def _ceil(value: Decimal) -> int:
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def integer_range(low: Bound | None, high: Bound | None) -> str | None:
    """GBNF for the integers within the bounds; None when there is none."""
    lo = None if low is None else _floor(low.value) + 1 if low.exclusive else _ceil(low.value)
    hi = None if high is None else _ceil(high.value) - 1 if high.exclusive else _floor(high.value)
    if lo is not None and hi is not None and lo > hi:
        return None
    parts: list[str] = []
    if lo is None or lo < 0:  # the negatives: "-" then magnitudes in [max(1, -hi), -lo]
        top = None if lo is None else -lo
        bottom = 1 if hi is None or hi >= 0 else -hi
        parts.append(f'"-" ({natural_range(bottom, top)})')
    if hi is None or hi >= 0:
        parts.append(natural_range(max(lo or 0, 0), hi))
    return " | ".join(parts)


def natural_range(lo: int, hi: int | None) -> str:
    """GBNF for the decimal numbers lo..hi (hi None: unbounded), no leading zeros; lo >= 0."""
    if hi is None:
        longest = len(str(lo)) + UNBOUNDED_DIGITS
        return natural_range(lo, 10**longest - 1)
    alternatives: list[str] = []
    for length in range(len(str(lo)), len(str(hi)) + 1):
        first = 0 if length == 1 else 10 ** (length - 1)
        start, end = max(lo, first), min(hi, 10**length - 1)
        if start <= end:
            alternatives.extend(_same_length(str(start), str(end)))
    return " | ".join(alternatives)


def _same_length(lo: str, hi: str) -> list[str]:
    """Alternatives for the digit strings between lo and hi, both of the same length."""
    if not lo:
        return [""]
    rest = len(lo) - 1
    if lo[0] == hi[0]:
        return [_seq(f'"{lo[0]}"', tail) for tail in _same_length(lo[1:], hi[1:])]
    if lo[1:] == "0" * rest and hi[1:] == "9" * rest:
        return [_seq(_digits(lo[0], hi[0]), _any_digits(rest))]
    found: list[str] = []
    low_first = int(lo[0])
    if lo[1:] == "0" * rest:
        low_first -= 1  # the whole lo[0] block goes into the middle
    else:
        found += [_seq(f'"{lo[0]}"', t) for t in _same_length(lo[1:], "9" * rest)]
    high_last = int(hi[0])
    if hi[1:] == "9" * rest:
        high_last += 1
    if low_first + 1 <= high_last - 1:
        found.append(_seq(_digits(str(low_first + 1), str(high_last - 1)), _any_digits(rest)))
    if hi[1:] != "9" * rest:
        found += [_seq(f'"{hi[0]}"', t) for t in _same_length("0" * rest, hi[1:])]
    return found


def _seq(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _digits(first: str, last: str) -> str:
    return f'"{first}"' if first == last else f"[{first}-{last}]"


def _any_digits(count: int) -> str:
    return "" if count == 0 else "[0-9]" if count == 1 else f"[0-9]{{{count}}}"


def fraction(digits: str, op: str) -> str | None:
    """GBNF for the non-empty fraction digit strings f with 0.f ``op`` 0.``digits``
    (``ge``, ``gt``, ``le``, ``lt``; ``digits`` without trailing zeros); None if none."""
    if not digits:
        return {"ge": _FREE_FRACTION, "gt": f'"0"{{0,15}} [1-9] {_MORE}', "le": '"0"{1,15}'}.get(op)
    first, rest = int(digits[0]), digits[1:]
    found: list[str] = []
    inner = fraction(rest, op)
    # After an equal first digit, nothing more is fine when 0 op 0.rest.
    empty_ok = op in ("ge", "le") if not rest else op in ("le", "lt")
    if inner is not None:
        found.append(f'"{first}" ({inner})' + ("?" if empty_ok else ""))
    elif empty_ok:
        found.append(f'"{first}"')
    if op in ("ge", "gt") and first < 9:
        found.append(f"{_digits(str(first + 1), '9')} {_MORE}")
    if op in ("le", "lt") and first > 0:
        found.append(f"{_digits('0', str(first - 1))} {_MORE}")
    return " | ".join(found) if found else None


def number_range(low: Bound | None, high: Bound | None) -> tuple[str | None, bool]:
    """GBNF for the JSON numbers within the bounds (no exponent) and whether it is exact."""
    parts: list[str] = []
    exact = True
    if high is None or high.value >= 0:  # x >= 0
        zero = Bound(Decimal(0))
        bottom = low if low is not None and low.value >= 0 else zero
        found, ok = _nonnegative(bottom, high)
        exact = exact and ok
        if found:
            parts.append(found)
    if low is None or low.value < 0:  # x < 0: "-" then y = -x in (0, -low]
        top = None if low is None else Bound(-low.value, low.exclusive)
        bottom = Bound(Decimal(0))
        if high is not None and high.value < 0:
            bottom = Bound(-high.value, high.exclusive)
        found, ok = _nonnegative(bottom, top)
        exact = exact and ok
        if found:
            parts.append(f'"-" ({found})')
    return (" | ".join(parts) or None), exact


def _nonnegative(low: Bound, high: Bound | None) -> tuple[str | None, bool]:
    """Non-negative numbers x, low <= x <= high (with the bounds' exclusivity)."""
    low_int, low_frac = _split(low.value)
    lo_op = "gt" if low.exclusive else "ge"
    above = f'("." {_FREE_FRACTION})?'
    if high is None:
        rest = f"({natural_range(low_int + 1, None)}) {above}"
        return _join(_with_fraction(low_int, low_frac, lo_op), rest), True
    high_int, high_frac = _split(high.value)
    hi_op = "lt" if high.exclusive else "le"
    if low.value > high.value or (low.value == high.value and (low.exclusive or high.exclusive)):
        return None, True
    if low_int == high_int:
        if low.value == high.value:
            return f'"{low_int}"' + (
                f' ("." {fraction(low_frac, "le")})?' if low_frac else ""
            ), True
        if not low_frac and lo_op == "ge":  # low is the integer part itself: the fraction
            return _with_fraction(high_int, high_frac, hi_op), True  # only meets the top
        return f'"{low_int}" {above}', False  # both bounds inside one integer: not exact
    middle = None
    if low_int + 1 <= high_int - 1:
        middle = f"({natural_range(low_int + 1, high_int - 1)}) {above}"
    found = _join(
        _with_fraction(low_int, low_frac, lo_op), middle, _with_fraction(high_int, high_frac, hi_op)
    )
    return found, True


def _join(*alternatives: str | None) -> str | None:
    return " | ".join(a for a in alternatives if a) or None


def _split(value: Decimal) -> tuple[int, str]:
    whole = _floor(value)
    text = format(value - whole, "f")
    digits = text.split(".")[1].rstrip("0") if "." in text else ""
    return whole, digits


def _with_fraction(whole: int, digits: str, op: str) -> str | None:
    """``whole`` and an optional fraction f with (whole + 0.f) ``op`` (whole + 0.digits)."""
    whole_ok = op in ("ge", "le") if not digits else op in ("le", "lt")
    frac = fraction(digits, op)
    if frac is None:
        return f'"{whole}"' if whole_ok else None
    return f'"{whole}" ("." ({frac}))' + ("?" if whole_ok else "")


def multiple_of(k: int, digits: int = UNBOUNDED_DIGITS + 1) -> dict[str, str]:
    """GBNF rules for the integers divisible by ``k`` (2 <= k <= MAX_MODULUS) of up to
    ``digits`` digits: ``mod{k}``, and ``mod{k}-{s}-{n}`` for "n digits read so far, which
    are s modulo k" (a remainder automaton, layered by length so that it ends, and without
    the states from which no multiple can be reached in the digits left)."""
    if 100 % k == 0:
        return {f"mod{k}": _decimal_multiples(k, digits)}
    alive: dict[int, set[int]] = {digits: {0}}
    for depth in range(digits - 1, 0, -1):
        alive[depth] = {0} | {
            s for s in range(k) if any((s * 10 + d) % k in alive[depth + 1] for d in range(10))
        }
    rules = {f"mod{k}": f'"0" | "-"? ({_moves(k, 0, 1, 0, alive, digits)})'}
    for depth in range(1, digits):
        for state in sorted(alive[depth]):
            moves = _moves(k, state, 0, depth, alive, digits)
            if moves:
                rules[f"mod{k}-{state}-{depth}"] = f"({moves})?" if state == 0 else moves
    return rules


def modulus_enforced(k: object) -> bool:
    """Whether ``multiple_of`` takes ``k``."""
    if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= MAX_MODULUS:
        return False
    return 100 % k == 0 or k <= MAX_AUTOMATON


def _decimal_multiples(k: int, digits: int) -> str:
    """Multiples of a divisor of 100: only the last one or two digits matter."""
    width = 1 if 10 % k == 0 else 2
    short = [f'"{m}"' for m in range(k, 10**width, k)]
    endings = " | ".join(f'"{m:0{width}d}"' for m in range(0, 10**width, k))
    longer = f"[1-9] [0-9]{{0,{digits - width - 1}}} ({endings})"
    return f'"0" | "-"? ({" | ".join([*short, longer])})'


def _moves(
    k: int, state: int, lowest: int, depth: int, alive: dict[int, set[int]], digits: int
) -> str:
    """Alternatives for the next digit after ``depth`` digits that are ``state`` mod k."""
    targets: dict[int, list[int]] = {}
    for digit in range(lowest, 10):
        target = (state * 10 + digit) % k
        if depth + 1 <= digits and target in alive[depth + 1]:
            targets.setdefault(target, []).append(digit)
    found = []
    for target, ds in sorted(targets.items()):
        last = depth + 1 == digits or (target == 0 and not _continues(k, depth + 1, alive, digits))
        found.append(
            _digit_class(ds) if last else f"{_digit_class(ds)} mod{k}-{target}-{depth + 1}"
        )
    return " | ".join(found)


def _continues(k: int, depth: int, alive: dict[int, set[int]], digits: int) -> bool:
    """Whether state 0 after ``depth`` digits may take more digits."""
    return depth < digits and any(d % k in alive[depth + 1] for d in range(10))


def _digit_class(digits: list[int]) -> str:
    if len(digits) == 1:
        return f'"{digits[0]}"'
    return "[" + "".join(str(d) for d in digits) + "]"
