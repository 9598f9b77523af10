"""Incremental, UTF-8-safe detokenization of token byte pieces.

A token's piece is raw bytes and may end in the middle of a multibyte UTF-8 character
(byte-level BPE splits emoji and CJK characters over several tokens). Decoding each piece
on its own would emit U+FFFD for every split character, so the bytes of an incomplete
trailing character are held back until the token that completes it arrives. Only bytes
that can never become valid UTF-8 turn into U+FFFD. A character left incomplete when the
stream ends (generation cut by max_tokens in the middle of an emoji) is dropped: it was
never produced, and showing U+FFFD for it would be the very glitch this module prevents.
"""

from __future__ import annotations

import codecs
import logging

logger = logging.getLogger(__name__)

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class Detokenizer:
    """Turns a stream of token byte pieces into text deltas, one piece at a time.

    ``push`` returns the text that is complete so far (possibly ""), holding back the bytes
    of a character that is not complete yet; ``flush`` ends the stream, dropping the bytes
    of a character that did not complete.
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
        """End of stream: drop the bytes of an incomplete last character; ready for reuse.

        Returns "" (the decoder only ever holds back the valid start of a character, so
        nothing complete is left); the return value keeps the push/flush shape symmetric.
        """
        dropped = self.pending_bytes
        if dropped:
            logger.debug("dropping %d bytes of an incomplete UTF-8 character", dropped)
        self._decoder.reset()
        return ""

    @property
    def pending_bytes(self) -> int:
        """How many bytes are held back waiting for the rest of a character."""
        buffered, _ = self._decoder.getstate()
        return len(buffered)


def detokenize(pieces: list[bytes]) -> str:
    """Decode a whole list of pieces at once (the same result as pushing them one by one)."""
    detok = Detokenizer()
    return "".join(detok.push(piece) for piece in pieces) + detok.flush()
