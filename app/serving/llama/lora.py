"""llama-server's ``/lora-adapters``: the loaded LoRA adapters and their scales.

The list has llama-server's shape (``id``, ``path``, ``scale``) plus the adapter's model id
(``name``) and its base model. The scale is what a request naming the adapter gets; unlike
llama-server, a request on the base model runs without adapters whatever their scales
(an adapter is a model of its own here, as in vLLM), and ``POST`` changes only the scales it
lists (llama-server sets the others to 0).
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.engine.protocol import Engine
from app.errors import InvalidRequest
from app.schemas.lora import MAX_LORA_ENTRIES, LoraAdapterInfo, LoraEntry, LoraScaleResult

_ENTRIES = TypeAdapter(list[LoraEntry])


async def list_adapters(engine: Engine) -> list[LoraAdapterInfo]:
    """``GET /lora-adapters``."""
    base = engine.model_info().name
    return [
        LoraAdapterInfo(id=a.id, path=a.path, scale=a.scale, name=a.name, base_model=base)
        for a in await engine.lora_adapters()
    ]


async def set_scales(engine: Engine, body: Any) -> LoraScaleResult:
    """``POST /lora-adapters``: ``[{"id": 0, "scale": 0.5}, ...]`` sets those scales."""
    engine.model_info()  # EngineNotReady while loading, as every model route
    if not isinstance(body, list) or len(body) > MAX_LORA_ENTRIES:
        raise InvalidRequest(
            f'Send a JSON array of at most {MAX_LORA_ENTRIES} {{"id", "scale"}} objects.'
        )
    try:
        entries = _ENTRIES.validate_python(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"lora[{where}]: {first['msg']}", param="lora") from exc
    scales: dict[int, float] = {}
    for entry in entries:
        if entry.scale is None:
            raise InvalidRequest(f"Adapter {entry.id}: 'scale' is required.", param="lora")
        scales[entry.id] = entry.scale
    await engine.lora_adapters(scales)
    return LoraScaleResult()
