"""GBNF for the string ``format`` values a grammar can enforce (inside the quotes).

Each is a subset of what the format allows, chosen so that ``jsonschema``'s format checker
accepts every string the grammar does (dates have real month lengths, February stops at 28
so that no leap-year arithmetic is needed; IPv4 octets have no leading zeros).
"""

from __future__ import annotations

_TWO = "[0-9] [0-9]"
_DAY_31 = '("0" [1-9] | [12] [0-9] | "3" [01])'
_DAY_30 = '("0" [1-9] | [12] [0-9] | "30")'
_DAY_28 = '("0" [1-9] | "1" [0-9] | "2" [0-8])'
_DATE = (
    f'[0-9] [0-9] [0-9] [0-9] "-" (("0" [13578] | "1" [02]) "-" {_DAY_31}'
    f' | ("0" [469] | "11") "-" {_DAY_30} | "02-" {_DAY_28})'
)
_OFFSET = '("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])'
_TIME = f'([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{{1,6}})? {_OFFSET}'
_N = "[0-9]{1,6}"
_DURATION_TIME = f'({_N} "H" ({_N} "M")? ({_N} "S")? | {_N} "M" ({_N} "S")? | {_N} "S")'
_DURATION = (
    f'"P" ({_N} "W"'
    f' | ({_N} "Y" ({_N} "M")? ({_N} "D")? | {_N} "M" ({_N} "D")? | {_N} "D")'
    f' ("T" {_DURATION_TIME})?'
    f' | "T" {_DURATION_TIME})'
)
_LABEL = "[a-zA-Z0-9] ([a-zA-Z0-9-]{0,20} [a-zA-Z0-9])?"
_HOSTNAME = f'{_LABEL} ("." {_LABEL}){{0,4}}'
# Short on purpose: a small model fills every character an address may have (one token per
# digit), so the lengths are kept to what real addresses use.
_ATOM = "[a-zA-Z0-9_%+-]{1,12}"  # dots only between atoms (email-validator's rule)
_SHORT_LABEL = "[a-zA-Z0-9] ([a-zA-Z0-9-]{0,14} [a-zA-Z0-9])?"
_EMAIL = (
    f'{_ATOM} ("." {_ATOM}){{0,2}} "@" {_SHORT_LABEL} ("." {_SHORT_LABEL}){{0,2}}'
    ' "." [a-zA-Z]{2,6}'
)
_OCTET = '("25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9]? [0-9])'
_H16 = "[0-9a-f]{1,4}"
_UUID = ' "-" '.join(f"[0-9a-f]{{{n}}}" for n in (8, 4, 4, 4, 12))


def _ipv6() -> str:
    full = f'{_H16} (":" {_H16}){{7}}'
    compressed = [f'"::" ({_H16} (":" {_H16}){{0,6}})?']
    for left in range(1, 8):
        head = f'{_H16} (":" {_H16}){{{left - 1}}}' if left > 1 else _H16
        room = 6 - left
        tail = f' ({_H16} (":" {_H16}){{0,{room}}})?' if room >= 0 else ""
        compressed.append(f'{head} "::"{tail}')
    return " | ".join([full, *compressed])


FORMATS: dict[str, str] = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f'{_DATE} "T" {_TIME}',
    "duration": _DURATION,
    "email": _EMAIL,
    "hostname": _HOSTNAME,
    "ipv4": f'{_OCTET} ("." {_OCTET}){{3}}',
    "ipv6": _ipv6(),
    "uuid": _UUID,
}
"""Format name -> GBNF for the text between the quotes."""
