"""Other ecosystems' clients against a real uvicorn process serving the real default model:
the ``ollama`` package, LangChain's ``ChatOllama``, ``huggingface_hub.InferenceClient``
(TGI routes and its OpenAI-style chat), the openai SDK's embeddings, and tokenize/detokenize.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from huggingface_hub import InferenceClient
from langchain_ollama import ChatOllama, OllamaEmbeddings

from tests.support.server import ServerProcess, real_model_env, running_server

MODEL = "SmolLM2-135M-Instruct.Q4_1"
QUESTION = "What is the capital of France?"
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}  # SmolLM2 needs one
GREEDY = {"temperature": 0, "num_predict": 24, "seed": 7}


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[ServerProcess]:
    env = real_model_env(model_path, embeddings="true", parallel="2")
    with running_server(env) as process:
        yield process


@pytest.fixture
def ollama_client(server: ServerProcess) -> ollama.Client:
    return ollama.Client(host=server.base_url, timeout=120)


def test_ollama_list_and_show(ollama_client: ollama.Client) -> None:
    (model,) = ollama_client.list().models
    assert model.model == f"{MODEL}:latest"
    assert model.details is not None
    assert model.details.quantization_level == "Q4_1"
    shown = ollama_client.show(f"{MODEL}:latest")
    assert shown.details is not None
    assert shown.details.family == "llama"
    assert "<|im_start|>" in (shown.template or "")
    assert shown.capabilities is not None
    assert "embedding" in shown.capabilities
    (running,) = ollama_client.ps().models
    assert running.model == f"{MODEL}:latest"


def test_ollama_chat_streamed_equals_non_streamed(ollama_client: ollama.Client) -> None:
    messages = [SYSTEM, {"role": "user", "content": QUESTION}]
    whole = ollama_client.chat(model=MODEL, messages=messages, options=GREEDY)
    assert whole.done
    assert whole.done_reason in ("stop", "length")
    assert "Paris" in whole.message.content
    assert whole.eval_count is not None
    assert 0 < whole.eval_count <= 24
    assert whole.prompt_eval_count is not None
    assert whole.prompt_eval_count > 0
    parts = list(ollama_client.chat(model=MODEL, messages=messages, options=GREEDY, stream=True))
    assert len(parts) > 2
    assert all(not part.done for part in parts[:-1])
    assert parts[-1].done
    assert parts[-1].eval_count == whole.eval_count
    assert "".join(part.message.content for part in parts) == whole.message.content


def test_ollama_generate_with_system_and_raw(ollama_client: ollama.Client) -> None:
    answer = ollama_client.generate(
        model=MODEL, prompt=QUESTION, system="You answer in one word.", options=GREEDY
    )
    assert answer.done
    assert answer.response.strip()
    raw = ollama_client.generate(
        model=MODEL,
        prompt="The capital of France is",
        raw=True,
        options={"temperature": 0, "num_predict": 4},
    )
    assert raw.done_reason == "length"
    assert "Paris" in raw.response


def test_ollama_errors_in_ollamas_shape(ollama_client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as formatted:
        ollama_client.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            format={"type": "object", "if": {"required": ["a"]}},  # not enforceable
        )
    assert formatted.value.status_code == 400
    assert "format" in formatted.value.error
    assert "`if`" in formatted.value.error


CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
}


def test_ollama_format_schema_gives_valid_json(ollama_client: ollama.Client) -> None:
    messages = [SYSTEM, {"role": "user", "content": f"{QUESTION} Answer in JSON."}]
    answer = ollama_client.chat(
        model=MODEL, messages=messages, format=CITY_SCHEMA, options={"temperature": 0}
    )
    assert set(json.loads(answer.message.content)) == {"city"}
    mode = ollama_client.generate(
        model=MODEL, prompt="Give me a JSON object.", format="json", options={"num_predict": 64}
    )
    if mode.done_reason == "stop":  # cut short by num_predict, the JSON may be unfinished
        assert isinstance(json.loads(mode.response), dict)
    assert mode.response.lstrip().startswith("{")


def test_inference_client_grammar(server: ServerProcess) -> None:
    client = InferenceClient(server.base_url, timeout=120)
    text = client.text_generation(
        "The capital of France as JSON:",
        max_new_tokens=40,
        grammar={"type": "json", "value": CITY_SCHEMA},
    )
    assert set(json.loads(text)) == {"city"}


def test_langchain_chat_ollama(server: ServerProcess) -> None:
    chat = ChatOllama(
        model=MODEL,
        base_url=server.base_url,
        temperature=0,
        num_predict=24,
        num_ctx=4096,  # ignored with a log line: the slot size is set at start-up
        validate_model_on_init=True,
    )
    conversation = [("system", SYSTEM["content"]), ("human", QUESTION)]
    reply = chat.invoke(conversation)
    assert "Paris" in str(reply.content)
    streamed = "".join(str(chunk.content) for chunk in chat.stream(conversation))
    assert streamed == reply.content
    assert "ignoring Ollama options" in server.log()


def test_inference_client_text_generation(server: ServerProcess) -> None:
    client = InferenceClient(server.base_url, timeout=120)
    prompt = "The capital of France is"
    text = client.text_generation(prompt, max_new_tokens=8)
    assert "Paris" in text
    details = client.text_generation(prompt, max_new_tokens=8, details=True)
    assert details.generated_text == text
    assert details.details is not None
    assert details.details.generated_tokens == len(details.details.tokens) == 8
    assert details.details.finish_reason == "length"
    assert "".join(token.text for token in details.details.tokens) == text
    pieces = list(client.text_generation(prompt, max_new_tokens=8, stream=True))
    assert "".join(pieces) == text
    events = list(client.text_generation(prompt, max_new_tokens=8, stream=True, details=True))
    assert [e.generated_text is not None for e in events] == [False] * 7 + [True]
    assert events[-1].generated_text == text
    assert events[-1].details is not None
    assert events[-1].details.finish_reason == "length"


def test_inference_client_chat_completion(server: ServerProcess) -> None:
    client = InferenceClient(base_url=f"{server.base_url}/v1", timeout=120)
    messages = [SYSTEM, {"role": "user", "content": QUESTION}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # No model named: the client sends the placeholder "dummy", which this one-model
        # server serves with its model (the reply names the real one).
        answer = client.chat_completion(messages, max_tokens=24, temperature=0)
        streamed = client.chat_completion(messages, max_tokens=24, temperature=0, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed)
    assert answer.model == MODEL
    assert "Paris" in (answer.choices[0].message.content or "")
    assert text == answer.choices[0].message.content


def test_inference_client_errors_are_typed(server: ServerProcess) -> None:
    from huggingface_hub.errors import ValidationError

    client = InferenceClient(server.base_url, timeout=120)
    with pytest.raises(ValidationError):
        client.text_generation("hi", max_new_tokens=4, top_n_tokens=3)


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_openai_embeddings_rank_paraphrases_closer(server: ServerProcess) -> None:
    sentences = [
        "The cat sits on the mat.",
        "A cat is sitting on a rug.",
        "Stock markets fell sharply today.",
        "How do I bake bread at home?",
        "What is a good recipe for homemade bread?",
    ]
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused") as sdk:
        result = sdk.embeddings.create(model=MODEL, input=sentences)
        single = sdk.embeddings.create(model=MODEL, input=sentences[0], encoding_format="base64")
    vectors = [item.embedding for item in result.data]
    assert [item.index for item in result.data] == list(range(5))
    assert all(math.isclose(_cosine(v, v), 1.0, rel_tol=1e-4) for v in vectors)
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])
    assert _cosine(vectors[3], vectors[4]) > _cosine(vectors[3], vectors[2])
    assert _cosine(vectors[3], vectors[4]) > _cosine(vectors[1], vectors[4])
    assert result.usage.prompt_tokens == result.usage.total_tokens > 5
    # Asked for base64 explicitly, the SDK hands the string over: little-endian float32.
    encoded = single.data[0].embedding
    assert isinstance(encoded, str)
    alone = list(struct.unpack(f"<{len(vectors[0])}f", base64.b64decode(encoded)))
    assert alone == pytest.approx(vectors[0], abs=1e-3)  # batched or alone: the same vector


def test_ollama_and_langchain_embeddings(
    server: ServerProcess, ollama_client: ollama.Client
) -> None:
    texts = ["The cat sits on the mat.", "A cat is sitting on a rug."]
    embedded = ollama_client.embed(model=MODEL, input=texts)
    vectors = [list(v) for v in embedded.embeddings]
    assert len(vectors) == 2
    assert _cosine(vectors[0], vectors[0]) == pytest.approx(1.0, rel=1e-4)
    langchain = OllamaEmbeddings(model=MODEL, base_url=server.base_url)
    assert langchain.embed_query(texts[0]) == pytest.approx(vectors[0], abs=1e-4)
    assert langchain.embed_documents(texts)[1] == pytest.approx(vectors[1], abs=1e-4)


def test_embeddings_too_long_is_a_400(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/embeddings", json={"input": "word " * 5000}, timeout=60
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("text", ["llamas 🦙🦙 and 👩‍👩‍👧", "日本語のテキスト、中文字符。한국어"])
def test_tokenize_detokenize_round_trip(server: ServerProcess, text: str) -> None:
    tokenized = httpx.post(
        f"{server.base_url}/tokenize", json={"content": text, "with_pieces": True}
    ).json()
    ids = [item["id"] for item in tokenized["tokens"]]
    assert tokenized["count"] == len(ids) > 0
    raw = b"".join(
        item["piece"].encode() if isinstance(item["piece"], str) else bytes(item["piece"])
        for item in tokenized["tokens"]
    )
    assert raw.decode("utf-8") == text
    assert any(isinstance(item["piece"], list) for item in tokenized["tokens"])
    plain = httpx.post(f"{server.base_url}/tokenize", json={"content": text}).json()
    assert plain["tokens"] == ids
    back = httpx.post(f"{server.base_url}/detokenize", json={"tokens": ids}).json()
    assert back == {"content": text}


def test_tokenize_counts_a_chat_like_the_chat_route(server: ServerProcess) -> None:
    messages = [SYSTEM, {"role": "user", "content": QUESTION}]
    counted = httpx.post(f"{server.base_url}/tokenize", json={"messages": messages}).json()
    chat = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"messages": messages, "max_tokens": 1},
        timeout=60,
    ).json()
    assert counted["count"] == chat["usage"]["prompt_tokens"]


async def test_embeddings_run_beside_generation_without_changing_either(
    server: ServerProcess,
) -> None:
    """Two llama contexts on one model, two threads: a greedy reply and the vectors come out
    the same whether or not the other kind of work runs at the same time."""
    chat = {
        "messages": [SYSTEM, {"role": "user", "content": "Write a short poem about rivers."}],
        "max_tokens": 48,
        "temperature": 0,
    }
    texts = [f"Sentence number {i} is about rivers and the sea." for i in range(8)]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:

        async def reply() -> str:
            response = await client.post("/v1/chat/completions", json=chat)
            assert response.status_code == 200, response.text
            return str(response.json()["choices"][0]["message"]["content"])

        async def vectors() -> list[list[float]]:
            response = await client.post("/v1/embeddings", json={"input": texts})
            assert response.status_code == 200, response.text
            return [item["embedding"] for item in response.json()["data"]]

        alone_text, alone_vectors = await reply(), await vectors()
        together = await asyncio.gather(reply(), *(vectors() for _ in range(4)))
    assert together[0] == alone_text
    for batch in together[1:]:
        for got, want in zip(batch, alone_vectors, strict=True):
            assert got == pytest.approx(want, abs=1e-4)
