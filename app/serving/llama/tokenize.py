"""``/tokenize`` and ``/detokenize``: wire requests -> engine vocabulary calls -> wire answers."""

from __future__ import annotations

from app.engine.protocol import Engine
from app.engine.types import GenerationRequest
from app.limits import check_prompt_bytes
from app.schemas.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenPiece,
)
from app.serving.chat_template import conversation, render_conversation
from app.serving.policy import Limits, served_model_name


def token_piece(token: int, raw: bytes) -> TokenPiece:
    """A piece as llama-server shows it: text if ``raw`` is whole UTF-8, else the bytes."""
    try:
        return TokenPiece(id=token, piece=raw.decode("utf-8"))
    except UnicodeDecodeError:
        return TokenPiece(id=token, piece=list(raw))


def tokenize(engine: Engine, body: TokenizeRequest, limits: Limits) -> TokenizeResponse:
    """Tokenize ``content``, or the prompt a chat of ``messages`` would give the model."""
    info = engine.model_info()
    served_model_name(body.model, info, limits)
    if body.messages is not None:
        # Counted as a generation would tokenize it (message contents as text, by default).
        prompt, add_bos = render_conversation(
            conversation(body.messages), info, content_as_text=not limits.parse_special_in_content
        )
        request = engine.prepare(GenerationRequest("tokenize", prompt, add_special=add_bos))
        tokens = list(request.prompt_tokens or ())
    else:
        # Special-token text parsed, as llama-server's /tokenize does.
        content = body.content or ""
        check_prompt_bytes(
            "content", len(content.encode("utf-8", "surrogatepass")), info.n_ctx_slot
        )
        tokens = engine.tokenize(content, add_special=body.add_special)
    listed: list[int] | list[TokenPiece] = tokens
    if body.with_pieces:
        pieces = engine.token_pieces(tokens)
        listed = [token_piece(t, raw) for t, raw in zip(tokens, pieces, strict=True)]
    return TokenizeResponse(tokens=listed, count=len(tokens), max_model_len=info.n_ctx_slot)


def detokenize(engine: Engine, body: DetokenizeRequest, limits: Limits) -> DetokenizeResponse:
    """The text of ``tokens`` (ids outside the vocabulary: 400)."""
    served_model_name(body.model, engine.model_info(), limits)
    return DetokenizeResponse(content=engine.detokenize(body.tokens))
