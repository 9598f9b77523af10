"""The one settings tree: flags > CRIA_* environment variables > config file > defaults.

Every field has a default and a description (the description is the ``--help`` text).
Nothing here reads the environment at import time: ``Settings()`` reads it when called.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.engine.router import name_key
from app.engine.types import EngineConfig, GpuLayers, LoraAdapter

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS_DIR = REPO_ROOT / "models"  # in a checkout (editable install)
DEFAULT_MODEL = "smollm2"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


# The config file for the Settings() being built (set by load_settings; None: no file).
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("cria_config_file", default=None)


class ConfigFileError(ValueError):
    """The config file is missing, is not TOML, or names a setting that does not exist."""


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML file of settings: top-level keys are field names (``ctx_size`` or ``ctx-size``)."""
    try:
        with Path(path).open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigFileError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"config file {path} is not valid TOML: {exc}") from exc
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise ConfigFileError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(Settings.model_fields)}"
        )
    return values


class ConfigFileSource(PydanticBaseSettingsSource):
    """Settings from the TOML config file, below the environment in precedence."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.values = read_config_file(path) if path is not None else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


def default_models_dir() -> Path:
    """``models/`` in a checkout; ``~/.cache/cria/models`` for a non-editable install."""
    if (REPO_ROOT / "pyproject.toml").is_file():
        return DEFAULT_MODELS_DIR
    return Path.home() / ".cache" / "cria" / "models"


def parse_lora(spec: str, base_dir: Path | None = None) -> tuple[str, str, float]:
    """``NAME=PATH[:SCALE]`` -> (name, path, scale); a relative PATH is under ``base_dir``."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not name or not rest.strip():
        raise ValueError(f"a LoRA adapter is NAME=PATH[:SCALE] (got {spec!r})")
    path, scale = rest.strip(), 1.0
    head, colon, tail = path.rpartition(":")
    if colon and head:
        try:
            scale = float(tail)
        except ValueError:
            pass  # a ':' that is part of the path
        else:
            path = head
    if not math.isfinite(scale):
        raise ValueError(f"the scale of LoRA adapter {name!r} must be a finite number")
    resolved = Path(path).expanduser()
    if base_dir is not None and not resolved.is_absolute() and not resolved.exists():
        resolved = base_dir / resolved
    return name, str(resolved), scale


# --- per-model presets (``[presets.NAME]`` tables of the config file) ---------------------
# A preset's values override the server-wide settings for that model only; what it leaves
# out comes from them. Keys are matched like request names (any case, with or without .gguf):
# a library id, a file name, a built-in name or the --model reference. See the README.


def parse_gpu_layers(value: str) -> GpuLayers:
    """``n_gpu_layers`` text (a number, ``all``, ``auto``; -1 means all) as the engine takes it."""
    value = value.strip().lower()
    if value == "auto":
        return "auto"
    if value == "all" or (value.lstrip("-").isdigit() and int(value) == -1):
        return "all"
    if value.isdigit():
        return int(value)
    raise ValueError("n_gpu_layers must be a number, 'all' or 'auto'")


class ModelPreset(BaseModel):
    """One model's settings (``[presets.NAME]`` in the config file); None: the server's."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        alias_generator=lambda name: name.replace("_", "-"),
    )

    alias: str | None = Field(None, min_length=1)
    ctx_size: int | None = Field(None, ge=64)
    parallel: int | None = Field(None, ge=1, le=64)
    n_gpu_layers: str | None = None
    chat_template_file: Path | None = None
    system_prompt: str | None = None
    embeddings: bool | None = None
    pinned: bool = False

    @field_validator("n_gpu_layers", mode="before")
    @classmethod
    def _gpu_layers(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            parse_gpu_layers(value)
        return value

    @field_validator("chat_template_file")
    @classmethod
    def _template_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"chat template file {value} does not exist")
        return value

    def apply(self, config: EngineConfig) -> EngineConfig:
        """``config`` with this preset's values in place of the server-wide ones."""
        changes: dict[str, Any] = {}
        if self.alias:
            changes["model_alias"] = self.alias
        if self.ctx_size is not None:
            changes["n_ctx_slot"] = self.ctx_size
        if self.parallel is not None:
            changes["n_slots"] = self.parallel
        if self.n_gpu_layers is not None:
            changes["n_gpu_layers"] = parse_gpu_layers(self.n_gpu_layers)
        if self.chat_template_file is not None:
            changes["chat_template"] = self.chat_template_file.read_text(encoding="utf-8")
        if self.system_prompt is not None:
            changes["system_prompt"] = self.system_prompt
        if self.embeddings is not None:
            changes["embeddings"] = self.embeddings
        return replace(config, **changes)


