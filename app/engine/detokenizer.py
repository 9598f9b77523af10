"""Incremental, UTF-8-safe detokenization of token byte pieces.

A token's piece is raw bytes and may end in the middle of a multibyte UTF-8 character
(byte-level BPE splits emoji and CJK characters over several tokens). Decoding each piece
on its own would emit U+FFFD for every split character, so the bytes of an incomplete
trailing character are held back until the token that completes it arrives. Only bytes
that can never become valid UTF-8 turn into U+FFFD.
"""

from __future__ import annotations

import codecs
import logging

logger = logging.getLogger(__name__)

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class Detokenizer:
    """Turns a stream of token byte pieces into text deltas, one piece at a time.

    ``push`` returns the text that is complete so far (possibly ""), holding back the bytes
    of a character that is not complete yet; ``flush`` returns what is left at the end
    (an incomplete character there can never complete, so it becomes U+FFFD).
    """

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        # The stdlib incremental decoder keeps an incomplete trailing sequence in its
        # buffer and replaces only sequences that are invalid whatever bytes follow.
        self._decoder = _utf8_decoder(errors="replace")

    def push(self, piece: bytes) -> str:
        """Add one token's bytes; return the newly completed text."""
        return self._decoder.decode(piece)

    def flush(self) -> str:
        """End of stream: return the held-back bytes (U+FFFD for an incomplete character)."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text

    @property
    def pending_bytes(self) -> int:
        """How many bytes are held back waiting for the rest of a character."""
        buffered, _ = self._decoder.getstate()
        return len(buffered)


def detokenize(pieces: list[bytes]) -> str:
    """Decode a whole list of pieces at once (the same result as pushing them one by one)."""
    detok = Detokenizer()
    return "".join(detok.push(piece) for piece in pieces) + detok.flush()
