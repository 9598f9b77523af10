"""The LoRA adapters of an engine: their scales, each request's adapter set, and turns.

A request names adapters by id, with a scale or without one (then the adapter's current
scale, which ``POST /lora-adapters`` changes). ``AdapterScales.resolve`` turns that into the
request's ``AdapterSet``: sorted by id, zero scales dropped (llama.cpp ignores them too), so
two requests that run the same way have the same set and batch together.

llama.cpp applies adapters per context, so one decode runs one set. ``AdapterTurns`` picks the
set of each scheduler step: while sequences of several sets are live, the sets take turns of
``LORA_TURN_STEPS`` steps each, in a fixed order, so no set starves and requests on the same
set still batch together (llama-server instead batches the first generating slot's set and
makes the others wait). A turn is longer than one step because changing the set makes
llama.cpp re-reserve its compute graph on the next decode: for the default model on a 2-core
host that took a median of 6 ms (20 ms with the host loaded ~8), a third to a half of a small
decode step there; a turn of 4 steps spreads it to under 2 ms a step, and keeps a stream's
wait bounded ((live sets - 1) x 4 steps). End to end on that busy host, turns of 1, 4 and 8
did not separate beyond noise (``bench/lora_bench.py --turns``). One context per set would
avoid re-reserving, but multiplies the KV cache by the number of sets and splits the slots
between contexts.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace

from app.engine.types import AdapterSet, LoraAdapter, LoraScale
from app.errors import InvalidRequest

MAX_LORA_SCALE = 100.0  # larger scales only make noise; refuse them as a typo
LORA_TURN_STEPS = 4
"""Steps one adapter set decodes before the next live set's turn."""


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


class AdapterTurns:
    """Which adapter set each scheduler step decodes (engine thread only)."""

    def __init__(self, turn_steps: int = LORA_TURN_STEPS) -> None:
        self._turn_steps = turn_steps
        self._turn: AdapterSet = ()
        self._steps = 0  # steps of the current turn so far

    def pick(self, live: Iterable[AdapterSet]) -> AdapterSet:
        """This step's set among the sets of the live sequences (the base when none)."""
        sets = sorted(set(live))
        if len(sets) <= 1:
            self._turn, self._steps = (sets[0] if sets else ()), 0
            return self._turn
        if self._turn not in sets or self._steps >= self._turn_steps:
            later = [s for s in sets if s > self._turn]
            self._turn, self._steps = (later[0] if later else sets[0]), 0
        self._steps += 1
        return self._turn
