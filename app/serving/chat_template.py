"""Render a conversation into a prompt with the model's Jinja chat template.

Templates come from GGUF metadata, i.e. from a downloaded file: they run in Jinja's
immutable sandbox, so a hostile template cannot reach Python internals. Templates call
``raise_exception(msg)`` to reject a conversation (e.g. roles that do not alternate);
that becomes an ``InvalidRequest`` (HTTP 400).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.engine.types import ChatPrompt, ModelInfo, PromptPart
from app.errors import InvalidRequest
from app.limits import MAX_MESSAGES, check_count, check_prompt_bytes
from app.schemas.chat import ChatMessage

logger = logging.getLogger(__name__)

# Used when the GGUF file carries no template: ChatML, which SmolLM2, Qwen and others use.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Gemma's turns (no system role: a system message is put before the first user turn).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}"
    "{% else %}{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\\n' + ns.system + message['content'] + '<end_of_turn>\\n' }}"
    "{% set ns.system = '' %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
# Llama 3's header turns.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
# Mistral instruct: [INST] turns, a system message joined to the first user turn.
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ '[INST] ' + ns.system + message['content'] + ' [/INST]' }}"
    "{% set ns.system = '' %}{% endif %}{% endfor %}"
)
# Names the templates take besides chat_template_kwargs (a request cannot override them).
RESERVED = frozenset({"messages", "tools", "bos_token", "eos_token", "add_generation_prompt"})


class TemplateRaised(Exception):
    """A template called ``raise_exception``."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRaised(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    # Jinja's own tojson escapes <, > and & for HTML; chat templates want plain JSON.
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def fallback_template(info: ModelInfo) -> tuple[str, str, str]:
    """(name, source, why) of the template for a model file that carries none."""
    meta = info.metadata
    arch, pre = info.architecture.lower(), meta.get("tokenizer.ggml.pre", "")
    if arch.startswith("gemma"):
        return "gemma", GEMMA_TEMPLATE, f"the architecture is {arch}"
    if pre == "llama-bpe" or info.eos_token in ("<|eot_id|>", "<|end_of_text|>"):
        return "llama3", LLAMA3_TEMPLATE, "the vocabulary is Llama 3's"
    if arch.startswith("mistral") or pre == "tekken":
        return "mistral", MISTRAL_TEMPLATE, f"the architecture/tokenizer is {arch}/{pre}"
    return "chatml", CHATML_TEMPLATE, "no family-specific template applies"


@lru_cache(maxsize=8)
def _log_fallback(path: str, name: str, why: str) -> None:
    logger.info("%s has no chat template: using the %s template (%s)", path, name, why)


def template_source(info: ModelInfo) -> str:
    """The model's chat template, or the family fallback for a file without one (logged)."""
    if info.chat_template:
        return info.chat_template
    name, source, why = fallback_template(info)
    _log_fallback(info.path, name, why)
    return source


def _template(source: str | None) -> jinja2.Template:
    if source:
        try:
            return _compile(source)
        except jinja2.TemplateSyntaxError as exc:
            logger.warning("the model's chat template does not compile (%s); using ChatML", exc)
    return _compile(CHATML_TEMPLATE)