def presets_value(value: object) -> object:
    """Presets from a flag or ``CRIA_PRESETS``: a JSON object (the config file gives a table)."""
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ValueError(f"presets must be a JSON object of tables: {exc}") from exc
    return value


def find_preset(presets: dict[str, ModelPreset], names: set[str]) -> tuple[str, ModelPreset] | None:
    """The preset whose key is one of ``names`` (compared as request names are)."""
    keys = {name_key(name) for name in names}
    for key, preset in presets.items():
        if name_key(key) in keys:
            return key, preset
    return None


def _split_list(value: object) -> object:
    """Accept ``a,b`` from the environment as well as a real list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """cria-server settings."""

    model_config = SettingsConfigDict(
        env_prefix="CRIA_", extra="forbid", validate_default=True, populate_by_name=True
    )

    # --- model -------------------------------------------------------------------------
    model: str = Field(
        DEFAULT_MODEL,
        description="Model to serve: a .gguf path, a name in the models folder, "
        "hf://owner/repo/file.gguf, or the built-in 'smollm2'.",
    )
    model_alias: str | None = Field(
        None, description="Model id shown to clients (default: the file name without .gguf)."
    )
    lora: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="LoRA adapter served as a model of its own on the base model, as "
        "NAME=PATH[:SCALE] (a GGUF from llama.cpp's convert_lora_to_gguf.py; SCALE default 1); "
        "repeat for several. Requests naming NAME (or llama-server's 'lora' list) use it.",
    )
    models_dir: Path = Field(
        default_factory=default_models_dir,
        description="Folder where models are looked up and downloaded.",
    )
    # --- server ------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="API key clients must send (Bearer or X-Api-Key); repeat for several. "
        "Empty: no authentication.",
    )
    cors_origin: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "http://localhost",
            "http://127.0.0.1",
            "http://localhost:3000",
            "http://127.0.0.1:3000",
            "http://localhost:8000",
            "http://127.0.0.1:8000",
        ],
        description="Origin allowed by CORS; repeat for several ('*' allows any). Cross-origin "
        "POSTs from other origins are refused (403), with or without a preflight.",
    )
    allowed_host: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host name clients may use besides localhost, 127.0.0.1, [::1] and the "
        "bound address (DNS-rebinding guard); repeat for several, '*.example.com' for "
        "subdomains, '*' turns the check off.",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted.")
    max_header_bytes: int = Field(
        65_536,
        ge=1024,
        description="Largest request line plus headers accepted (431 and the connection "
        "closed beyond it).",
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection has to send a complete request line and headers "
        "(from opening, or from its previous request); then it is closed.",
    )
    body_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a request body may stall between two reads before the "
        "connection is closed.",
    )
    max_connections: int = Field(
        512,
        ge=1,
        description="Open connections (and running requests) at most; requests beyond it get "
        "503 (uvicorn's limit_concurrency).",
    )
    max_tokens_limit: int | None = Field(
        None,
        ge=1,
        description="Most tokens one reply may generate; a larger max_tokens is clamped to it "
        "(the reply ends with finish_reason 'length'). Default: what the slot context holds.",
    )
    default_max_tokens: int | None = Field(
        None,
        ge=1,
        description="max_tokens when an OpenAI request sets none (default: until the slot is "
        "full).",
    )
    cria_max_tokens: int = Field(
        256,
        ge=1,
        description='Reply cap for CRIA\'s {"prompt"} contract, which cannot send one '
        "(CRIA's original server capped at 256).",
    )
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT,
        description="System prompt for CRIA's {\"prompt\"} contract ('' for none). OpenAI chat "
        "requests are sent as they are.",
    )
    strict_model_names: bool = Field(
        False,
        description="Answer 404 for a request's model that names no model of the library "
        "(id, alias, file name or --model reference; default: the --model model serves it).",
    )
    strict_schemas: bool = Field(
        False,
        description="Refuse (400) a JSON Schema with constraints the grammar cannot enforce "
        "while generating (uniqueItems, not, if/then/else, a large multipleOf...). Default: "
        "accept it and report in the OpenAI chat reply's choices[].schema_check whether the "
        "finished reply validates.",
    )
    json_max_items: int = Field(
        0,
        ge=0,
        le=2000,
        description="maxItems given to every array of a response JSON Schema that sets none "
        "(bounds runaway lists from small models); 0: off.",
    )
    json_max_string: int = Field(
        0,
        ge=0,
        le=2000,
        description="maxLength given to every plain string of a response JSON Schema that "
        "sets none (no pattern, format or enum); 0: off.",
    )
    keepalive_s: float = Field(
        10.0, gt=0, description="Seconds between SSE keep-alive comments while a stream waits."
    )
    shutdown_timeout: float = Field(
        10.0,
        ge=0,
        description="Seconds running requests may take to finish after SIGTERM/SIGINT; then "
        "they end with a 'server shutting down' error event.",
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    # --- engine ------------------------------------------------------------------------
    max_loaded_models: int = Field(
        2,
        ge=1,
        le=64,
        description="Models loaded at once (the --model model counts); the least recently "
        "used idle one is unloaded to make room for another.",
    )
    models_memory: int = Field(
        0,
        ge=0,
        description="MiB the loaded models may take together (weights + KV, estimated from "
        "GGUF metadata); 0: the RAM available at start less 1 GiB.",
    )
    idle_unload: float = Field(
        0.0,
        ge=0,
        description="Unload a model (other than --model's) after this many idle seconds "
        "(0: never by time).",
    )
    models_vram: int = Field(
        0,
        ge=0,
        description="MiB of GPU memory the loaded models may take together (their offloaded "
        "layers' share of weights + KV); 0: the GPUs' free memory at start less 1 GiB "
        "(no check without a GPU).",
    )
    presets: Annotated[dict[str, ModelPreset], NoDecode] = Field(
        default_factory=dict,
        description="Per-model settings: a [presets.NAME] table per model in the config file "
        "(NAME: a library id, file name or built-in name; keys alias, ctx-size, parallel, "
        "n-gpu-layers, chat-template-file, system-prompt, embeddings, pinned), or a JSON object "
        "of them as flag or variable. They override the settings above for that model.",
    )
    parallel: int = Field(4, ge=1, le=64, description="Slots: sequences generated in parallel.")
    ctx_size: int = Field(2048, ge=64, description="Context tokens per slot.")
    n_gpu_layers: str = Field(
        "auto",
        description="Layers to offload to the GPU: a number, 'all', or 'auto' (as many as fit).",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description=(
            "CPU threads (default: the physical cores this process may use, fewer while "
            "other processes keep cores busy; a number fixes them)."
        ),
    )
    batch_size: int = Field(
        512, ge=16, description="Max tokens per decode step (prompt chunks plus decode tokens)."
    )
    kv_cache_type: Literal["f16", "f32", "bf16", "q8_0", "q4_0"] = Field(
        "f16", description="KV cache data type."
    )
    max_queue: int = Field(
        64, ge=0, description="Requests allowed to wait for a slot; more get 429."
    )
    engine_process: Literal["on", "off"] = Field(
        "on",
        description="Run the engine in its own worker process ('on'): a crash in native code "
        "ends only that model's requests and the process restarts; 'off' runs it in the "
        "server process (one process, as before).",
    )
    prompt_cache: bool = Field(
        True, description="Reuse a slot's KV cache for a prompt prefix shared with a past request."
    )
    cache_ram: int = Field(
        1024,
        ge=0,
        description="MiB of host RAM for KV states of conversations evicted from their slots "
        "(restored when they come back; 0 turns it off).",
    )
    prefill_budget: int = Field(
        0,
        ge=0,
        description="Prompt tokens per decode step while other streams are generating "
        "(0: paced so a prompt chunk costs about one decode step, keeping the streams' "
        "token rate steady while a long prompt arrives; N: at most N).",
    )
    speculative: Literal["off", "ngram"] = Field(
        "off",
        description="Speculative decoding: 'ngram' drafts tokens by looking up the text so far "
        "(the prompt and the reply) and verifies them in the shared batch, so replies that "
        "repeat their prompt (edits, rewrites, quotes) take fewer decode steps; the output "
        "is the same. Drafts are sent only while they pay for their cost, measured per step.",
    )
    draft_max: int = Field(
        8, ge=0, le=64, description="Most draft tokens a sequence verifies per decode step."
    )
    draft_min_accept: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Least estimated chance of acceptance for a draft token to be verified "
        "(from the sequence's recent acceptance).",
    )
    context_overflow: Literal["truncate", "error"] = Field(
        "truncate",
        description="A chat longer than the context: drop its oldest turns ('truncate') or "
        "answer 400 ('error').",
    )
    docs: bool = Field(
        False,
        description="Serve the interactive API docs at /docs and /redoc. Off by default: "
        "those pages load Swagger UI and ReDoc from a CDN, on the origin where the chat page "
        "keeps the API key. /openapi.json is always served.",
    )
    parse_special_in_content: bool = Field(
        False,
        description="Parse special-token text (such as <|im_end|>) inside chat message "
        "contents, tool definitions and history tool calls as control tokens (the old "
        "behaviour); off: only the chat template's own markers are control tokens, so a user "
        "cannot forge a system turn.",
    )
    seed: int | None = Field(None, description="Default sampling seed (default: random).")
    embeddings: bool = Field(
        False,
        description="Serve POST /v1/embeddings from a second, pooled context on the model.",
    )
    embeddings_pooling: Literal["auto", "mean", "last", "cls"] = Field(
        "auto",
        description="How /v1/embeddings pools token vectors into one per input "
        "('auto': the model's own pooling, else the last token).",
    )

    chat_template_file: Path | None = Field(
        None,
        description="A Jinja chat template file used instead of the model's own "
        "(tokenizer.chat_template).",
    )
    tool_call_format: Literal[
        "auto",
        "hermes",
        "llama3",
        "mistral",
        "mistral-args",
        "qwen3-coder",
        "deepseek",
        "deepseek-v3.1",
        "harmony",
        "generic",
    ] = Field(
        "auto",
        description="How the model writes tool calls ('auto': detected from the chat "
        "template; 'generic': tools described in the system message, <tool_call> blocks).",
    )
    reasoning_format: Literal["auto", "none"] = Field(
        "auto",
        description="Reasoning (<think>...</think>, [THINK]...[/THINK]) goes to "
        "reasoning_content ('auto') or stays in the content ('none').",
    )

    reasoning_budget: int | None = Field(
        None,
        ge=0,
        description="Tokens a reply may think before the server closes its thinking block "
        "(0: ask the template not to think; default: no limit).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: init values (CLI flags) > CRIA_* environment > config file > defaults."""
        return (init_settings, env_settings, ConfigFileSource(settings_cls, _CONFIG_FILE.get()))

    @field_validator("api_key", "cors_origin", "allowed_host", "lora", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("presets", mode="before")
    @classmethod
    def _presets(cls, value: object) -> object:
        return presets_value(value)

    @field_validator("cors_origin")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        # Browsers send an origin as scheme://host[:port], lower case, no path or slash.
        return [origin.strip().rstrip("/").lower() for origin in value]

    @field_validator("chat_template_file")
    @classmethod
    def _template_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"chat template file {value} does not exist")
        return value

    @field_validator("lora")
    @classmethod
    def _lora(cls, value: list[str]) -> list[str]:
        for spec in value:
            parse_lora(spec)
        return value

    @field_validator("n_gpu_layers")
    @classmethod
    def _gpu_layers(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "all") or (value.lstrip("-").isdigit() and int(value) >= -1):
            return value
        raise ValueError("n_gpu_layers must be a number, 'all' or 'auto'")

    def gpu_layers(self) -> GpuLayers:
        """``n_gpu_layers`` as the engine takes it (-1 means all)."""
        return parse_gpu_layers(self.n_gpu_layers)

    def engine_config(self, model_path: Path) -> EngineConfig:
        """The engine's view of these settings, for a resolved model file."""
        return EngineConfig(
            model_path=str(model_path),
            model_alias=self.model_alias,
            n_slots=self.parallel,
            n_ctx_slot=self.ctx_size,
            n_threads=self.threads,
            n_batch=self.batch_size,
            kv_cache_type=self.kv_cache_type,
            n_gpu_layers=self.gpu_layers(),
            max_queue=self.max_queue,
            prompt_cache=self.prompt_cache,
            cache_ram_mb=self.cache_ram,
            prefill_budget=self.prefill_budget,
            speculative=self.speculative,
            draft_max=self.draft_max,
            draft_min_accept=self.draft_min_accept,
            seed=self.seed,
            embeddings=self.embeddings,
            embeddings_pooling=self.embeddings_pooling,
            chat_template=self.chat_template(),
            lora=tuple(
                LoraAdapter(i, *parse_lora(spec, self.models_dir))
                for i, spec in enumerate(self.lora)
            ),
        )

    def chat_template(self) -> str | None:
        """The text of ``chat_template_file`` (None: the model's own template)."""
        if self.chat_template_file is None:
            return None
        return self.chat_template_file.read_text(encoding="utf-8")


