"""The LoRA adapters of an engine: their current scales and each request's adapter set.

A request names adapters by id, with a scale or without one (then the adapter's current
scale, which ``POST /lora-adapters`` changes). ``resolve`` turns that into the request's
``AdapterSet``: sorted by id, zero scales dropped (llama.cpp ignores them too), so two
requests that run the same way have the same set and batch together.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace

from app.engine.types import AdapterSet, LoraAdapter, LoraScale
from app.errors import InvalidRequest

MAX_LORA_SCALE = 100.0  # larger scales only make noise; refuse them as a typo


def check_scale(scale: float, param: str) -> None:
    """Raise InvalidRequest unless ``scale`` is a finite number within +-MAX_LORA_SCALE."""
    if not math.isfinite(scale) or abs(scale) > MAX_LORA_SCALE:
        raise InvalidRequest(
            f"A LoRA scale must be a finite number between -{MAX_LORA_SCALE:g} and "
            f"{MAX_LORA_SCALE:g} (got {scale}).",
            param=param,
        )


class AdapterScales:
    """The adapters loaded on the model and their current scales (thread-safe)."""

    def __init__(self, adapters: Iterable[LoraAdapter]) -> None:
        self._adapters = list(adapters)
        self._lock = threading.Lock()

    def adapters(self) -> tuple[LoraAdapter, ...]:
        """Each adapter with its current scale, by id."""
        with self._lock:
            return tuple(self._adapters)

    def set_scales(self, scales: Mapping[int, float]) -> None:
        """Set the scale of each adapter in ``scales`` (all or none: checked first)."""
        for adapter_id, scale in scales.items():
            self._check_id(adapter_id, "lora")
            check_scale(scale, "lora")
        with self._lock:
            for adapter_id, scale in scales.items():
                self._adapters[adapter_id] = replace(self._adapters[adapter_id], scale=scale)

    def resolve(self, lora: Iterable[LoraScale]) -> AdapterSet:
        """The adapter set a request runs under (see the module docstring)."""
        chosen: dict[int, float] = {}
        for entry in lora:
            self._check_id(entry.id, "lora")
            if entry.scale is None:
                with self._lock:
                    scale = self._adapters[entry.id].scale
            else:
                check_scale(entry.scale, "lora")
                scale = entry.scale
            chosen[entry.id] = float(scale)
        return tuple(sorted((i, s) for i, s in chosen.items() if s != 0.0))

    def _check_id(self, adapter_id: int, param: str) -> None:
        if not 0 <= adapter_id < len(self._adapters):
            known = len(self._adapters)
            what = f"ids 0..{known - 1}" if known else "no adapters"
            raise InvalidRequest(
                f"There is no LoRA adapter with id {adapter_id} (this model has {what}).",
                param=param,
            )