def render_chat(
    template_source: str | None,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """The prompt text for ``messages`` (dicts with ``role`` and ``content``).

    ``tools`` (OpenAI tool definitions) go to templates that render them (Jinja ``tools``).
    ``variables`` (``chat_template_kwargs``, ``reasoning_effort``) are more template
    variables. Raises ``InvalidRequest`` when the template rejects the conversation.
    """
    template = _template(template_source)
    # enable_thinking defaults on, as llama-server passes it (templates that test it).
    extra: dict[str, Any] = {"enable_thinking": True}
    extra.update((k, v) for k, v in (variables or {}).items() if k not in RESERVED)
    if tools:
        extra["tools"] = [dict(tool) for tool in tools]
    try:
        return template.render(
            messages=[dict(message) for message in messages],
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            **extra,
        )
    except TemplateRaised as exc:
        raise InvalidRequest(
            f"The chat template rejected the conversation: {exc}", param="messages"
        ) from exc
    except jinja2.TemplateError as exc:
        raise InvalidRequest(
            f"The chat template failed on this conversation: {exc}", param="messages"
        ) from exc


def with_system_prompt(
    messages: Sequence[Mapping[str, Any]], system_prompt: str
) -> list[Mapping[str, Any]]:
    """``messages`` with ``system_prompt`` first when none of them is a system message."""
    if not system_prompt or any(message["role"] == "system" for message in messages):
        return list(messages)
    return [{"role": "system", "content": system_prompt}, *messages]


def needs_bos(prompt: str, bos_token: str) -> bool:
    """Whether the engine should add BOS: not when the template already wrote it."""
    return not (bos_token and prompt.startswith(bos_token))


def render_conversation(
    messages: Sequence[Mapping[str, Any]],
    info: ModelInfo,
    system_prompt: str = "",
    tools: list[dict[str, Any]] | None = None,
    variables: Mapping[str, Any] | None = None,
    *,
    content_as_text: bool = True,
) -> tuple[ChatPrompt | str, bool]:
    """The prompt for a conversation and whether the engine should add BOS.

    With ``content_as_text`` (the default) the prompt is a ``ChatPrompt``: message contents
    are tokenized as plain text, so special-token text typed by a user (``<|im_end|>``)
    cannot forge a turn; without it (``--parse-special-in-content``) the prompt is one string
    whose special-token text is parsed everywhere, as before.

    ``system_prompt`` goes first when the conversation has none (CRIA's contract only: an
    OpenAI request is rendered as sent; some templates refuse a system turn). A model's
    preset system prompt (``info.system_prompt``) takes its place for every chat family:
    every chat of every route is rendered here.
    """
    check_chat_cost(messages, info.n_ctx_slot)
    conversation = with_system_prompt(messages, info.system_prompt or system_prompt)
    kwargs: dict[str, Any] = {
        "bos_token": info.bos_token,
        "eos_token": info.eos_token,
        "tools": tools,
        "variables": variables,
    }
    source = template_source(info)
    prompt = render_chat(source, conversation, **kwargs)
    add_bos = needs_bos(prompt, info.bos_token)
    if not content_as_text:
        return prompt, add_bos
    return content_spans(source, conversation, prompt, kwargs), add_bos


def content_spans(
    source: str | None,
    messages: Sequence[Mapping[str, Any]],
    prompt: str,
    kwargs: dict[str, Any],
) -> ChatPrompt:
    """``prompt`` split into scaffolding and the request's own text.

    The request's text is the messages' contents and every other string a request puts in
    the template's reach: tool definitions (names, descriptions, parameter schemas, their
    keys too), assistant ``tool_calls`` (ids, names, arguments), ``tool_call_id``. The
    template is rendered a second time with each string content replaced by a marker that
    no text contains (a random nonce between private-use characters), and each of those
    other strings between an opening and a closing marker (so that ``tojson`` escapes what
    is between them as before); the markers' places are the text spans. Only when the marked
    render, markers removed, is exactly ``prompt`` are the spans trusted. A template that
    inspects the tools or calls' strings beyond plain identifiers (``type == "string"`` is
    left alone: see ``_marked``) gets the contents as text and the rest as scaffolding; one
    that transforms or inspects the contents (trims them, splits on ``</think>``) gets the
    whole prompt as scaffolding, as before; both with a warning.
    """
    nonce = secrets.token_hex(8)
    spans = _spans(source, messages, prompt, kwargs, nonce, strings=True)
    if spans is not None:
        return spans
    spans = _spans(source, messages, prompt, kwargs, nonce, strings=False)
    if spans is not None:
        logger.warning(
            "the chat template inspects tool definitions or calls; special-token text in "
            "them is parsed as control tokens for this request"
        )
        return spans
    logger.warning(
        "the chat template transforms message contents; special-token text in them is "
        "parsed as control tokens for this request"
    )
    return ChatPrompt((PromptPart(prompt, special=True),))


# A string made of these only cannot hold a control token's text (every vocabulary's
# control tokens have a bracket, bar or other mark: <|im_end|>, [INST], <start_of_turn>),
# and is left as it is: templates compare such strings (type == "object", name == "python").
_PLAIN = re.compile(r"[A-Za-z0-9_. -]*")
_OPEN, _CLOSE = "<", ">"


def _marked(value: Any, opening: str, closing: str) -> Any:
    """``value`` with each string that is not plain between ``opening`` and ``closing``
    (mapping keys too; the same string is always marked the same way, so templates that
    look a name up in ``required`` still find it)."""
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) else f"{opening}{value}{closing}"
    if isinstance(value, Mapping):
        return {
            _marked(k, opening, closing): _marked(v, opening, closing) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_marked(item, opening, closing) for item in value]
    return value


