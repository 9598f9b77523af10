"""Pure conversions of the interop routes: Ollama options, TGI sampling and token streams."""

from __future__ import annotations

from collections.abc import AsyncIterator

from app.engine.types import FinishReason, TokenEvent, Usage
from app.schemas.ollama import OllamaOptions
from app.schemas.tgi import TgiGenerateRequest, TgiParameters
from app.serving.generation import Finished
from app.serving.llama.tokenize import token_piece
from app.serving.ollama.chat import sampling_from_options
from app.serving.policy import Limits
from app.serving.tgi.generate import TgiLast, plan_tgi, tgi_sampling, tgi_tokens
from tests.support.fake_engine import fake_model_info

LIMITS = Limits(max_tokens_limit=512, default_max_tokens=None)
INFO = fake_model_info()


def test_ollama_num_predict_minus_one_means_no_cap() -> None:
    for value in (-1, -2):
        options = OllamaOptions.model_validate({"num_predict": value})
        assert sampling_from_options(options, Limits(), INFO).max_tokens is None
        assert sampling_from_options(options, LIMITS, INFO).max_tokens == 512  # server cap
    options = OllamaOptions.model_validate({"num_predict": 7, "stop": ["", "x"]})
    sampling = sampling_from_options(options, LIMITS, INFO)
    assert (sampling.max_tokens, sampling.stop) == (7, ("x",))


def test_ollama_num_predict_minus_one_overrides_the_default_cap() -> None:
    limits = Limits(default_max_tokens=99)
    options = OllamaOptions.model_validate({"num_predict": -1})
    assert sampling_from_options(options, limits, INFO).max_tokens is None
    assert sampling_from_options(OllamaOptions(), limits, INFO).max_tokens == 99


def test_ollama_defaults_when_no_options() -> None:
    limits = Limits(max_tokens_limit=512, default_max_tokens=99)
    sampling = sampling_from_options(None, limits, INFO)
    assert sampling.max_tokens == 99
    assert sampling.temperature == 0.8


def test_tgi_greedy_unless_sampling_is_asked() -> None:
    assert tgi_sampling(TgiParameters(), LIMITS, INFO).temperature == 0.0
    sampled = tgi_sampling(TgiParameters(do_sample=True), LIMITS, INFO)
    assert (sampled.temperature, sampled.top_k, sampled.top_p, sampled.min_p) == (1.0, 0, 1.0, 0)
    warm = tgi_sampling(TgiParameters(temperature=0.5, repetition_penalty=1.3), LIMITS, INFO)
    assert (warm.temperature, warm.repeat_penalty) == (0.5, 1.3)


def test_token_piece_is_text_or_bytes() -> None:
    assert token_piece(1, "é".encode()).piece == "é"
    assert token_piece(2, b"\xf0\x9f").piece == [0xF0, 0x9F]


async def _events(events: list[TokenEvent]) -> AsyncIterator[TokenEvent]:
    for event in events:
        yield event


async def test_tgi_tokens_hold_the_last_and_merge_flushed_text() -> None:
    usage = Usage(prompt_tokens=3, cached_prompt_tokens=0, completion_tokens=2)
    events = [
        TokenEvent("r", "Hi", 10),
        TokenEvent("r", "", 11),  # held-back bytes...
        TokenEvent(
            "r", "🦙", finish_reason=FinishReason.STOP, usage=usage
        ),  # ...flushed at the end
    ]
    finished: list[Finished] = []
    items = [item async for item in tgi_tokens(_events(events), finished.append)]
    first, last = items
    assert first.model_dump() == {"id": 10, "text": "Hi", "logprob": None, "special": False}
    assert isinstance(last, TgiLast)
    assert last.token is not None
    assert (last.token.id, last.token.text) == (11, "🦙")
    assert finished == [last.finished]
    assert last.finished.reason == "stop"


def test_tgi_takes_the_nulls_its_own_python_client_sends() -> None:
    body = TgiGenerateRequest.model_validate(
        {
            "inputs": "hi",
            "parameters": {
                "best_of": None,
                "decoder_input_details": False,
                "details": True,
                "do_sample": False,
                "max_new_tokens": 5,
                "stop": None,
                "temperature": None,
                "watermark": False,
                "grammar": None,
                "truncate": None,
            },
        }
    )
    plan = plan_tgi(body, INFO, LIMITS, "r1")
    assert plan.details
    assert plan.request.sampling.temperature == 0.0
    assert plan.request.sampling.stop == ()
