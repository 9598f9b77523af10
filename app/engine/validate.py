"""Request validation next to the types it validates: values the sampler chain and the
vocabulary can honour, checked when a request is submitted, before any work.

The sampler chain takes C floats and int32s: larger values would overflow (to inf, or wrap
around) in native code, so they are refused here with a clear message naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from app.engine.types import SamplingParams
from app.errors import InvalidRequest
from app.limits import check_stops

FLOAT32_MAX = 3.4028234663852886e38
INT32_MAX = 2**31 - 1


def _finite(name: str, value: float, low: float = -FLOAT32_MAX, high: float = FLOAT32_MAX) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidRequest(f"{name} must be a finite number in [{low:g}, {high:g}].", param=name)


MAX_TOP_LOGPROBS = 20


def validate_sampling(params: SamplingParams, *, n_vocab: int) -> None:
    """Raise InvalidRequest for sampling values the sampler chain cannot honour."""
    _finite("temperature", params.temperature, 0.0)
    _finite("top_p", params.top_p, 0.0, 1.0)
    _finite("min_p", params.min_p, 0.0, 1.0)
    _finite("repeat_penalty", params.repeat_penalty, 1e-6)
    _finite("presence_penalty", params.presence_penalty)
    _finite("frequency_penalty", params.frequency_penalty)
    if not 0 <= params.top_k <= INT32_MAX:
        raise InvalidRequest(f"top_k must be in [0, {INT32_MAX}] (0 disables it).", param="top_k")
    if not -1 <= params.penalty_last_n <= INT32_MAX:
        raise InvalidRequest(
            f"penalty_last_n must be in [-1, {INT32_MAX}].", param="penalty_last_n"
        )
    if params.logprobs is not None and not 0 <= params.logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(
            f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}].", param="top_logprobs"
        )
    if params.max_tokens is not None and params.max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1.", param="max_tokens")
    if any(not stop for stop in params.stop):
        raise InvalidRequest("Stop strings must not be empty.", param="stop")
    check_stops("stop", params.stop)
    for token, bias in params.logit_bias.items():
        if not 0 <= token < n_vocab:
            raise InvalidRequest(
                f"logit_bias token {token} is not in the vocabulary.", param="logit_bias"
            )
        if math.isnan(bias) or bias > FLOAT32_MAX:  # -inf bans a token; +inf is not a bias
            raise InvalidRequest("logit_bias values must be numbers or -inf.", param="logit_bias")


def check_token_ids(tokens: Sequence[int], n_vocab: int, param: str) -> None:
    """Raise InvalidRequest unless every id in ``tokens`` is in the vocabulary."""
    if any(not 0 <= t < n_vocab for t in tokens):
        raise InvalidRequest(f"Token ids must be in [0, {n_vocab}).", param=param)