def _spans(
    source: str | None,
    messages: Sequence[Mapping[str, Any]],
    prompt: str,
    kwargs: dict[str, Any],
    nonce: str,
    *,
    strings: bool,
) -> ChatPrompt | None:
    """The spans of one marked render (``strings``: tools' and calls' strings marked too),
    or None when the template did not keep the markers' text as it was."""
    opening, closing = f"\ue000{nonce}:{_OPEN}\ue001", f"\ue000{nonce}:{_CLOSE}\ue001"
    marked: list[Mapping[str, Any]] = []
    contents: dict[str, str] = {}
    for i, message in enumerate(messages):
        turn = dict(message)
        if strings:
            turn = {
                k: v if k in ("role", "content") else _marked(v, opening, closing)
                for k, v in turn.items()
            }
        content = message.get("content")
        if isinstance(content, str) and content:
            contents[f"{i}"] = content
            turn["content"] = f"\ue000{nonce}:{i}\ue001"
        marked.append(turn)
    render_kwargs = dict(kwargs)
    if strings and render_kwargs.get("tools"):
        render_kwargs["tools"] = _marked(render_kwargs["tools"], opening, closing)
    try:
        rendered = render_chat(source, marked, **render_kwargs)
    except InvalidRequest:  # the template refused the markers (it checks a name's shape)
        return None
    pieces = re.split(f"\ue000{nonce}:([0-9]+|{_OPEN}|{_CLOSE})\ue001", rendered)
    result = _parts(pieces, contents)
    if result is None or result.text != prompt:
        return None
    return result


def _parts(pieces: list[str], contents: Mapping[str, str]) -> ChatPrompt | None:
    """The spans of a marked render split at its markers (None: a marker out of place, or
    a content missing or repeated)."""
    parts: list[PromptPart] = []
    seen: list[str] = []
    inside = False
    for odd, piece in _alternating(pieces):
        if not odd:
            _append(parts, PromptPart(piece, special=not inside))
        elif piece in (_OPEN, _CLOSE):
            if inside == (piece == _OPEN):  # nested or unbalanced: a string was cut
                return None
            inside = piece == _OPEN
        elif inside or piece not in contents:
            return None
        else:
            seen.append(piece)
            _append(parts, PromptPart(contents[piece], special=False))
    if inside or sorted(seen) != sorted(contents):
        return None
    return ChatPrompt(tuple(parts))


def _append(parts: list[PromptPart], part: PromptPart) -> None:
    """Add ``part``, joined to the last one when both are text or both scaffolding."""
    if not part.text:
        return
    if parts and parts[-1].special == part.special:
        parts[-1] = PromptPart(parts[-1].text + part.text, special=part.special)
    else:
        parts.append(part)


def _alternating(pieces: list[str]) -> list[tuple[bool, str]]:
    """``re.split`` with one group: even items are text between markers, odd ones keys."""
    return [(i % 2 == 1, piece) for i, piece in enumerate(pieces)]


def template_variables(
    kwargs: Mapping[str, Any] | None, reasoning_effort: str | None = None
) -> dict[str, Any]:
    """Extra template variables of a request: ``chat_template_kwargs``, ``reasoning_effort``."""
    variables = dict(kwargs or {})
    if reasoning_effort is not None:
        variables.setdefault("reasoning_effort", reasoning_effort)
    return variables


def check_chat_cost(messages: Sequence[Mapping[str, Any]], n_ctx: int) -> None:
    """Refuse a chat over the budget before it is rendered or counted: more messages than
    ``max_messages``, or more content than the slot context could hold many times over."""
    check_count(MAX_MESSAGES, "messages", len(messages))
    size = sum(len(str(m.get("content") or "").encode("utf-8", "surrogatepass")) for m in messages)
    check_prompt_bytes("messages", size, n_ctx)


def conversation(chat_messages: list[ChatMessage]) -> list[Mapping[str, str]]:
    """The messages as the chat template takes them (``developer`` becomes ``system``)."""
    messages: list[Mapping[str, str]] = []
    for message in chat_messages:
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": message.text()})
    if messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        raise InvalidRequest("The last message is an empty assistant message.", param="messages")
    return messages