@contextmanager
def _config_file(path: Path | None) -> Iterator[None]:
    token = _CONFIG_FILE.set(path)
    try:
        yield
    finally:
        _CONFIG_FILE.reset(token)


def load_settings(
    flags: Mapping[str, Any] | None = None, config_file: Path | None = None
) -> Settings:
    """Build the settings: ``flags`` > ``CRIA_*`` environment > ``config_file`` > defaults.

    ``flags`` holds only the values given on the command line (field name -> value).
    Raises ``ConfigFileError`` or pydantic's ``ValidationError`` with the bad field named.
    """
    with _config_file(Path(config_file) if config_file is not None else None):
        return Settings(**dict(flags or {}))


SECRET_FIELDS = frozenset({"api_key"})


@dataclass(frozen=True)
class FieldDoc:
    """One setting as --help and the README table show it."""

    name: str
    flag: str
    env: str
    default: str
    description: str


def _show_default(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, Path):
        return (
            f"<repo>/{value.relative_to(REPO_ROOT)}"
            if value.is_relative_to(REPO_ROOT)
            else str(value)
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value) if value != "" else "''"


def field_docs() -> list[FieldDoc]:
    """Every setting with its flag, environment variable, default and description."""
    docs = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        docs.append(
            FieldDoc(
                name=name,
                flag="--" + name.replace("_", "-"),
                env="CRIA_" + name.upper(),
                default=_show_default(default),
                description=field.description or "",
            )
        )
    return docs


def settings_table_markdown() -> str:
    """The README's settings table, generated from the fields."""
    rows = ["| Flag | Environment | Default | Description |", "|---|---|---|---|"]
    for doc in field_docs():
        cells = [f"`{doc.flag}`", f"`{doc.env}`", f"`{doc.default}`", doc.description]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
