"""The incremental detokenizer never emits half a UTF-8 character."""

from __future__ import annotations

import pytest

from app.engine.detokenizer import Detokenizer, detokenize

REPLACEMENT = "\ufffd"


def split_bytes(text: str, sizes: list[int]) -> list[bytes]:
    """Cut the UTF-8 bytes of ``text`` into pieces of the given sizes (the rest at the end)."""
    data = text.encode("utf-8")
    pieces, pos = [], 0
    for size in sizes:
        pieces.append(data[pos : pos + size])
        pos += size
    pieces.append(data[pos:])
    return pieces


def stream(pieces: list[bytes]) -> list[str]:
    detok = Detokenizer()
    return [detok.push(piece) for piece in pieces] + [detok.flush()]


def test_ascii_passes_through_piece_by_piece() -> None:
    assert stream([b"Hel", b"lo", b" world"]) == ["Hel", "lo", " world", ""]


def test_emoji_split_over_four_tokens_is_emitted_once_complete() -> None:
    deltas = stream([b"a", *[bytes([b]) for b in "👋".encode()], b"b"])
    assert deltas == ["a", "", "", "", "👋", "b", ""]


def test_cjk_split_across_tokens_never_shows_replacement_char() -> None:
    text = "你好\uff0c世界"  # with a full-width comma
    for cut in range(1, len(text.encode())):
        deltas = stream(split_bytes(text, [cut, 2, 1]))
        assert "".join(deltas) == text
        assert all(REPLACEMENT not in d for d in deltas)


def test_every_byte_split_of_mixed_text_round_trips() -> None:
    text = "é😀 日本語 ok 🇫🇷"
    pieces = [bytes([b]) for b in text.encode()]
    deltas = stream(pieces)
    assert "".join(deltas) == text
    assert REPLACEMENT not in "".join(deltas)


def test_pending_bytes_counts_the_held_back_prefix() -> None:
    detok = Detokenizer()
    assert detok.push("😀".encode()[:3]) == ""
    assert detok.pending_bytes == 3
    assert detok.push("😀".encode()[3:]) == "😀"
    assert detok.pending_bytes == 0


def test_character_cut_off_by_the_end_of_the_stream_is_dropped_not_replaced() -> None:
    detok = Detokenizer()
    assert detok.push(b"ok" + "😀".encode()[:2]) == "ok"
    assert detok.flush() == ""
    assert detokenize([b"a", "世".encode()[:2]]) == "a"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\xffb", f"a{REPLACEMENT}b"),  # 0xFF is never valid UTF-8
        (b"\x80x", f"{REPLACEMENT}x"),  # a continuation byte with no lead byte
        (b"\xe4\xbdx", f"{REPLACEMENT}x"),  # a lead byte cut short by ASCII
    ],
)
def test_truly_invalid_bytes_become_replacement_chars(data: bytes, expected: str) -> None:
    assert detokenize([bytes([b]) for b in data]) == expected


def test_invalid_byte_does_not_swallow_following_valid_text() -> None:
    detok = Detokenizer()
    assert detok.push(b"\xff") == REPLACEMENT
    assert detok.push("é".encode()[:1]) == ""
    assert detok.push("é".encode()[1:]) == "é"


def test_flush_resets_for_reuse() -> None:
    detok = Detokenizer()
    detok.push(b"\xe4")
    detok.flush()
    assert detok.push("世".encode()) == "世"
