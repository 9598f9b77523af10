"""llama-server's LoRA wire types: the per-request ``lora`` list and ``/lora-adapters``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_LORA_ENTRIES = 64


class LoraEntry(BaseModel):
    """One adapter a request or ``POST /lora-adapters`` names: its id and scale."""

    model_config = ConfigDict(strict=True, extra="ignore")

    id: int = Field(ge=0, description="The adapter's id (its index in GET /lora-adapters).")
    scale: float | None = Field(
        None,
        description="How strongly to apply it (0 turns it off). Per request, left out: the "
        "adapter's current scale.",
    )


class LoraAdapterInfo(BaseModel):
    """One loaded adapter, as ``GET /lora-adapters`` lists it (llama-server's shape)."""

    id: int
    path: str
    scale: float
    name: str = Field(description="The model id that selects this adapter (cria-server).")
    base_model: str = Field(description="The model it is applied to.")


class LoraScaleResult(BaseModel):
    """``POST /lora-adapters``' answer."""

    success: bool = True
